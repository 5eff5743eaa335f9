"""TaskAdmin's JSON API over HTTP, on SQLite and PostgreSQL: fastapi-taskflow's routes
and shapes, pagination and filters, actions with their audit entries, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.admin_support import (
    admin_fail,
    admin_ok,
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
    built = build(db_url, display_func_args=True)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def enqueue(env, func, *args, **kwargs):
    return call(env.client, env.manager.enqueue, func, *args, **kwargs)


def audit_actions(env):
    return [(entry["action"], entry["target"]) for entry in env.client.get("/tasks/audit").json()]


def test_list_get_and_metrics_shapes(env):
    client = env.client
    ok_id = enqueue(env, admin_ok, 3, password="s3cret")
    wait_status(client, env.manager, ok_id)
    listed = client.get("/tasks").json()
    assert [item["task_id"] for item in listed] == [ok_id]
    item = listed[0]
    for key in (
        "func_name",
        "status",
        "args",
        "kwargs",
        "created_at",
        "duration",
        "tags",
        "source",
    ):
        assert key in item
    assert item["kwargs"] == {"password": "••••••"}  # display_func_args, but redacted
    assert item["result"] == {"x": 3, "api_token": "••••••"}
    detail = client.get(f"/tasks/{ok_id}").json()
    assert detail["status"] == "success"
    assert detail["args"] == [3]
    assert any("working" in line for line in detail["logs"])
    assert client.get("/tasks/nope").status_code == 404
    metrics = client.get("/tasks/metrics").json()
    assert metrics["total"] == 1 and metrics["success"] == 1
    assert metrics["success_rate"] == 1.0
    assert metrics["capped"] is False
    assert {"pending", "running", "failed", "interrupted", "avg_duration_seconds"} <= set(metrics)


def test_arguments_hidden_without_display_func_args(db_url):
    built = build(db_url)
    with TestClient(built.app) as client:
        task_id = call(client, built.manager.enqueue, admin_ok, 1)
        wait_status(client, built.manager, task_id)
        body = client.get(f"/tasks/{task_id}").json()
        assert body["args"] is None and body["kwargs"] is None
        assert client.get("/tasks").json()[0]["args"] is None
        page = client.get(f"/tasks/dashboard/runs/{task_id}").text
        assert "hunter2" not in page and "display_func_args=True" in page


def test_list_pagination_filters_and_capped_total(env):
    client = env.client
    base = datetime.now(UTC) - timedelta(minutes=5)
    rows = [task_row(created_at=base + timedelta(seconds=i)) for i in range(12)]
    rows += [
        task_row(
            status="failed", func_name="admin_fail", error="Boom", tags={"k": "v"}, created_at=base
        )
    ]
    call(client, insert_rows, env.manager, rows)
    first = client.get("/tasks", params={"limit": 5})
    assert first.status_code == 200
    assert len(first.json()) == 5
    assert first.headers["X-Total-Count"] == "13"
    seen = [item["task_id"] for item in first.json()]
    cursor = first.headers["X-Next-Cursor"]
    while cursor:
        page = client.get("/tasks", params={"limit": 5, "after": cursor})
        seen += [item["task_id"] for item in page.json()]
        cursor = page.headers.get("X-Next-Cursor")
    assert sorted(seen) == sorted(row["id"] for row in rows)
    assert len(seen) == len(set(seen))

    failed = client.get("/tasks", params={"status": "failed"}).json()
    assert [item["task_id"] for item in failed] == [rows[-1]["id"]]
    assert client.get("/tasks", params={"tag": "k=v"}).json()[0]["task_id"] == rows[-1]["id"]
    assert client.get("/tasks", params={"q": "boom"}).json()[0]["task_id"] == rows[-1]["id"]
    assert client.get("/tasks", params={"func_name": "admin_fail"}).headers["X-Total-Count"] == "1"
    assert client.get("/tasks", params={"since": "1m"}).json() == []
    assert client.get("/tasks", params={"status": "bogus"}).status_code == 400
    assert client.get("/tasks", params={"since": "yesterday"}).status_code == 400
    assert client.get("/tasks", params={"after": "garbage"}).status_code == 400

    env.admin.count_cap = 10
    assert client.get("/tasks", params={"limit": 1}).headers["X-Total-Count"] == "10+"
    metrics = client.get("/tasks/metrics").json()  # exact, whatever the lists' cap
    assert metrics["capped"] is False and metrics["total"] == len(rows)


def test_retry_cancel_delete_and_audit(env):
    client = env.client
    headers = csrf(client)
    failed_id = enqueue(env, admin_fail, 1)
    wait_status(client, env.manager, failed_id)

    retried = client.post(f"/tasks/{failed_id}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    new_id = retried.json()["task_id"]
    assert new_id != failed_id and retried.json()["task"]["source"] == "retry"
    ok_id = enqueue(env, admin_ok)
    wait_status(client, env.manager, ok_id)
    assert client.post(f"/tasks/{ok_id}/retry", headers=headers).status_code == 400
    assert client.post("/tasks/unknown/retry", headers=headers).status_code == 404

    parked = enqueue(env, admin_parked)  # its queue is not served here: it stays pending
    cancelled = client.post(f"/tasks/{parked}/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["task"]["status"] == "cancelled"
    assert client.post(f"/tasks/{parked}/cancel", headers=headers).status_code == 400

    assert client.delete(f"/tasks/{parked}", headers=headers).json()["deleted"] is True
    assert client.get(f"/tasks/{parked}").status_code == 404
    assert audit_actions(env)[:3] == [
        ("delete", parked),
        ("cancel", parked),
        ("retry", failed_id),
    ]


def test_bulk_retry_and_retry_failed(env):
    client = env.client
    headers = csrf(client)
    failed = [enqueue(env, admin_fail, n) for n in range(3)]
    ok_id = enqueue(env, admin_ok)
    for task_id in [*failed, ok_id]:
        wait_status(client, env.manager, task_id)

    bulk = client.post("/tasks/bulk-retry", json={"task_ids": [failed[0], ok_id]}, headers=headers)
    assert bulk.json()["dispatched"] == 1 and bulk.json()["skipped"] == 1
    assert bulk.json()["results"][0]["original_task_id"] == failed[0]
    bare = client.post("/tasks/bulk-retry", json=[failed[1]], headers=headers)
    assert bare.json()["dispatched"] == 1

    other = client.post(
        "/tasks/retry-failed", params={"since": "1h", "func_name": "nothing"}, headers=headers
    )
    assert other.json() == {"dispatched": 0, "skipped": 0, "results": []}
    everything = client.post("/tasks/retry-failed", params={"since": "all"}, headers=headers)
    originals = {item["original_task_id"] for item in everything.json()["results"]}
    assert failed[2] in originals  # the two retried already are resolved: left alone
    assert not {failed[0], failed[1]} & originals
    assert (
        client.post("/tasks/retry-failed", params={"since": "6x"}, headers=headers).status_code
        == 400
    )


def test_a_replay_records_the_new_ids_with_the_originals(env):
    client = env.client
    headers = csrf(client)
    failed = [enqueue(env, admin_fail, n) for n in range(2)]
    for task_id in failed:
        wait_status(client, env.manager, task_id)
    chosen = client.post("/tasks/bulk-retry", json=[failed[0]], headers=headers).json()
    entry = client.get("/tasks/audit").json()[0]
    assert entry["action"] == "replay" and entry["target"] == "selection"
    assert entry["detail"]["task_ids"] == [failed[0]]
    assert entry["detail"]["new_task_ids"] == [chosen["results"][0]["new_task_id"]]

    matching = client.post("/tasks/retry-failed", params={"since": "all"}, headers=headers)
    pairs = {item["original_task_id"]: item["new_task_id"] for item in matching.json()["results"]}
    entry = client.get("/tasks/audit").json()[0]
    assert entry["target"] == "filter" and entry["detail"]["dispatched"] == len(pairs)
    recorded = dict(zip(entry["detail"]["task_ids"], entry["detail"]["new_task_ids"], strict=True))
    assert recorded == pairs and failed[1] in recorded


def test_run_now_becomes_the_schedules_last_run(env):
    client = env.client
    headers = csrf(client)
    first = client.post("/tasks/schedules/hourly_report/trigger", headers=headers).json()
    second = client.post("/tasks/schedules/hourly_report/trigger", headers=headers).json()
    listed = client.get("/tasks/schedules").json()[0]
    assert listed["last_task_id"] == second["task_id"] != first["task_id"]
    assert listed["last_run_at"] is not None and listed["last_status"] is not None


def test_delete_history(env):
    client = env.client
    old = datetime.now(UTC) - timedelta(days=3)
    rows = [task_row(created_at=old) for _ in range(3)] + [
        task_row(status="pending", created_at=old)
    ]
    rows.append(task_row())
    call(client, insert_rows, env.manager, rows)
    headers = csrf(client)
    assert (
        client.delete(
            "/tasks/history", params={"value": 1, "unit": "week"}, headers=headers
        ).status_code
        == 400
    )
    deleted = client.delete("/tasks/history", params={"value": 1, "unit": "day"}, headers=headers)
    assert deleted.json() == {"deleted": 3, "store": 0, "backend": 3}
    remaining = {item["task_id"] for item in client.get("/tasks").json()}
    assert remaining == {rows[3]["id"], rows[4]["id"]}


def test_schedule_endpoints(env):
    client = env.client
    headers = csrf(client)
    listed = client.get("/tasks/schedules").json()
    assert [item["name"] for item in listed] == ["hourly_report"]
    assert listed[0]["dynamic"] is False and len(listed[0]["next_fire_times"]) == 3

    triggered = client.post("/tasks/schedules/hourly_report/trigger", headers=headers).json()
    assert wait_status(client, env.manager, triggered["task_id"]).source == "manual"
    assert (
        client.post("/tasks/schedules/hourly_report/pause", headers=headers).json()["enabled"]
        is False
    )
    assert (
        client.post("/tasks/schedules/hourly_report/resume", headers=headers).json()["enabled"]
        is True
    )
    assert client.delete("/tasks/schedules/hourly_report", headers=headers).status_code == 400
    assert client.post("/tasks/schedules/nope/trigger", headers=headers).status_code == 404

    body = {
        "task_group_name": "reports",
        "function_name": "admin_report",
        "cron_expression": "0 9 * * MON",
        "kwargs": {"team": "ops"},
        "name": "ops weekly",
    }
    created = client.post("/tasks/schedules", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["dynamic"] is True and created.json()["last_status"] is None
    assert client.post("/tasks/schedules", json=body, headers=headers).status_code == 409
    bad_kwargs = {**body, "name": "x", "kwargs": {"nope": 1}}
    assert client.post("/tasks/schedules", json=bad_kwargs, headers=headers).status_code == 422
    bad_cron = {**body, "name": "y", "cron_expression": "not cron"}
    assert client.post("/tasks/schedules", json=bad_cron, headers=headers).status_code == 422
    assert client.delete("/tasks/schedules/ops weekly", headers=headers).json()["deleted"] is True
    names = [item["name"] for item in client.get("/tasks/schedules").json()]
    assert names == ["hourly_report"]
    actions = [action for action, _ in audit_actions(env)]
    assert actions[:5] == ["delete_schedule", "create_schedule", "resume", "pause", "run_now"]


def test_mutations_refuse_cross_site_browsers(env):
    """Without auth, a browser's cross-site request is refused, token or not (curl-like
    requests without browser marks are accepted: tests/test_admin_api_compat.py)."""
    client = env.client
    failed_id = enqueue(env, admin_fail)
    wait_status(client, env.manager, failed_id)
    cross = {"Sec-Fetch-Site": "cross-site"}
    evil = {"Origin": "https://evil.example"}
    assert client.post(f"/tasks/{failed_id}/retry", headers=cross).status_code == 403
    forged = {**evil, "X-CSRF-Token": "forged"}
    assert client.post(f"/tasks/{failed_id}/retry", headers=forged).status_code == 403
    assert client.post("/tasks/schedules/hourly_report/pause", headers=evil).status_code == 403
    history = client.delete("/tasks/history", params={"value": 1, "unit": "day"}, headers=cross)
    assert history.status_code == 403
    assert audit_actions(env) == []


def test_openapi_lists_the_models(env):
    schema = env.client.get("/openapi.json").json()
    assert {"TaskOut", "MetricsOut", "ReplayOut", "ScheduleOut", "AuditOut"} <= set(
        schema["components"]["schemas"]
    )
    paths = schema["paths"]
    assert "/tasks/{task_id}/retry" in paths and "/tasks/bulk-retry" in paths
    assert not any(path.startswith("/tasks/dashboard") for path in paths)
