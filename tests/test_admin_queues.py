"""The Queues page, its JSON twin, pausing and resuming a queue from the dashboard, and
why a pending task waits, over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from taskflow._store.rows import InstanceRow
from tests.admin_support import (
    admin_ok,
    admin_parked,
    build,
    call,
    csrf,
    insert_rows,
    login,
    task_row,
    wait_status,
)

USERS = [("admin", "pw"), ("viewer", "look", "read-only")]


@pytest.fixture
def env(db_url):
    built = build(db_url, poll_interval=2.0)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def _parked(manager) -> set[str]:
    dispatcher = manager._engine.runtime.dispatcher
    return dispatcher.waiting_ids()


def test_queues_page_and_api_show_what_waits_and_who_serves_it(env):
    client, manager = env.client, env.manager
    unserved = call(client, manager.enqueue, admin_parked)  # "parked": nobody serves it
    now = datetime.now(UTC)
    later = task_row(status="pending", queue="default", created_at=now)
    later["next_attempt_at"] = now + timedelta(hours=2)
    done = task_row(status="success", queue="default", created_at=now - timedelta(seconds=2))
    call(client, insert_rows, manager, [later, done])

    queues = {q["name"]: q for q in client.get("/tasks/queues/overview").json()}
    parked = queues["parked"]
    assert (parked["pending"], parked["unserved"], parked["instances"]) == (1, True, [])
    assert parked["oldest_wait_seconds"] >= 0
    default = queues["default"]
    assert default["unserved"] is False and default["pending"] == 0
    assert default["deferred"] == 1
    assert datetime.fromisoformat(default["next_deferred_at"]) == later["next_attempt_at"]
    assert default["finished_last_5_minutes"] == 1
    assert [i["id"] for i in default["instances"]] == [manager.instance_id]
    assert "reports" not in queues or queues["reports"]["pending"] == 0
    assert client.get("/tasks/queues").json() == manager.queue_stats()  # unchanged

    page = client.get("/tasks/dashboard/queues")
    assert page.status_code == 200
    assert 'aria-current="page">Queues</a>' in page.text
    assert 'class="banner warn queue-unserved" role="alert" data-queue="parked"' in page.text
    assert 'data-queue="default"' in page.text and "no live instance" in page.text
    task_page = client.get(f"/tasks/dashboard/runs/{unserved}").text
    assert "queue <a" in task_page and "is not served by any live instance" in task_page
    deferred_page = client.get(f"/tasks/dashboard/runs/{later['id']}").text
    assert "Waiting: deferred until" in deferred_page
    assert "Waiting:" not in client.get(f"/tasks/dashboard/runs/{done['id']}").text


def test_a_due_task_of_a_served_queue_waits_for_a_free_slot(env):
    client, manager = env.client, env.manager
    now = datetime.now(UTC)
    other = InstanceRow(
        id="f" * 32,
        hostname="elsewhere",
        pid=os.getpid(),
        queues=["busy"],
        started_at=now,
        heartbeat_at=now + timedelta(minutes=5),  # live for the whole test
    )
    call(client, manager.db.register_instance, other)
    row = task_row(status="pending", queue="busy", created_at=now)
    row["owner"] = other.id  # held by the other instance, so this one does not claim it
    call(client, insert_rows, manager, [row])
    page = client.get(f"/tasks/dashboard/runs/{row['id']}").text
    assert "Waiting: waiting for a free slot" in page
    busy = next(q for q in client.get("/tasks/queues/overview").json() if q["name"] == "busy")
    assert [i["hostname"] for i in busy["instances"]] == ["elsewhere"]


def test_pausing_from_the_dashboard_holds_tasks_back_and_is_audited(db_url):
    built = build(db_url, auth=USERS)
    manager = built.manager
    with TestClient(built.app) as client:
        assert login(client).status_code == 303
        token = csrf(client)["X-CSRF-Token"]
        paused = client.post(
            "/tasks/dashboard/queues/default/pause",
            data={"csrf_token": token},
            follow_redirects=False,
        )
        assert paused.status_code == 303
        assert paused.headers["location"] == "/tasks/dashboard/queues"
        page = client.get("/tasks/dashboard/queues").text
        assert "Paused queue default" in page and "/tasks/dashboard/queues/default/resume" in page
        assert "by admin" in page

        task_id = call(client, manager.enqueue, admin_ok, 5)
        assert call(client, manager.coordinator.claim_now) == 0
        assert task_id in _parked(manager)
        task_page = html.unescape(client.get(f"/tasks/dashboard/runs/{task_id}").text)
        assert "is paused (by admin since" in task_page
        overview = {q["name"]: q for q in client.get("/tasks/queues/overview").json()}
        assert overview["default"]["paused"] is True
        assert overview["default"]["paused_by"] == "admin"

        resumed = client.post("/tasks/queues/default/resume", headers=csrf(client))
        assert resumed.json() == {"name": "default", "paused": False}
        assert wait_status(client, manager, task_id).status.value == "success"
        again = client.post("/tasks/queues/default/resume", headers=csrf(client))
        assert again.status_code == 404

        audit = client.get("/tasks/dashboard/audit").text
        assert ">pause queue</span>" in audit and ">resume queue</span>" in audit
        actions = [entry["action"] for entry in client.get("/tasks/audit").json()]
        assert actions[:2] == ["resume_queue", "pause_queue"]

        client.post("/tasks/auth/logout", headers=csrf(client))
        assert login(client, "viewer", "look").status_code == 303
        assert "/pause" not in client.get("/tasks/dashboard/queues").text
        headers = csrf(client)
        assert client.post("/tasks/queues/default/pause", headers=headers).status_code == 403
        form = client.post(
            "/tasks/dashboard/queues/default/pause", headers=headers, follow_redirects=False
        )
        assert form.status_code == 403
        assert call(client, manager.paused_queues) == []
