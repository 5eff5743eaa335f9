"""``task_progress()`` on the dashboard in a real browser (Chromium through Playwright),
on SQLite and PostgreSQL: a running task's progress appears on its page and on the Runs
list, and moves on by itself as the task reports more."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from taskflow import task_progress
from tests.test_admin_browser import (  # noqa: F401  (fixtures)
    WAIT_MS,
    Site,
    browser,
    context,
    sign_in,
    site,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

halfway = threading.Event()
finish = threading.Event()


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.05)


async def import_contacts(total: int) -> str:
    """Reports 3 of ``total``, then 7 once ``halfway`` is set, then ends at ``finish``."""
    task_progress(3, total, "reading the CSV")
    await _until(halfway)
    task_progress(7, total, "writing contacts")
    await _until(finish)
    return "imported"


def test_progress_of_a_running_task_appears_and_moves_on(
    context: Any,  # noqa: F811  (the fixture imported above)
    site: Site,  # noqa: F811
) -> None:
    halfway.clear()
    finish.clear()
    if site.manager.registry.get("import_contacts") is None:
        site.manager.task()(import_contacts)
    task_id = site.enqueue(import_contacts, 10)
    page = sign_in(context)
    try:
        page.goto(f"/tasks/dashboard/runs/{task_id}")
        bar = "#task-summary #task-progress"
        page.wait_for_selector(f"{bar} .progress-count:has-text('3 / 10')", timeout=WAIT_MS)
        assert "reading the CSV" in page.inner_text(bar)
        assert page.locator(f"{bar} progress").get_attribute("value") == "0.3000"

        halfway.set()  # the page was not reloaded: the live refresh brings the new value
        page.wait_for_selector(f"{bar} .progress-count:has-text('7 / 10')", timeout=WAIT_MS)
        assert "writing contacts" in page.inner_text(bar)
        assert "(70%)" in page.inner_text(bar)

        page.goto("/tasks/dashboard/runs?status=running")
        row = page.locator(f"#runs-table tr:has(a[href$='/runs/{task_id}'])")
        row.locator(".progress").wait_for(timeout=WAIT_MS)
        assert "7 / 10" in row.locator(".progress").inner_text()
        assert "writing contacts" in row.locator(".progress").inner_text()
    finally:
        finish.set()
    assert site.wait_final(task_id) == "success"
