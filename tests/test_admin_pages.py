"""The dashboard's pages, fragments and form actions over HTTP (SQLite and PostgreSQL),
and the small pieces behind them: redaction, windows, cursors, charts, forms."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskflow import TaskAdmin, TaskManager
from taskflow._store.dashboard import Buckets, Cursor
from taskflow._store.migrate import resource_path
from taskflow.admin._actions import new_schedule
from taskflow.admin._charts import throughput_chart
from taskflow.admin._query import QueryError, RunQuery
from taskflow.admin._redact import MASK, Redactor
from taskflow.admin._util import (
    capped,
    decode_cursor,
    duration_text,
    encode_cursor,
    parse_moment,
    parse_window,
    percentile,
)
from tests.admin_support import (
    admin_fail,
    admin_parked,
    build,
    call,
    csrf,
    insert_rows,
    task_row,
    wait_status,
)


@pytest.fixture
def env(db_url):
    built = build(db_url, display_func_args=True, poll_interval=2.0)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def live_url(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}" class="live" hx-get="([^"]+)"', html)
    assert match, f"no live element {element_id}"
    return match.group(1).replace("&amp;", "&")


# -- live fragments -----------------------------------------------------------------------


def test_live_fragment_answers_204_until_something_changes(env):
    client = env.client
    page = client.get("/tasks/dashboard/runs", params={"status": "pending"}).text
    url = live_url(page, "runs-table")
    assert "status=pending" in url and "fp=" in url
    assert client.get(url).status_code == 204  # nothing changed: htmx keeps the page

    task_id = call(client, env.manager.enqueue, admin_parked)
    changed = client.get(url)
    assert changed.status_code == 200
    assert task_id in changed.text
    assert "<html" not in changed.text  # only the fragment, never the whole page
    assert client.get(live_url(changed.text, "runs-table")).status_code == 204


def test_only_the_first_page_refreshes_itself(env):
    client = env.client
    rows = [task_row(created_at=datetime.now(UTC) - timedelta(seconds=i)) for i in range(5)]
    call(client, insert_rows, env.manager, rows)
    first = client.get("/tasks/dashboard/runs", params={"limit": 2}).text
    assert 'id="runs-table" class="live"' in first
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    assert 'id="runs-table" class="live"' not in second
    assert 'rel="prev"' in second


def test_running_task_page_tails_its_logs(env):
    client = env.client
    task_id = call(client, env.manager.enqueue, admin_parked)  # stays pending: "live"
    page = client.get(f"/tasks/dashboard/runs/{task_id}").text
    assert 'id="log-tail"' in page and 'id="task-summary" class="live"' in page
    tail = f"/tasks/dashboard/_/runs/{task_id}/logs?after=0"
    assert client.get(tail).status_code == 204  # no lines yet
    from tests.admin_support import insert_log

    call(client, insert_log, env.manager, task_id, "first line")
    fresh = client.get(tail)
    assert "first line" in fresh.text and 'id="log-tail"' in fresh.text
    after = re.search(r"after=(\d+)", fresh.text).group(1)
    assert client.get(f"/tasks/dashboard/_/runs/{task_id}/logs?after={after}").status_code == 204
    call(client, env.manager.cancel, task_id)
    final = client.get(f"/tasks/dashboard/_/runs/{task_id}/logs?after={after}")
    assert final.status_code == 200 and 'id="log-tail"' not in final.text  # polling stops
    assert 'class="live"' not in client.get(f"/tasks/dashboard/runs/{task_id}").text


# -- pages ---------------------------------------------------------------------------------


def test_bad_filters_show_an_error_instead_of_failing(env):
    page = env.client.get("/tasks/dashboard/runs", params={"window": "forever", "tag": "x"})
    assert page.status_code == 200
    assert "invalid time window" in page.text or "invalid time" in page.text


def test_pages_show_counts_schedules_functions_and_instances(env):
    client = env.client
    failed = call(client, env.manager.enqueue, admin_fail)
    wait_status(client, env.manager, failed)
    overview = client.get("/tasks/dashboard").text
    assert re.search(r'<span class="n">1</span>\s*<span class="what">failed</span>', overview)
    assert "Last hour" in overview and "<svg" in overview
    assert "hourly_report" in client.get("/tasks/dashboard/schedules").text
    functions = client.get("/tasks/dashboard/functions").text
    assert "admin_fail" in functions and "reports.admin_report" in functions
    instances = client.get("/tasks/dashboard/instances").text
    assert env.manager.instance_id[:8] in instances and "this process" in instances
    logs = client.get("/tasks/dashboard/logs", params={"level": "error"}).text
    assert "about to fail" in logs
    assert client.get("/tasks/dashboard/runs/missing").status_code == 404


def test_counts_over_the_cap_read_as_a_lower_bound(env):
    env.admin.count_cap = 3
    rows = [task_row(status="failed") for _ in range(5)]
    call(env.client, insert_rows, env.manager, rows)
    assert "3+" in env.client.get("/tasks/dashboard/failures").text


# -- form actions without JavaScript ----------------------------------------------------------


def test_forms_work_without_javascript(env):
    client = env.client
    token = csrf(client)["X-CSRF-Token"]
    task_id = call(client, env.manager.enqueue, admin_parked)
    done = client.post(
        f"/tasks/dashboard/runs/{task_id}/cancel",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/tasks/dashboard/runs/{task_id}"
    shown = client.get(done.headers["location"]).text
    assert "Cancelled." in shown  # the one-time message
    assert "Cancelled." not in client.get(done.headers["location"]).text

    created = client.post(
        "/tasks/dashboard/schedules",
        data={
            "csrf_token": token,
            "function": "reports.admin_report",
            "trigger": "every",
            "every": "600",
            "kwargs": '{"team": "web"}',
            "name": "web every 10 min",
        },
        follow_redirects=False,
    )
    assert created.status_code == 303
    assert "web every 10 min" in client.get("/tasks/dashboard/schedules").text
    bad = client.post(
        "/tasks/dashboard/schedules",
        data={"csrf_token": token, "function": "reports.admin_report", "kwargs": "[1]"},
    )
    assert bad.status_code == 422 and "must be a JSON object" in bad.text


def test_htmx_actions_redirect_with_hx_redirect(env):
    client = env.client
    headers = {**csrf(client), "HX-Request": "true"}
    response = client.post("/tasks/dashboard/schedules/hourly_report/pause", headers=headers)
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/tasks/dashboard/schedules"
    missing = client.post("/tasks/dashboard/schedules/nope/run", headers=headers)
    assert missing.headers["hx-redirect"] == "/tasks/dashboard/schedules"
    page = client.get("/tasks/dashboard/schedules").text
    assert "no schedule named" in page and 'class="flash error"' in page


def test_replay_everything_matching_a_filter(env):
    client = env.client
    rows = [task_row(status="failed", func_name="admin_fail") for _ in range(3)]
    rows.append(task_row(status="failed", func_name="admin_parked"))
    call(client, insert_rows, env.manager, rows)
    replayed = client.post(
        "/tasks/dashboard/failures/replay",
        data={
            "csrf_token": csrf(client)["X-CSRF-Token"],
            "scope": "all",
            "func": "admin_fail",
            "next": "/tasks/dashboard/failures?func=admin_fail",
        },
        follow_redirects=False,
    )
    assert replayed.headers["location"] == "/tasks/dashboard/failures?func=admin_fail"
    assert "Replayed 3 task(s)" in client.get(replayed.headers["location"]).text
    retries = client.get("/tasks", params={"source": "retry"}).json()
    assert sorted(item["func_name"] for item in retries) == ["admin_fail"] * 3


def test_dashboard_works_under_a_root_path(db_url):
    manager = TaskManager(database_url=db_url, poll_interval=0.05)
    app = FastAPI()
    TaskAdmin(app, manager, path="/ops/jobs")
    with TestClient(app, root_path="/proxy") as client:
        page = client.get("/proxy/ops/jobs/dashboard/runs")
        assert page.status_code == 200
        links = re.findall(r'href="(/[^"]*)"', page.text)
        assert links and all(link.startswith("/proxy/ops/jobs/") for link in links)
        assert 'src="/proxy/ops/jobs/dashboard/static/htmx.min.js?v=' in page.text


# -- pieces -------------------------------------------------------------------------------


def test_redaction_at_any_depth():
    redactor = Redactor()
    value = {
        "user": "ann",
        "DB_Password": "x",
        "nested": [{"X-Api-Key": "k", "ok": 1}, ("token", "fine as a value")],
        "auth": {"anything": "inside"},
    }
    assert redactor.redact(value) == {
        "user": "ann",
        "DB_Password": MASK,
        "nested": [{"X-Api-Key": MASK, "ok": 1}, ["token", "fine as a value"]],
        "auth": MASK,
    }
    assert Redactor(["card"]).redact({"card_number": 1, "password": 2}) == {
        "card_number": MASK,
        "password": 2,
    }


def test_windows_moments_and_cursors():
    now = datetime(2025, 5, 1, 12, tzinfo=UTC)
    assert parse_window("15m") == timedelta(minutes=15)
    assert parse_window("2 days".replace(" ", "")) == timedelta(days=2)
    assert parse_window("all") is None and parse_window("") is None
    with pytest.raises(ValueError):
        parse_window("6x")
    assert parse_moment("6h", now=now) == now - timedelta(hours=6)
    assert parse_moment("2025-04-30T10:00:00", now=now) == datetime(2025, 4, 30, 10, tzinfo=UTC)
    cursor = Cursor(datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC), "abc")
    assert decode_cursor(encode_cursor(cursor), sort="created") == cursor
    assert decode_cursor(encode_cursor(Cursor(1.25, "x")), sort="duration") == Cursor(1.25, "x")
    with pytest.raises(ValueError):
        decode_cursor("!!", sort="created")


def test_run_query_validation_and_round_trip():
    query = RunQuery.from_params({"status": "failed,interrupted", "tag": "k:v", "func_name": "f"})
    filters = query.task_filter()
    assert filters.statuses == ("failed", "interrupted")
    assert filters.tag == ("k", "v") and filters.func_name == "f"
    assert "status=failed%2Cinterrupted" in query.query_string()
    assert "limit" not in query.query_string() and "sort" not in query.query_string()
    for bad in ({"status": "weird"}, {"source": "cron"}, {"sort": "name"}, {"tag": "=x"}):
        with pytest.raises(QueryError):
            RunQuery.from_params(bad).task_filter()
    with pytest.raises(QueryError):
        RunQuery.from_params({"limit": "9999"})


def test_formats():
    assert capped(10_001, 10_000) == "10,000+" and capped(9_999, 10_000) == "9,999"
    assert duration_text(0.0123) == "12 ms" and duration_text(4.25) == "4.2 s"
    assert duration_text(3725) == "1 h 2 min" and duration_text(None) == "–"
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0 and percentile([], 0.5) is None


def test_chart_geometry():
    buckets = Buckets(start=datetime(2025, 1, 1, tzinfo=UTC), size=60, count=4)
    buckets.counts = {"success": [0, 2, 4, 0], "failed": [0, 0, 4, 1]}
    chart = throughput_chart(buckets, title="t", ok=("success",), bad=("failed",))
    assert (chart.succeeded, chart.failed, chart.peak) == (6, 5, 8)
    assert chart.failure_rate == pytest.approx(5 / 11)
    tallest = chart.bars[2]
    assert tallest.ok_height == tallest.bad_height  # 4 and 4: equal halves
    assert tallest.bad_y == chart.plot_top  # the peak reaches the top line
    assert chart.bars[0].ok_height == 0 and "00:00" in chart.bars[0].label
    assert [anchor for _, _, anchor in chart.axis] == ["start", "middle", "middle", "end"]


def test_schedule_form_parsing():
    values = dict.fromkeys(
        ("function", "trigger", "cron", "every", "timezone", "kwargs", "name", "description"), ""
    )
    every = new_schedule({**values, "function": "g.f", "trigger": "every", "every": "30"})
    assert every.every == 30.0 and every.cron_expression is None
    cron = new_schedule({**values, "function": "g.f", "cron": "* * * * *", "kwargs": '{"a": 1}'})
    assert cron.cron_expression == "* * * * *" and cron.kwargs == {"a": 1}
    for bad in ({"function": "nodot"}, {"function": "g.f", "kwargs": "{"}):
        with pytest.raises(ValueError):
            new_schedule({**values, **bad})


def test_vendored_htmx_is_the_pinned_release():
    script = resource_path("static") / "htmx.min.js"
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    assert digest == "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"  # 2.0.11


def test_admin_arguments(db_url, monkeypatch):
    manager = TaskManager(database_url=db_url)
    installed = []
    monkeypatch.setattr(manager, "install", lambda app: installed.append(app))
    app = FastAPI()
    TaskAdmin(app, manager, retention_days=2, auto_install=True)
    assert manager.retention_days == 2 and installed == [app]
    for bad in ({"path": "tasks"}, {"path": "/"}, {"poll_interval": 0}, {"retention_days": -1}):
        with pytest.raises(ValueError):
            TaskAdmin(FastAPI(), TaskManager(database_url=db_url), **bad)
    with pytest.raises(TypeError):
        TaskAdmin(FastAPI(), TaskManager(database_url=db_url), auth=3.5)
