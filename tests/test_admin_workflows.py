"""The Workflows pages, their JSON twin, cancelling a workflow and running its failed
steps again from the dashboard, and a task page's place in its workflow, over HTTP on
SQLite and PostgreSQL."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from taskflow import step
from tests.admin_support import (
    admin_fail,
    admin_ok,
    admin_slow,
    build,
    call,
    csrf,
    login,
    wait_status,
)

USERS = [("admin", "pw"), ("viewer", "look", "read-only")]


@pytest.fixture
def env(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        built.client = client
        assert login(client).status_code == 303
        yield built


def test_the_workflows_pages_and_api_show_each_step_and_its_place(env):
    client, manager = env.client, env.manager
    flow = call(client, manager.chain, step(admin_ok, 1), step(admin_ok, 2), name="nightly")
    for task_id in flow.task_ids:
        wait_status(client, manager, task_id)

    listed = client.get("/tasks/workflows").json()
    assert [(w["id"], w["name"], w["status"], w["ended"], w["total"]) for w in listed] == [
        (flow.id, "nightly", "success", 2, 2)
    ]
    one = client.get(f"/tasks/workflows/{flow.id}").json()
    assert one["task_ids"] == list(flow.task_ids) and one["kind"] == "chain"
    assert client.get("/tasks/workflows/nope").status_code == 404

    page = client.get("/tasks/dashboard/workflows")
    assert page.status_code == 200 and 'aria-current="page">Workflows</a>' in page.text
    assert f'data-workflow="{flow.id}"' in page.text and "nightly" in page.text
    detail = html.unescape(client.get(f"/tasks/dashboard/workflows/{flow.id}").text)
    first, second = flow.task_ids
    assert f'data-task="{first}"' in detail and f'data-task="{second}"' in detail
    assert "2 of 2 steps ended" in detail
    assert client.get("/tasks/dashboard/workflows/nope").status_code == 404

    first_page = html.unescape(client.get(f"/tasks/dashboard/runs/{first}").text)
    assert 'id="task-workflow"' in first_page and "nightly" in first_page
    assert 'id="task-downstream">then' in first_page and second in first_page
    second_page = html.unescape(client.get(f"/tasks/dashboard/runs/{second}").text)
    assert 'id="task-upstream">after' in second_page and first in second_page


def test_a_blocked_task_says_what_it_waits_for_and_can_be_cancelled_with_its_workflow(env):
    client, manager = env.client, env.manager
    flow = call(client, manager.chain, step(admin_slow, 30), step(admin_ok, 1))
    slow, waiting = flow.task_ids
    wait_status(client, manager, slow, "running")
    page = html.unescape(client.get(f"/tasks/dashboard/runs/{waiting}").text)
    assert "Waiting: for 1 of its 1 dependencies to end" in page
    assert 'id="task-upstream">waits for' in page
    assert "/cancel" in page  # a blocked task can be cancelled

    running = client.post(f"/tasks/workflows/{flow.id}/retry", headers=csrf(client))
    assert running.status_code == 409 and "still running" in running.json()["detail"]
    detail = client.get(f"/tasks/dashboard/workflows/{flow.id}").text
    assert f"/tasks/dashboard/workflows/{flow.id}/cancel" in detail
    cancelled = client.post(
        f"/tasks/dashboard/workflows/{flow.id}/cancel",
        headers=csrf(client),
        follow_redirects=False,
    )
    assert cancelled.status_code == 303
    assert [wait_status(client, manager, i).status.value for i in flow.task_ids] == [
        "cancelled",
        "cancelled",
    ]
    assert "Cancelled 2 tasks." in client.get(f"/tasks/dashboard/workflows/{flow.id}").text
    audit = client.get("/tasks/audit").json()
    assert (audit[0]["action"], audit[0]["target"]) == ("cancel_workflow", flow.id)
    assert f"/tasks/dashboard/workflows/{flow.id}" in client.get("/tasks/dashboard/audit").text


def test_retrying_failed_steps_from_the_api_and_the_read_only_user_cannot(env):
    client, manager = env.client, env.manager
    flow = call(
        client, manager.group, [step(admin_fail, 1), step(admin_ok, 2)], then=step(admin_ok, 3)
    )
    assert wait_status(client, manager, flow.last_id, timeout=20).status.value == "cancelled"
    page = client.get(f"/tasks/dashboard/workflows/{flow.id}").text
    assert f"/tasks/dashboard/workflows/{flow.id}/retry" in page

    retried = client.post(f"/tasks/workflows/{flow.id}/retry", headers=csrf(client))
    assert retried.status_code == 200
    copies = retried.json()["retried_as"]
    assert len(copies) == 2  # the failed member and the callback it cancelled
    assert wait_status(client, manager, copies[0], timeout=20).status.value == "failed"
    assert wait_status(client, manager, copies[1]).status.value == "cancelled"
    assert client.get(f"/tasks/workflows/{flow.id}").json()["total"] == 3  # copies count

    client.post("/tasks/auth/logout", headers=csrf(client))
    assert login(client, "viewer", "look").status_code == 303
    assert "/retry" not in client.get(f"/tasks/dashboard/workflows/{flow.id}").text
    headers = csrf(client)
    assert client.post(f"/tasks/workflows/{flow.id}/cancel", headers=headers).status_code == 403
    assert client.post(f"/tasks/workflows/{flow.id}/retry", headers=headers).status_code == 403
