"""The Overview's charts in a real browser (the fixtures of ``test_admin_browser``): the
window and the queue and function filters redraw every chart, at desktop and phone
widths, without horizontal scrolling and without console errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests import test_admin_browser as shared
from tests.test_admin_browser import DESKTOP, PHONE, Site, sign_in

# The browser, server and context fixtures of the dashboard's browser tests.
browser = shared.browser
site = shared.site
context = shared.context

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

CHART_TITLES = ("Finished", "Enqueued and processed", "Backlog", "Wait before start")


def chart_titles(page: Any) -> list[str]:
    return page.locator(".trends .chart-title").all_inner_texts()


def no_sideways_scroll(page: Any, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width + 1, f"{page.url} is {scroll}px wide in a {width}px window"


def test_overview_charts_follow_the_filters(context: Any, site: Site) -> None:
    page = sign_in(context)
    page.goto("/tasks/dashboard?window=24h&func=resize_image")
    page.wait_for_selector(".trends")
    assert page.input_value("select[name=window]") == "24h"
    assert page.input_value("input[name=func]") == "resize_image"
    assert chart_titles(page) == [f"{title} (resize_image)" for title in CHART_TITLES]
    # Each chart names itself to assistive technology and draws its numbers.
    assert page.locator(".trends svg[role=img] > title").count() == 3
    assert page.locator(".trends .lines polyline").count() >= 5
    assert page.locator(".trends svg.bars").count() == 4
    no_sideways_scroll(page, DESKTOP["width"])

    page.select_option("select[name=window]", "1h")  # submits by itself
    page.wait_for_url(re.compile(r"window=1h"))
    page.select_option("select[name=queue]", "parked")
    page.wait_for_url(re.compile(r"queue=parked"))
    assert chart_titles(page) == [
        f"{title} (queue parked · resize_image)" for title in CHART_TITLES
    ]
    assert "per minute" in page.inner_text("select[name=window]")

    # The numbers behind a chart, as a table.
    page.goto("/tasks/dashboard?window=24h")
    page.wait_for_selector(".trends")
    assert chart_titles(page) == list(CHART_TITLES)
    table = page.locator(".trends details.chart-table").first  # enqueued and processed
    table.locator("summary").click()
    rows = table.locator("tbody tr")
    assert rows.count() == 24
    enqueued = sum(
        int(text.replace(",", "")) for text in rows.locator("td:nth-child(2)").all_inner_texts()
    )
    assert enqueued > 0
    no_sideways_scroll(page, DESKTOP["width"])

    page.set_viewport_size(PHONE)
    for path in ("/tasks/dashboard?window=24h&queue=default", "/tasks/dashboard?func=resize_image"):
        page.goto(path)
        page.wait_for_selector(".trends")
        assert len(chart_titles(page)) == 4
        page.locator(".trends details.chart-table summary").first.click()
        no_sideways_scroll(page, PHONE["width"])
