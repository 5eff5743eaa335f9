"""The dashboard's pages, fragments and form actions over HTTP (SQLite and PostgreSQL),
and the small pieces behind them: redaction, windows, cursors, charts, forms."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient

from taskflow import TaskAdmin, TaskManager
from taskflow._store.dashboard import Cursor
from taskflow._store.migrate import resource_path
from taskflow._store.schema import task_logs
from taskflow._store.series import Buckets
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


# -- schedules ------------------------------------------------------------------------------


def schedule_row_html(page: str, name: str) -> str:
    match = re.search(rf'<tr[^>]*data-schedule="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert match, f"no row for schedule {name}"
    return match.group(1)


def test_run_now_is_the_last_run_and_the_flash_links_it(env):
    client = env.client
    token = csrf(client)["X-CSRF-Token"]
    done = client.post(
        "/tasks/dashboard/schedules/hourly_report/run",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    page = client.get(done.headers["location"]).text
    flash = re.search(r'<div class="flash ok"[^>]*>(.*?)</div>', page, re.S).group(1)
    new_id = re.search(r'href="/tasks/dashboard/runs/([0-9a-f-]+)"', flash).group(1)
    assert "Started task" in flash and "for schedule hourly_report" in flash
    assert call(client, env.manager.get_task, new_id).source == "manual"
    row = schedule_row_html(page, "hourly_report")
    assert f'href="/tasks/dashboard/runs/{new_id}"' in row  # Last run is the new run
    listed = client.get("/tasks/schedules").json()[0]
    assert listed["last_task_id"] == new_id and listed["last_status"] is not None


def test_schedule_names_link_to_their_runs(env):
    client = env.client
    triggered = client.post("/tasks/schedules/hourly_report/trigger", headers=csrf(client))
    task_id = triggered.json()["task_id"]
    other = call(client, env.manager.enqueue, admin_parked)
    row = schedule_row_html(client.get("/tasks/dashboard/schedules").text, "hourly_report")
    link = re.search(r'<a class="name" href="([^"]+)"', row).group(1).replace("&amp;", "&")
    assert link == "/tasks/dashboard/runs?tag=schedule%3Dhourly_report"
    runs = client.get(link).text
    assert task_id in runs and other not in runs


def test_next_fire_times_show_seconds_when_the_interval_needs_them(env):
    client = env.client
    body = {
        "task_group_name": "reports",
        "function_name": "admin_report",
        "every": 30,
        "kwargs": {"team": "ops"},
        "name": "every half minute",
    }
    assert client.post("/tasks/schedules", json=body, headers=csrf(client)).status_code == 201
    page = client.get("/tasks/dashboard/schedules").text

    def times(name: str) -> list[str]:
        cells = re.findall(
            r'class="next-fire">.*?<span class="muted">([^<]+)</span>',
            schedule_row_html(page, name),
            re.S,
        )
        assert len(cells) == 3, cells
        return cells

    fast = times("every half minute")
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", text) for text in fast), fast
    assert len(set(fast)) == 3  # three distinct times, 30 s apart
    hourly = times("hourly_report")
    assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", text) for text in hourly), hourly


def test_schedule_form_shows_plain_signatures_and_every_problem_at_once(env):
    client = env.client
    page = client.get("/tasks/dashboard/schedules").text
    assert "reports.admin_report(team: str, weeks: int = 1) -&gt; str" in page
    assert "&#39;str&#39;" not in page and "-&gt; &#39;" not in page
    assert 'class="when-cron"' in page and 'class="when-every"' in page
    bad = client.post(
        "/tasks/dashboard/schedules",
        data={
            "csrf_token": csrf(client)["X-CSRF-Token"],
            "function": "reports.admin_report",
            "trigger": "cron",
            "cron": "61 * * * *",
            "timezone": "Mars/Olympus",
            "kwargs": '{"colour": "blue"}',
            "name": "hourly_report",
        },
    )
    assert bad.status_code == 422
    errors = html.unescape(re.search(r'id="schedule-form-error">(.*?)</div>', bad.text, re.S)[1])
    assert "4 fields need a change" in errors
    for text in ("invalid cron expression", "unknown timezone", "do not fit", "already exists"):
        assert text in errors, text
    for field in ("cron", "timezone", "kwargs", "name"):
        assert f'aria-describedby="schedule-{field}-error"' in bad.text, field
    assert 'value="Mars/Olympus"' in bad.text  # what was typed is kept
    every = client.post(
        "/tasks/dashboard/schedules",
        data={
            "csrf_token": csrf(client)["X-CSRF-Token"],
            "function": "reports.nothing",
            "trigger": "every",
            "every": "soon",
            "kwargs": "[1]",
        },
    )
    errors = html.unescape(re.search(r'id="schedule-form-error">(.*?)</div>', every.text, re.S)[1])
    for text in ("no function 'nothing'", "number of seconds", "must be a JSON object"):
        assert text in errors, text


# -- runs, tasks and logs ---------------------------------------------------------------------


def test_running_tasks_show_how_long_they_have_run(env):
    client = env.client
    row = task_row(status="running", created_at=datetime.now(UTC) - timedelta(hours=2))
    row["queue"] = "parked"
    call(client, insert_rows, env.manager, [row])
    runs = client.get("/tasks/dashboard/runs", params={"status": "running"}).text
    cell = re.search(r'<span class="elapsed" data-elapsed="([\d.]+)"[^>]*>([^<]+)</span>', runs)
    assert cell, "no running time in the runs table"
    assert 7199 < float(cell.group(1)) < 7300 and cell.group(2).startswith("2 h 0 min")
    task = client.get(f"/tasks/dashboard/runs/{row['id']}").text
    assert re.search(r'class="elapsed" data-elapsed="[\d.]+"[^>]*>2 h 0 min</span>', task)


async def insert_lines(manager, task_id: str, levels: list[str]) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    lines = [
        {
            "task_id": task_id,
            "at": start + timedelta(milliseconds=index),
            "level": level,
            "message": f"line {index} {level}",
            "extra": {},
        }
        for index, level in enumerate(levels)
    ]
    async with manager.db.write() as conn:
        await conn.execute(task_logs.insert(), lines)


def test_a_long_log_says_how_much_is_shown_and_filters_by_level(env):
    client = env.client
    row = task_row()
    call(client, insert_rows, env.manager, [row])
    levels = ["warning" if index % 4 == 0 else "info" for index in range(800)]
    call(client, insert_lines, env.manager, row["id"], levels)
    page = client.get(f"/tasks/dashboard/runs/{row['id']}").text
    assert re.search(r'id="log-count">last 500 of 800 lines', page)
    assert page.count('class="log-line') == 500 and "line 799 info" in page
    assert "line 299 info" not in page  # the first 300 lines are on the Logs page
    link = re.search(r'id="logs-page-link" href="([^"]+)"|href="([^"]+)" id="logs-page-link"', page)
    target = (link.group(1) or link.group(2)).replace("&amp;", "&")
    assert target == f"/tasks/dashboard/logs?task={row['id']}"
    logs = client.get(target).text
    assert 'id="log-task-filter"' in logs and row["id"][:8] in logs

    warnings = client.get(f"/tasks/dashboard/runs/{row['id']}", params={"level": "warning"}).text
    assert re.search(r'id="log-count">200 warning lines', warnings)
    assert warnings.count('class="log-line lvl-warning"') == 200
    assert 'class="log-line lvl-info"' not in warnings
    assert f"logs?task={row['id']}&amp;level=warning" in warnings
    assert '<option value="warning" selected>' in warnings


def test_a_live_tail_keeps_the_level_filter(env):
    client = env.client
    task_id = call(client, env.manager.enqueue, admin_parked)  # stays pending: "live"
    call(client, insert_lines, env.manager, task_id, ["info", "warning"])
    page = client.get(f"/tasks/dashboard/runs/{task_id}", params={"level": "warning"}).text
    assert page.count('class="log-line') == 1 and "line 1 warning" in page
    tail = live_url(page, "log-tail")
    assert "level=warning" in tail
    assert client.get(tail).status_code == 204  # nothing new
    call(client, insert_lines, env.manager, task_id, ["info", "error", "warning"])
    fresh = client.get(tail)
    assert fresh.text.count('class="log-line') == 1 and "line 2 warning" in fresh.text
    assert client.get(live_url(fresh.text, "log-tail")).status_code == 204  # after all three


def test_tags_link_to_runs_filtered_by_the_tag(env):
    client = env.client
    tagged = task_row(tags={"tenant": "acme & co"})
    other = task_row(tags={"tenant": "globex"})
    call(client, insert_rows, env.manager, [tagged, other])
    page = client.get(f"/tasks/dashboard/runs/{tagged['id']}").text
    link = re.search(r'<a class="tag" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert link == "/tasks/dashboard/runs?tag=tenant%3Dacme+%26+co"
    runs = client.get(link).text
    assert tagged["id"] in runs and other["id"] not in runs
    listed = client.get("/tasks/dashboard/runs").text
    assert 'class="tag" href="/tasks/dashboard/runs?tag=tenant%3Dglobex"' in listed


def test_the_task_page_reads_top_down(env):
    client = env.client
    failed = call(client, env.manager.enqueue, admin_fail, 4)
    wait_status(client, env.manager, failed)
    page = client.get(f"/tasks/dashboard/runs/{failed}").text
    head = page.index('id="task-error"')
    assert head < page.index('class="detail-grid"') < page.index('id="errors"')
    shown = re.search(r'id="task-error">(.*?)</p>', page, re.S).group(1)
    assert '<strong class="err-class">RuntimeError</strong>' in shown
    assert "admin_fail broke on 4" in shown and "admin_support.py:35" in shown
    box = re.search(r'<pre class="code tb">(.*?)</pre>', page, re.S).group(1)
    own = re.search(r'<span class="tb-own">(.*?)</span>', box, re.S).group(1)
    assert "taskflow/_engine/" in own and "admin_support.py" not in own
    after_fold = box.split('class="tb-fold', 1)[1]
    assert "admin_support.py" in after_fold and "taskflow/_engine/" not in after_fold
    assert box.rstrip().endswith("RuntimeError: admin_fail broke on 4")
    assert re.search(r"Show taskflow's \d+ frames", page)


# -- audit ---------------------------------------------------------------------------------


def test_audit_details_read_as_words_with_links(env):
    client = env.client
    failed = call(client, env.manager.enqueue, admin_fail, 5)
    wait_status(client, env.manager, failed)
    replayed = client.post("/tasks/bulk-retry", json=[failed], headers=csrf(client)).json()
    new_id = replayed["results"][0]["new_task_id"]
    parked = call(client, env.manager.enqueue, admin_parked)
    client.post(f"/tasks/{parked}/cancel", headers=csrf(client))
    audit = client.get("/tasks/dashboard/audit").text
    details = re.findall(r'<td class="small wrap audit-detail">(.*?)</td>', audit, re.S)
    text = " ".join(details)
    assert "[&#39;" not in text and "False" not in text and "True" not in text
    assert f'href="/tasks/dashboard/runs/{failed}"' in text  # the original
    assert f'href="/tasks/dashboard/runs/{new_id}"' in text  # and the new task
    assert "new tasks" in text and "replayed" in text
    targets = re.findall(r'<td class="wrap audit-target">(.*?)</td>', audit, re.S)
    assert any(f'href="/tasks/dashboard/runs/{parked}"' in target for target in targets)


# -- not found, compression -------------------------------------------------------------------


def test_an_unknown_dashboard_path_answers_the_styled_404(env):
    client = env.client
    for path in ("/tasks/dashboard/nope", "/tasks/dashboard/runs/x/y/z", "/tasks/dashboard/a%3Cb"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert 'id="not-found"' in response.text and 'nav class="tabs"' in response.text
        assert "Content-Security-Policy" in response.headers
    assert "/tasks/dashboard/a&lt;b" in client.get("/tasks/dashboard/a%3Cb").text
    slash = client.get("/tasks/dashboard/", follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"] == "/tasks/dashboard"
    assert client.get("/tasks/nope/deeper").status_code == 404  # the app's own 404 elsewhere


def test_dashboard_responses_are_compressed_and_the_app_is_not(env):
    client = env.client
    app = env.app

    @app.get("/big")
    def big() -> PlainTextResponse:
        return PlainTextResponse("x" * 5000)

    @app.get("/events")
    def events() -> StreamingResponse:
        return StreamingResponse(iter(["data: 1\n\n"] * 200), media_type="text/event-stream")

    gzip_only = {"Accept-Encoding": "gzip"}
    for path in ("/tasks/dashboard", "/tasks/dashboard/runs", "/tasks/dashboard/schedules"):
        page = client.get(path, headers=gzip_only)
        assert page.headers.get("content-encoding") == "gzip", path
        assert page.num_bytes_downloaded * 2 < len(page.content), path
        assert "Accept-Encoding" in page.headers["vary"]
    fragment = client.get(live_url(client.get("/tasks/dashboard/runs").text, "runs-table") + "x")
    assert fragment.status_code == 200 and fragment.headers["content-encoding"] == "gzip"
    script = client.get("/tasks/dashboard/static/htmx.min.js", headers=gzip_only)
    assert script.headers["content-encoding"] == "gzip"
    assert script.num_bytes_downloaded < 20_000 < len(script.content)
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    plain = client.get(
        "/tasks/dashboard/static/htmx.min.js", headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers and plain.content == script.content
    refused = client.get("/tasks/dashboard/runs", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    assert "content-encoding" not in client.get("/big", headers=gzip_only).headers
    stream = client.get("/events", headers=gzip_only)
    assert "content-encoding" not in stream.headers and stream.text.count("data: 1") == 200


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
