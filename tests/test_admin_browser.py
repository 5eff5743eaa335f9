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
PAGES = ("overview", "runs", "failures", "schedules", "logs", "functions", "instances", "audit")


# -- task functions with readable names for the screenshots --------------------------------


def send_welcome_email(address: str) -> None:
    """Seeded history only."""


def resize_image(image_id: int, width: int = 800) -> None:
    """Seeded history only."""


def sync_crm_contacts(batch: int) -> None:
    """Seeded history only."""


def generate_invoice_pdf(invoice_id: int) -> None:
    """Seeded history only."""


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

    site.run(insert())
    site.ids["hostile"] = hostile["id"]
    site.ids["ok"] = site.enqueue(admin_ok, 7, password="hunter2")
    site.ids["failed"] = site.enqueue(admin_fail, 3)
    site.ids["xss_args"] = site.enqueue(admin_ok, XSS)
    for key in ("ok", "failed", "xss_args"):
        site.wait_final(site.ids[key])


# -- pages --------------------------------------------------------------------------------------


@pytest.fixture
def context(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (no cookies) that records script errors and CSP reports."""
    ctx = browser.new_context(viewport=DESKTOP, base_url=site.url)
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not _expected(message.text):
            problems.append(f"console {message.type}: {message.text}")

    def watch(page: Any) -> None:
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", console)
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm prompts

    ctx.on("page", watch)
    yield ctx
    ctx.close()
    assert problems == [], problems


def _expected(text: str) -> bool:
    """Console errors that are the point of a test: the login page's 401 answer."""
    return "status of 401" in text


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
