"""The Workflows pages in a real browser (Chromium through Playwright), at desktop and
phone width, on SQLite and PostgreSQL: a workflow's progress refreshing live as its
steps end, and the Cancel button."""

from __future__ import annotations

from typing import Any

import pytest

from taskflow import step
from tests.admin_support import admin_ok, admin_slow
from tests.test_admin_browser import (  # noqa: F401  (fixtures)
    DESKTOP,
    PHONE,
    Site,
    browser,
    context,
    shoot,
    sign_in,
    site,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_workflow_page_follows_its_steps_and_cancels_them(
    context: Any,  # noqa: F811  (the fixture imported above)
    site: Site,  # noqa: F811
    viewport: dict[str, int],
) -> None:
    flow = site.run(
        site.manager.chain(step(admin_slow, 60), step(admin_ok, 1), name=f"etl-{viewport['width']}")
    )
    slow, waiting = flow.task_ids
    page = sign_in(context)
    page.set_viewport_size(viewport)
    page.click("nav.tabs a:text('Workflows')")
    row = f"tr[data-workflow='{flow.id}']"
    page.wait_for_selector(row)
    page.click(f"{row} a.name")
    page.wait_for_selector(f"tr[data-task='{waiting}'] .badge:text('blocked')")
    page.wait_for_selector(f"tr[data-task='{slow}'] .badge:text('running')")  # live refresh
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= viewport["width"] + 1, f"the page is {wide}px wide"
    shoot(page, site, "workflow" if viewport == DESKTOP else "workflow-phone")

    page.click(f"tr[data-task='{waiting}'] a.mono")
    assert "for 1 of its 1 dependencies to end" in page.inner_text("#task-blocked")
    page.go_back()
    page.click("button:text('Cancel workflow')")  # confirmed by the context's dialog handler
    page.wait_for_selector(".flash.ok:has-text('Cancelled 2 tasks.')")
    page.wait_for_selector(f"tr[data-task='{slow}'] .badge:text('cancelled')")
    page.wait_for_selector(f"tr[data-task='{waiting}'] .badge:text('cancelled')")
    assert site.wait_final(waiting) == "cancelled"
