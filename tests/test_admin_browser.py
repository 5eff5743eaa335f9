"""The dashboard in a real browser: Playwright drives the system's Chromium against a
real uvicorn server on loopback, on SQLite and PostgreSQL.

Chromium comes from the distribution (``/usr/bin/chromium``; ``scripts/test`` installs
it); ``playwright install`` is never used. Outside CI the tests skip, saying why, when
it is missing; with ``CI=true`` that is a failure.

Set ``TASKFLOW_SCREENSHOTS=docs/screenshots`` to refresh the documentation's
screenshots (taken from the SQLite run).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from taskflow import TaskManager
from taskflow._store.schema import metadata
from tests.admin_support import (
    XSS,
    admin_fail,
    admin_ok,
    admin_parked,
    admin_slow,
    build,
    insert_rows,
    task_row,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("TASKFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USERS = [("admin", "pw"), ("viewer", "look", "read-only")]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
POLL = 0.5
WAIT_MS = 15_000
ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "overview",
    "runs",
    "failures",
    "queues",
    "schedules",
    "logs",
    "functions",
    "instances",
    "audit",
)


# -- task functions with readable names for the screenshots --------------------------------


def send_welcome_email(address: str) -> None:
    """Seeded history only."""


def resize_image(image_id: int, width: int = 800) -> None:
    """Seeded history only."""


def sync_crm_contacts(batch: int) -> None:
    """Seeded history only."""


def generate_invoice_pdf(invoice_id: int) -> None:
    """Seeded history only."""


def deep_failure(depth: int) -> None:
    """Fails at the bottom of ``depth`` calls: a traceback longer than a screen."""
    if depth:
        deep_failure(depth - 1)
    raise ValueError("reached the bottom of the call stack")


SEEDED = {
    send_welcome_email: (0.08, 0.02),
    resize_image: (0.6, 0.04),
    sync_crm_contacts: (4.0, 0.10),
    generate_invoice_pdf: (1.6, 0.03),
}


# -- chromium and the server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    """Chromium through Playwright, or a skip (a failure in CI) saying what is missing.

    It depends on ``site`` so that the server (and its database set-up, which runs its
    own event loops) is ready before Playwright's loop takes the main thread."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing is None and not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/test does it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need Chromium in CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Site:
    """A running dashboard."""

    url: str
    manager: TaskManager
    loop: asyncio.AbstractEventLoop
    dialect: str
    ids: dict[str, str]

    def run(self, coroutine: Any, timeout: float = 20.0) -> Any:
        """Run a coroutine on the server's event loop (where the manager lives)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def enqueue(self, func: Any, *args: Any, **kwargs: Any) -> str:
        """Enqueue a task on the server and return its id."""
        return self.run(self.manager.enqueue(func, *args, **kwargs))

    def wait_final(self, task_id: str, timeout: float = 15.0) -> str:
        """Poll until a task is final; return its status."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.run(self.manager.get_task(task_id, logs=False))
            if record is not None and record.status.is_final:
                return record.status.value
            assert time.monotonic() < deadline, f"task {task_id} not final"
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _empty_tables(url: str) -> None:
    from taskflow._store.engine import create_engine, normalize_url

    engine = create_engine(normalize_url(url))
    names = ", ".join(table.name for table in metadata.sorted_tables)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A uvicorn server (in a thread, on loopback) serving a seeded dashboard."""
    import uvicorn

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('browser') / 'tasks.db'}"
    else:
        url = request.getfixturevalue("pg_migrated")
        asyncio.run(_empty_tables(url))
    built = build(url, auth=USERS, display_func_args=True, poll_interval=POLL, title="Acme jobs")
    for func in SEEDED:
        built.manager.task()(func)
    built.manager.task(name=XSS)(admin_ok)
    built.manager.task()(deep_failure)
    port = _free_port()
    config = uvicorn.Config(
        built.app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), name="admin-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    site = Site(
        url=f"http://127.0.0.1:{port}",
        manager=built.manager,
        loop=loop,
        dialect=request.param,
        ids={},
    )
    _seed(site)
    yield site
    server.should_exit = True
    thread.join(30)
    loop.close()


def _seed(site: Site) -> None:
    """A day of history for the charts, live tasks, failures, logs and a hostile task."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows = []
    for _ in range(700):
        func = rng.choice(list(SEEDED))
        median, failure_rate = SEEDED[func]
        created = now - timedelta(minutes=rng.triangular(1, 24 * 60, 60))
        roll = rng.random()
        status = (
            "failed"
            if roll < failure_rate
            else "interrupted"
            if roll < failure_rate + 0.008
            else "success"
        )
        row = task_row(
            func_name=func.__name__,
            status=status,
            created_at=created,
            duration=median * rng.lognormvariate(0, 0.5),
            error="TimeoutError: upstream did not answer in 30 s" if status == "failed" else None,
            tags={"tenant": rng.choice(["acme", "globex", "initech"])},
        )
        row["func_path"] = f"tests.test_admin_browser:{func.__name__}"
        rows.append(row)
    hostile = task_row(func_name=XSS, status="failed", error=XSS, tags={XSS: XSS})
    rows.append(hostile)
    chatty = task_row(func_name="sync_crm_contacts", tags={"tenant": "acme"})
    chatty["func_path"] = "tests.test_admin_browser:sync_crm_contacts"
    rows.append(chatty)
    chatty_lines = [
        {
            "task_id": chatty["id"],
            "at": now - timedelta(seconds=800 - index),
            "level": "warning" if index % 4 == 0 else "info",
            "message": f"contact batch {index}",
            "extra": {"batch": index},
        }
        for index in range(800)
    ]

    async def insert() -> None:
        from taskflow._store.schema import task_logs, tasks

        async with site.manager.db.write() as conn:
            await conn.execute(tasks.insert(), rows)
            await conn.execute(
                task_logs.insert(),
                [
                    {
                        "task_id": hostile["id"],
                        "at": now,
                        "level": "error",
                        "message": XSS,
                        "extra": {},
                    }
                ],
            )
            await conn.execute(task_logs.insert(), chatty_lines)

    site.run(insert())
    site.ids["hostile"] = hostile["id"]
    site.ids["chatty"] = chatty["id"]
    site.ids["ok"] = site.enqueue(admin_ok, 7, password="hunter2")
    site.ids["failed"] = site.enqueue(admin_fail, 3)
    site.ids["xss_args"] = site.enqueue(admin_ok, XSS)
    site.ids["deep"] = site.enqueue(deep_failure, 40)
    for key in ("ok", "failed", "xss_args", "deep"):
        site.wait_final(site.ids[key])


# -- pages --------------------------------------------------------------------------------------


@pytest.fixture
def context(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (no cookies) that records script errors and CSP reports."""
    ctx = browser.new_context(viewport=DESKTOP, base_url=site.url)
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not _expected(message.text, message.location):
            problems.append(f"console {message.type}: {message.text}")

    def watch(page: Any) -> None:
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", console)
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm prompts

    ctx.on("page", watch)
    yield ctx
    ctx.close()
    assert problems == [], problems


# Dashboard paths that name no page: tests visit them for the styled 404 page.
MISSING_PAGES = ("/tasks/dashboard/no/such/page", "/tasks/dashboard/nope")


def _expected(text: str, location: dict[str, Any] | None = None) -> bool:
    """Console errors that are the point of a test: the login page's 401 answer, and
    the 404 answer of a page that does not exist."""
    url = str((location or {}).get("url", ""))
    missing = "status of 404" in text and url.endswith(MISSING_PAGES)
    return "status of 401" in text or missing


def sign_in(context: Any, username: str = "admin", password: str = "pw") -> Any:
    page = context.new_page()
    page.goto("/tasks/dashboard")
    page.wait_for_selector("#login-form")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("nav.tabs")
    return page


def shoot(page: Any, site: Site, name: str, *, full: bool = True) -> None:
    """Save a screenshot (always to the test's temp folder's sibling; to the docs when
    TASKFLOW_SCREENSHOTS names a folder)."""
    target = os.environ.get("TASKFLOW_SCREENSHOTS")
    if not target or site.dialect != "sqlite":
        return
    folder = (ROOT / target) if not os.path.isabs(target) else Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full)


def test_login_and_logout(context: Any, site: Site) -> None:
    page = context.new_page()
    page.goto("/tasks/dashboard/runs")
    page.wait_for_selector("#login-form")
    shoot(page, site, "login", full=False)
    page.fill("#username", "admin")
    page.fill("#password", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error")
    page.fill("#password", "pw")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("h1:text('Runs')")  # back where we were going
    assert page.url.endswith("/tasks/dashboard/runs")
    page.click("#logout")
    page.wait_for_selector("#login-form")
    page.goto("/tasks/dashboard")
    page.wait_for_selector("#login-form")


def fold_tracebacks(page: Any) -> None:
    """Close every attempt's traceback on a task page."""
    page.evaluate("document.querySelectorAll('details.attempt').forEach(d => { d.open = false; })")


def test_every_page_renders(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name in PAGES:
        page.goto(f"/tasks/dashboard{'' if name == 'overview' else '/' + name}")
        page.wait_for_selector(
            f"a.tab.active[href$='{'dashboard' if name == 'overview' else name}']"
        )
        assert page.locator("main.page").inner_text().strip()
        shoot(page, site, name)
    page.goto(f"/tasks/dashboard/runs/{site.ids['failed']}")
    page.wait_for_selector("#task-error")
    assert "admin_fail broke on 3" in page.inner_text("#task-error")
    assert page.locator("details.attempt").count() == 2  # retries=1: two attempts
    fold_tracebacks(page)  # a traceback would put this machine's file paths in the docs
    shoot(page, site, "task")
    page.goto(f"/tasks/dashboard/runs/{site.ids['ok']}")
    assert "••••••" in page.inner_text("#task-args")  # password redacted
    assert "hunter2" not in page.content()


def test_dark_theme_and_phone_width(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "dark"
    page.goto("/tasks/dashboard")
    page.wait_for_selector(".counts")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "dark"
    shoot(page, site, "overview-dark")
    page.goto(f"/tasks/dashboard/runs/{site.ids['failed']}")
    page.wait_for_selector("#task-error")
    fold_tracebacks(page)
    shoot(page, site, "task-dark")
    page.click("#theme-toggle")
    page.set_viewport_size(PHONE)
    for path in ("/tasks/dashboard", "/tasks/dashboard/runs", "/tasks/dashboard/schedules"):
        page.goto(path)
        page.wait_for_selector("main.page h1")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"{path} is {width}px wide on a phone"
    page.goto("/tasks/dashboard/runs")
    shoot(page, site, "runs-phone", full=False)


def test_filter_and_paginate_runs(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/runs")
    page.select_option("select[name=status]", "failed")  # submits by itself
    page.wait_for_url(re.compile(r"status=failed"))
    statuses = page.locator("#runs-table tbody .badge").all_inner_texts()
    assert statuses and set(statuses) == {"failed"}
    page.fill("input[name=q]", "upstream")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"q=upstream"))
    assert "status=failed" in page.url  # filters stay in the URL
    errors = page.locator("#runs-table td.detail").all_inner_texts()
    assert errors and all("upstream" in text for text in errors)

    page.goto("/tasks/dashboard/runs?func=resize_image")
    first = page.locator("#runs-table tbody tr td.fn a").evaluate_all(
        "links => links.map(link => link.getAttribute('href'))"
    )
    assert len(first) == 50
    page.click("a[rel=next]")
    page.wait_for_url(re.compile(r"after="))
    second = page.locator("#runs-table tbody tr td.fn a").evaluate_all(
        "links => links.map(link => link.getAttribute('href'))"
    )
    assert second and not set(first) & set(second)
    page.click("a[rel=prev]")
    page.wait_for_url(re.compile(r"before="))
    again = page.locator("#runs-table tbody tr td.fn a").evaluate_all(
        "links => links.map(link => link.getAttribute('href'))"
    )
    assert again == first


def test_retry_a_failed_task(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/failures?func=admin_fail")
    page.click(f"a[href$='/runs/{site.ids['failed']}']:visible >> nth=0")
    page.wait_for_selector("#task-error")
    page.click("button:text('Retry')")
    page.wait_for_selector(".flash.ok")
    assert "as this new task" in page.inner_text(".flash")
    assert site.ids["failed"] not in page.url
    assert "retry" in page.inner_text("#task-summary .task-sub")
    page.goto("/tasks/dashboard/audit")
    assert "retry" in page.inner_text("table.audit tbody tr:first-child")
    shoot(page, site, "audit")


def test_replay_selected_failures(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/failures?func=sync_crm_contacts")
    boxes = page.locator("input[name=task_id]")
    assert boxes.count() >= 2
    boxes.nth(0).check()
    boxes.nth(1).check()
    assert page.inner_text("#replay-selected-button") == "Replay 2 selected"
    page.click("#replay-selected-button")
    page.wait_for_selector(".flash.ok")
    assert "Replayed 2 task(s)" in page.inner_text(".flash")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_bulk_cancel_of_selected_runs(context: Any, site: Site, viewport: str) -> None:
    tag = f"bulk-{viewport}"
    rows = [task_row(status="pending", tags={"batch": tag}) for _ in range(3)]
    site.run(insert_rows(site.manager, rows))
    page = sign_in(context)
    page.set_viewport_size(VIEWPORTS[viewport])
    page.goto(f"/tasks/dashboard/runs?tag=batch={tag}")
    boxes = page.locator("input[name=task_id]")
    assert boxes.count() == 3
    boxes.nth(0).check()
    boxes.nth(1).check()
    button = page.locator("#bulk-cancel-selected")
    assert button.inner_text() == "Cancel 2 selected"
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS[viewport]["width"]
    if viewport == "desktop":
        shoot(page, site, "runs-bulk", full=False)
    button.click()
    page.wait_for_selector(".flash.ok")
    assert page.inner_text(".flash") == "Cancelled 2 tasks."
    records = [site.run(site.manager.get_task(row["id"], logs=False)) for row in rows]
    assert sorted(record.status.value for record in records) == [
        "cancelled",
        "cancelled",
        "pending",
    ]
    page.goto("/tasks/dashboard/audit")
    assert "cancel (bulk)" in page.inner_text("table.audit tbody tr:first-child")


def test_cancel_a_pending_task(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_parked)
    page = sign_in(context)
    page.goto(f"/tasks/dashboard/runs/{task_id}")
    page.wait_for_selector("#task-summary .badge:text('pending')")
    page.click("button:text('Cancel')")
    page.wait_for_selector("#task-summary .badge:text('cancelled')")
    assert "Cancelled." in page.inner_text(".flash")


def test_logs_and_status_update_live(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_slow, 30)
    page = sign_in(context)
    page.goto(f"/tasks/dashboard/runs/{task_id}")
    page.wait_for_selector("#log-lines .log-line:has-text('tick 3')", timeout=WAIT_MS)
    page.click("button:text('Cancel')")
    page.wait_for_selector("#task-summary .badge:text('cancelled')", timeout=WAIT_MS)
    page.wait_for_selector("#log-tail", state="detached", timeout=WAIT_MS)  # polling stops


def test_live_refresh_pauses(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/runs?status=pending")
    page.wait_for_selector("#runs-table.live")
    page.click("#live-toggle")
    assert page.inner_text("#live-toggle") == "Paused"
    new_id = site.enqueue(admin_parked)
    # Paused: no refresh request for several poll intervals.
    with pytest.raises(Exception, match="Timeout"):  # noqa: SIM117 - the wait is the point
        with page.expect_request(re.compile(r"/dashboard/_/runs"), timeout=POLL * 4000):
            pass
    assert page.locator(f"a[href$='/runs/{new_id}']").count() == 0
    page.click("#live-toggle")
    page.wait_for_selector(f"a[href$='/runs/{new_id}']", timeout=WAIT_MS)
    page.reload()
    assert page.inner_text("#live-toggle") == "Live"  # the choice is remembered


def test_schedule_run_now_pause_and_resume(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/schedules")
    row = "tr[data-schedule='hourly_report']"
    page.click(f"{row} button:text('Run now')")
    page.wait_for_selector(".flash.ok")
    assert "Started task" in page.inner_text(".flash")
    page.click(f"{row} button:text('Pause')")
    page.wait_for_selector(f"{row} .badge:text('paused')")
    page.click(f"{row} button:text('Resume')")
    page.wait_for_selector(f"{row} .badge:text('active')")


def test_create_and_delete_a_dynamic_schedule(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/schedules")
    form = "#schedule-form"
    page.fill(f"{form} input[name=cron]", "30 7 * * MON-FRI")
    page.fill(f"{form} input[name=timezone]", "Europe/Paris")
    page.fill(f"{form} input[name=name]", "ops morning report")
    page.fill(f"{form} textarea[name=kwargs]", '{"team": ')
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("#schedule-form-error:has-text('not valid JSON')")
    page.fill(f"{form} textarea[name=kwargs]", '{"colour": "blue"}')
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("#schedule-form-error:has-text('do not fit')")
    page.fill(f"{form} textarea[name=kwargs]", '{"team": "ops", "weeks": 2}')
    page.click(f"{form} button[type=submit]")
    row = "tr[data-schedule='ops morning report']"
    page.wait_for_selector(row)
    assert "Created schedule" in page.inner_text(".flash")
    assert "Europe/Paris" in page.inner_text(row)
    shoot(page, site, "schedules-dynamic")
    page.click(f"{row} button:text('Delete')")
    page.wait_for_selector(".flash.ok:has-text('Deleted schedule')")
    assert page.locator(row).count() == 0


def test_read_only_user_sees_no_actions(context: Any, site: Site) -> None:
    page = sign_in(context, "viewer", "look")
    page.goto(f"/tasks/dashboard/runs/{site.ids['failed']}")
    page.wait_for_selector("#task-error")
    assert page.locator("button:text('Retry')").count() == 0
    page.goto("/tasks/dashboard/schedules")
    assert page.locator("button:text('Run now')").count() == 0
    assert page.locator("#schedule-form").count() == 0


def test_hostile_data_does_not_execute(context: Any, site: Site) -> None:
    page = sign_in(context)
    for path in (
        "/tasks/dashboard/runs",
        "/tasks/dashboard/failures",
        f"/tasks/dashboard/runs/{site.ids['hostile']}",
        f"/tasks/dashboard/runs/{site.ids['xss_args']}",
        "/tasks/dashboard/logs",
        "/tasks/dashboard/functions",
    ):
        page.goto(path)
        page.wait_for_selector("main.page h1")
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert page.locator("img[src=x]").count() == 0, path
        assert "<script>window.__pwned=1</script>" in page.inner_text("main.page"), path


def test_runs_page_refreshes_its_table_only(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/runs?status=cancelled")
    page.wait_for_selector("#runs-table.live")
    page.fill("input[name=q]", "typed but not submitted")
    task_id = site.enqueue(admin_parked)
    site.run(site.manager.cancel(task_id))
    page.wait_for_selector(f"a[href$='/runs/{task_id}']", timeout=WAIT_MS)
    assert page.input_value("input[name=q]") == "typed but not submitted"


# -- the operator on call: errors, schedules, logs, links, accessibility ------------------------

VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}


def visible_in_first_screen(page: Any, selector: str) -> bool:
    """True when the element's bottom edge is within the first screen of the page."""
    box = page.locator(selector).bounding_box()
    height = page.evaluate("window.innerHeight")
    scrolled = page.evaluate("window.scrollY")
    return box is not None and box["y"] + scrolled + box["height"] <= height


def test_errors_read_top_down(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto(f"/tasks/dashboard/runs/{site.ids['deep']}")
        head = page.locator("#task-error")
        assert "ValueError" in head.locator(".err-class").inner_text(), name
        assert "reached the bottom of the call stack" in head.inner_text(), name
        assert visible_in_first_screen(page, "#task-error"), f"{name}: the error is below the fold"

        box = page.locator("details.attempt[open] pre.tb")
        whole = box.evaluate("element => element.scrollHeight <= element.clientHeight + 1")
        assert whole, f"{name}: the traceback box cuts off its end"
        last = box.inner_text().rstrip().splitlines()[-1]
        assert last == "ValueError: reached the bottom of the call stack", name
        own = page.locator("details.attempt[open] .tb-own").first
        assert not own.is_visible(), f"{name}: taskflow's frames are not folded"
        assert "deep_failure" in box.inner_text() and "_engine" not in box.inner_text(), name
        page.locator("details.attempt[open] .tb-toggle-label").click()
        assert own.is_visible() and "_engine" in own.inner_text(), name
        assert "⋯" not in box.inner_text(), name  # the fold note goes when frames show


def test_running_time_counts_up(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_slow, 30)
    page = sign_in(context)
    try:
        for name, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            page.goto(f"/tasks/dashboard/runs/{task_id}")
            page.wait_for_selector("#task-summary .badge:text('running')", timeout=WAIT_MS)
            clock = page.locator("#task-summary .elapsed")
            first = clock.inner_text()
            assert re.fullmatch(r"\d+ s", first), (name, first)
            page.wait_for_function(
                "first => document.querySelector('#task-summary .elapsed').textContent !== first",
                arg=first,
                timeout=WAIT_MS,
            )
            page.goto("/tasks/dashboard/runs?status=running")
            row = page.locator(f"#runs-table tr:has(a[href$='/runs/{task_id}'])")
            assert re.fullmatch(r"\d+ s", row.locator(".elapsed").inner_text()), name
            assert "–" not in row.locator("td.num").first.inner_text(), name
    finally:
        site.run(site.manager.cancel(task_id))


def test_schedule_run_now_links_the_new_run(context: Any, site: Site) -> None:
    page = sign_in(context)
    row = "tr[data-schedule='hourly_report']"
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto("/tasks/dashboard/schedules")
        page.click(f"{row} button:text('Run now')")
        page.wait_for_selector(".flash.ok a")
        link = page.locator(".flash.ok a").get_attribute("href")
        assert re.search(r"/tasks/dashboard/runs/[0-9a-f-]{36}$", link), (name, link)
        assert page.locator(f"{row} td.last-run a").get_attribute("href") == link, name
        page.click(f"{row} a.name")
        page.wait_for_url(re.compile(r"/runs\?tag=schedule%3Dhourly_report"))
        assert page.input_value("input[name=tag]") == "schedule=hourly_report", name
        page.wait_for_selector(f"#runs-table td.fn a[href='{link}']")


def test_schedule_form_shows_the_chosen_trigger_and_every_problem(context: Any, site: Site) -> None:
    page = sign_in(context)
    form = "#schedule-form"
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto("/tasks/dashboard/schedules")
        option = page.locator(f"{form} select[name=function] option").first.inner_text()
        assert option == "reports.admin_report(team: str, weeks: int = 1) -> str", option
        assert page.is_visible(f"{form} input[name=cron]"), name
        assert not page.is_visible(f"{form} input[name=every]"), name
        page.select_option(f"{form} select[name=trigger]", "every")
        assert page.is_visible(f"{form} input[name=every]"), name
        assert not page.is_visible(f"{form} input[name=cron]"), name
        page.fill(f"{form} input[name=every]", "often")
        page.fill(f"{form} input[name=timezone]", "Nowhere/Land")
        page.fill(f"{form} textarea[name=kwargs]", '{"colour": "blue"}')
        page.click(f"{form} button[type=submit]")
        page.wait_for_selector("#schedule-form-error li")
        problems = page.locator("#schedule-form-error li").all_inner_texts()
        assert len(problems) == 3, problems
        assert page.is_visible(f"{form} input[name=every]"), name  # the choice is kept
        assert page.locator("[aria-invalid=true]").count() == 3, name
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, f"{name}: the form is {width}px wide"


def test_a_long_log_filters_by_level_and_links_to_the_logs_page(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto(f"/tasks/dashboard/runs/{site.ids['chatty']}")
        assert page.inner_text("#log-count") == "last 500 of 800 lines", name
        page.select_option("#log-level", "warning")  # submits by itself
        page.wait_for_url(re.compile(r"level=warning"))
        assert page.inner_text("#log-count") == "200 warning lines", name
        levels = page.locator("#log-lines .log-line .log-level").all_inner_texts()
        assert len(levels) == 200 and {level.lower() for level in levels} == {"warning"}, name
        page.click("#logs-page-link")
        page.wait_for_url(re.compile(r"/logs\?task="))
        assert "level=warning" in page.url, name
        assert page.is_visible("#log-task-filter"), name
        shown = page.locator(".logs-table tbody .log-level").all_inner_texts()
        assert shown and {level.lower() for level in shown} == {"warning"}, name
        tasks = page.locator(".logs-table tbody .log-task a").evaluate_all(
            "links => links.map(link => link.getAttribute('href'))"
        )
        assert set(tasks) == {f"/tasks/dashboard/runs/{site.ids['chatty']}"}, name


def test_tags_are_links_to_runs_with_that_tag(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto(f"/tasks/dashboard/runs/{site.ids['chatty']}")
        page.click("#task-summary a.tag")
        page.wait_for_url(re.compile(r"/runs\?tag=tenant%3Dacme"))
        assert page.input_value("input[name=tag]") == "tenant=acme", name
        assert page.locator("#runs-table tbody tr td.fn a").count() > 0, name
        if name == "desktop":  # the tags column is hidden on narrow screens
            tags = page.locator("#runs-table tbody a.tag").evaluate_all(
                "links => links.map(link => link.getAttribute('href'))"
            )
            assert tags and set(tags) == {"/tasks/dashboard/runs?tag=tenant%3Dacme"}, tags


def test_an_unknown_path_shows_the_styled_404(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        response = page.goto("/tasks/dashboard/no/such/page")
        assert response is not None and response.status == 404, name
        assert page.is_visible("#not-found") and page.is_visible("nav.tabs"), name
        assert "/tasks/dashboard/no/such/page" in page.inner_text("#not-found"), name
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, name


def test_audit_details_are_readable_and_link_the_tasks(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard/failures?func=generate_invoice_pdf")
    box = page.locator("input[name=task_id]").first
    original = box.get_attribute("value")
    box.check()
    page.click("#replay-selected-button")
    page.wait_for_selector(".flash.ok")
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto("/tasks/dashboard/audit")
        entry = page.locator("table.audit tbody tr").first
        text = entry.inner_text()
        assert "replay" in text and "[" not in text and "False" not in text, text
        links = entry.locator("td.audit-detail a").evaluate_all(
            "links => links.map(link => link.getAttribute('href'))"
        )
        assert f"/tasks/dashboard/runs/{original}" in links, (name, links)
        assert len(links) == 2, (name, links)  # the original and its new task
        new = next(link for link in links if not link.endswith(original))
        page.click(f"table.audit tbody tr >> nth=0 >> a[href='{new}']")
        page.wait_for_url(re.compile(re.escape(new) + "$"))


CONTRAST_SCRIPT = """
() => {
  const parse = text => {
    const match = text.match(/rgba?\\(([^)]+)\\)/);
    if (!match) { return null; }
    const parts = match[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1};
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const luminance = c => {
    const f = v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const backdrop = element => {
    const layers = [];
    let opacity = 1;
    for (let e = element; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      opacity *= parseFloat(style.opacity);
      const color = parse(style.backgroundColor);
      if (color && color.a > 0) { layers.push(color); if (color.a >= 1) { break; } }
    }
    let result = {r: 255, g: 255, b: 255, a: 1};
    for (let i = layers.length - 1; i >= 0; i--) { result = over(layers[i], result); }
    return {color: result, opacity};
  };
  const failures = [];
  for (const element of document.querySelectorAll("body *")) {
    if (element.closest("svg, option, script, style, [aria-hidden=true]")) { continue; }
    if (element.matches(":disabled") || element.closest(":disabled")) { continue; }
    const own = Array.from(element.childNodes).some(
      node => node.nodeType === 3 && node.textContent.trim());
    if (!own || !element.getClientRects().length) { continue; }
    const style = getComputedStyle(element);
    if (style.visibility !== "visible") { continue; }
    const {color: bg, opacity} = backdrop(element);
    const fg = parse(style.color);
    const text = over({...fg, a: fg.a * opacity}, bg);
    const [light, dark] = [luminance(text), luminance(bg)].sort((x, y) => y - x);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      failures.push(`${element.tagName.toLowerCase()}.${element.className} ` +
        `"${element.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
    }
  }
  return Array.from(new Set(failures));
}
"""


def test_text_contrast_meets_wcag_aa_in_both_themes(context: Any, site: Site) -> None:
    page = sign_in(context)
    paths = [f"/tasks/dashboard{'' if name == 'overview' else '/' + name}" for name in PAGES]
    paths += [f"/tasks/dashboard/runs/{site.ids['failed']}", "/tasks/dashboard/nope"]
    for theme in ("light", "dark"):
        page.evaluate(f"localStorage.setItem('taskflow-theme', '{theme}')")
        for path in paths:
            page.goto(path)
            assert page.evaluate("document.documentElement.dataset.theme") == theme
            page.locator("main.page h1").first.wait_for()
            failures = page.evaluate(CONTRAST_SCRIPT)
            assert failures == [], f"{theme} {path}: {failures}"
    page.evaluate("localStorage.removeItem('taskflow-theme')")


def test_skip_link_and_a_visible_focus_ring_in_the_nav(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto("/tasks/dashboard/runs")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.className")
        assert focused == "skip-link", (name, focused)
        assert visible_in_first_screen(page, ".skip-link"), name
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main", name
        page.goto("/tasks/dashboard/runs")
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('tab')"):
                break
        ring = page.evaluate(
            """() => {
              const tab = document.activeElement;
              const style = getComputedStyle(tab);
              const box = tab.getBoundingClientRect();
              const strip = tab.closest('nav').getBoundingClientRect();
              const reach = parseFloat(style.outlineOffset) + parseFloat(style.outlineWidth);
              return {
                isTab: tab.classList.contains('tab'),
                style: style.outlineStyle,
                width: parseFloat(style.outlineWidth),
                inside: box.top - reach >= strip.top - 0.5
                  && box.bottom + reach <= strip.bottom + 0.5
                  && box.left - reach >= strip.left - 0.5
                  && box.right + reach <= strip.right + 0.5,
              };
            }"""
        )
        assert ring["isTab"] and ring["style"] != "none" and ring["width"] >= 2, (name, ring)
        assert ring["inside"], f"{name}: the nav clips the focus ring: {ring}"


# -- a phone (390 px) and the Instances page: no sideways scrolling, actions on screen, every
# tab reachable, folded run filters, errors on Failures, what each instance is running ------

WIDE_PAGES = ("schedules", "functions", "instances", "runs", "failures")

# What sticks out sideways: the page itself, or any table box scrolled inside it.
OVERFLOW = """() => {
  const page = document.scrollingElement;
  const boxes = Array.from(document.querySelectorAll('.table-wrap'))
    .filter(box => box.scrollWidth > box.clientWidth + 1)
    .map(box => box.querySelector('table').className);
  return {page: page.scrollWidth, width: window.innerWidth, boxes};
}"""

# Boxes of the elements matching a selector that are not wholly inside the viewport.
OFF_SCREEN = """selector => Array.from(document.querySelectorAll(selector))
  .map(element => element.getBoundingClientRect())
  .filter(box => box.width === 0 || box.left < 0 || box.right > window.innerWidth + 0.5)
  .map(box => [box.left, box.right, box.width])"""


def in_view(page: Any, selector: str) -> list[Any]:
    return page.evaluate(OFF_SCREEN, selector)


def test_wide_pages_read_without_sideways_scrolling(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_slow, 30)
    page = sign_in(context)
    try:
        for name, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            for path in WIDE_PAGES:
                page.goto(f"/tasks/dashboard/{path}")
                page.wait_for_selector("main.page h1")
                page.locator("table.grid tbody tr").first.wait_for()
                overflow = page.evaluate(OVERFLOW)
                assert overflow["page"] <= overflow["width"], (name, path, overflow)
                if name == "phone":
                    assert overflow["boxes"] == [], (name, path, overflow)
                    shoot(page, site, f"{path}-phone", full=False)
            page.goto("/tasks/dashboard/schedules")
            buttons = page.locator("tr[data-schedule='hourly_report'] .actions-col button")
            assert buttons.count() == 2, name  # run now, pause
            assert all(buttons.nth(i).is_visible() for i in range(2)), name
            assert in_view(page, "tr[data-schedule] .actions-col button") == [], name
            page.goto("/tasks/dashboard/failures")
            assert in_view(page, "#failures-table input[name=task_id]") == [], name
            assert in_view(page, "#replay-all button") == [], name
            page.goto("/tasks/dashboard/functions")
            assert in_view(page, "table.functions tbody td:first-child a") == [], name
    finally:
        site.run(site.manager.cancel(task_id))


def test_phone_cards_label_each_value(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.set_viewport_size(PHONE)
    page.goto("/tasks/dashboard/functions")
    cell = page.locator("table.functions tbody tr:has-text('resize_image') td[data-label=Queue]")
    label = cell.evaluate("cell => getComputedStyle(cell, '::before').content")
    assert label == '"Queue"', label
    assert not page.is_visible("table.functions thead")
    page.goto("/tasks/dashboard/schedules")
    row = page.locator("tr[data-schedule='hourly_report']")
    name_box = row.locator("a.name").bounding_box()
    actions_box = row.locator(".actions-col").bounding_box()
    trigger_box = row.locator("td[data-label=Trigger]").bounding_box()
    assert name_box and actions_box and trigger_box
    # The actions come right under the name, before the other values.
    assert name_box["y"] < actions_box["y"] < trigger_box["y"], (name_box, actions_box)


def test_every_nav_tab_is_reachable(context: Any, site: Site) -> None:
    page = sign_in(context)
    for name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto("/tasks/dashboard/instances")
        tabs = page.locator("nav.tabs a.tab")
        assert tabs.count() >= 8, name
        assert in_view(page, "nav.tabs a.tab") == [], name
        hidden = tabs.evaluate_all(
            """tabs => tabs.filter(tab => {
                 const box = tab.getBoundingClientRect();
                 const hit = document.elementFromPoint(box.left + box.width / 2,
                                                       box.top + box.height / 2);
                 return !(hit && tab.contains(hit));
               }).map(tab => tab.textContent.trim())"""
        )
        assert hidden == [], f"{name}: tabs covered or cut off: {hidden}"
        page.locator("nav.tabs a.tab:text('Audit')").click()
        page.wait_for_url(re.compile(r"/dashboard/audit$"))


def test_run_filters_fold_on_a_phone_and_stay_open_on_a_desktop(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.set_viewport_size(DESKTOP)
    page.goto("/tasks/dashboard/runs?func=resize_image")
    assert page.is_visible("form.filters") and not page.is_visible("#filters-toggle")

    page.set_viewport_size(PHONE)
    page.goto("/tasks/dashboard/runs?func=resize_image&status=success")
    assert not page.is_visible("form.filters")
    toggle = page.locator("#filters-toggle")
    assert toggle.inner_text() == "Filters (2 active)"
    first_row = page.locator("#runs-table tbody tr").first.bounding_box()
    assert first_row and first_row["y"] < PHONE["height"] / 2, first_row
    toggle.click()
    assert page.is_visible("form.filters")
    page.select_option("select[name=status]", "failed")  # still submits by itself
    page.wait_for_url(re.compile(r"status=failed"))
    assert not page.is_visible("form.filters")
    assert page.inner_text("#filters-toggle") == "Filters (2 active)"
    page.goto("/tasks/dashboard/failures")
    assert not page.is_visible("form.filters")
    assert page.inner_text("#filters-toggle") == "Filters"


def test_failures_show_the_error_on_a_phone(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_fail, 11)  # a failure no other test retries
    assert site.wait_final(task_id) == "failed"
    page = sign_in(context)
    page.set_viewport_size(PHONE)
    page.goto("/tasks/dashboard/failures?func=admin_fail")
    row = page.locator(f"#failures-table tr:has(a[href$='/runs/{task_id}'])")
    error = row.locator("td.error-col .err")
    assert error.is_visible()
    assert error.inner_text() == "RuntimeError: admin_fail broke on 11"
    assert not row.locator(".badge").is_visible()  # the error says more than "failed"
    assert in_view(page, "#failures-table td.error-col") == []
    words = "the upstream service answered with a very long explanation " * 2
    wordy = site.enqueue(admin_fail, words.strip())
    assert site.wait_final(wordy) == "failed"
    page.goto("/tasks/dashboard/failures?func=admin_fail")
    long = page.locator(f"#failures-table tr:has(a[href$='/runs/{wordy}']) td.error-col .err")
    assert long.get_attribute("title") == f"RuntimeError: admin_fail broke on {words.strip()}"
    shape = long.evaluate(
        """e => ({lines: Math.round(e.clientHeight / parseFloat(getComputedStyle(e).lineHeight)),
                 clipped: e.scrollHeight > e.clientHeight + 1})"""
    )
    assert shape == {"lines": 2, "clipped": True}, shape  # two lines, the rest cut
    shoot(page, site, "failures-phone", full=False)


def test_instances_show_what_each_one_is_running(context: Any, site: Site) -> None:
    task_id = site.enqueue(admin_slow, 30)
    page = sign_in(context)
    me = site.manager.instance_id
    try:
        for name, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            page.goto("/tasks/dashboard/instances")
            running = f"tr[data-instance='{me}'] .running-list"
            link = page.locator(f"{running} a[href$='/runs/{task_id}']")
            link.wait_for(timeout=WAIT_MS)
            item = page.locator(f"{running} li:has(a[href$='/runs/{task_id}'])")
            assert "admin_slow" in item.inner_text(), name
            clock = item.locator(".elapsed")
            first = clock.inner_text()
            assert re.fullmatch(r"\d+ s", first), (name, first)
            page.wait_for_function(
                "([me, first]) => document.querySelector("
                "`tr[data-instance='${me}'] .running-list .elapsed`).textContent !== first",
                arg=[me, first],
                timeout=WAIT_MS,
            )
            assert in_view(page, f"tr[data-instance='{me}'] .running-list a") == [], name
            shoot(page, site, "instances" if name == "desktop" else "instances-phone")
            link.click()
            page.wait_for_url(re.compile(re.escape(task_id) + "$"))
    finally:
        site.run(site.manager.cancel(task_id))
