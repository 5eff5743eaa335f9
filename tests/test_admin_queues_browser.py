"""The Queues page in a real browser (Chromium through Playwright), at desktop and phone
width, on SQLite and PostgreSQL: the warning about a queue nobody serves, and the Pause
and Resume buttons."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin_support import admin_ok, admin_parked
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

WARNING = ".queue-unserved[data-queue='parked']"
ROW = "tr[data-queue='default']"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_queues_page_warns_and_pauses(
    context: Any,  # noqa: F811  (the fixture imported above)
    site: Site,  # noqa: F811
    viewport: dict[str, int],
) -> None:
    site.enqueue(admin_parked)  # the "parked" queue: registered, served by no process
    page = sign_in(context)
    page.set_viewport_size(viewport)
    page.click("nav.tabs a:text('Queues')")
    page.wait_for_selector(WARNING)
    warning = page.locator(WARNING).bounding_box()
    assert warning is not None and warning["x"] >= 0
    assert warning["x"] + warning["width"] <= viewport["width"] + 1
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= viewport["width"] + 1, f"the page is {wide}px wide"
    shoot(page, site, "queues" if viewport == DESKTOP else "queues-phone")
    try:
        page.click(f"{ROW} button:text('Pause')")  # confirmed by the context's dialog handler
        page.wait_for_selector(".flash.ok:has-text('Paused queue default')")
        page.wait_for_selector(f"{ROW} .badge:text('paused')")
        held = site.enqueue(admin_ok, 1)
        assert site.run(site.manager.coordinator.claim_now()) == 0
        page.goto(f"/tasks/dashboard/runs/{held}")
        assert "queue default is paused (by admin" in page.inner_text("#task-waiting")
        page.goto("/tasks/dashboard/queues")
        page.click(f"{ROW} button:text('Resume')")
        page.wait_for_selector(f"{ROW} .badge:text('active')")
        assert site.wait_final(held) == "success"
    finally:
        site.run(site.manager.resume_queue("default"))  # the site is shared by the module
