"""What each instance is running now (SQLite and PostgreSQL): the store's query, the
Instances page's list under each instance, and the ``owner`` filter of Runs and of the
JSON task list that its "+N more" link uses."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taskflow._store.dashboard import DashboardStore, TaskFilter
from taskflow._store.rows import InstanceRow
from tests.admin_support import AdminApp, build, call, insert_rows, task_row, wait_status

BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
OTHER = "e" * 32  # an instance id of another process

RELEASE = threading.Event()


def held_task(label: str = "") -> str:
    """Runs until the test sets :data:`RELEASE` (or 30 s pass)."""
    RELEASE.wait(30)
    return label


@pytest.fixture
def env(db_url: str) -> Iterator[AdminApp]:
    RELEASE.clear()
    built = build(db_url, poll_interval=2.0)
    built.manager.task()(held_task)
    try:
        with TestClient(built.app) as client:
            built.client = client  # type: ignore[attr-defined]
            yield built
            RELEASE.set()  # let the held task end before the manager shuts down
    finally:
        RELEASE.set()


def running_rows(owner: str, count: int, *, start: datetime) -> list[dict[str, Any]]:
    """``count`` running tasks held by ``owner``, started one second apart."""
    rows = []
    for index in range(count):
        row = task_row(status="running", created_at=start + timedelta(seconds=index))
        row["owner"] = owner
        rows.append(row)
    return rows


def instance_row(page: str, instance_id: str) -> str:
    """The markup of one instance's row on the Instances page."""
    match = re.search(rf'<tr[^>]*data-instance="{instance_id}".*?</tr>', page, re.DOTALL)
    assert match, f"no row for instance {instance_id}"
    return match.group(0)


@pytest.mark.anyio
async def test_running_tasks_of_each_instance_longest_first_and_capped(manager_factory):
    manager = manager_factory()
    await manager.startup()
    queries = DashboardStore(manager.db)
    mine = running_rows(OTHER, 12, start=BASE)
    alone = running_rows("f" * 32, 1, start=BASE)
    finished = task_row(status="success", created_at=BASE)
    finished["owner"] = OTHER
    await insert_rows(manager, [*mine, *alone, finished])

    found = await queries.running_tasks([OTHER, "f" * 32, "0" * 32], limit=10)

    assert set(found) == {OTHER, "f" * 32}  # an instance running nothing is left out
    assert [task.id for task in found[OTHER]] == [row["id"] for row in mine[:10]]
    assert [task.id for task in found["f" * 32]] == [alone[0]["id"]]
    assert await queries.running_tasks([], limit=10) == {}
    held = TaskFilter(statuses=("running",), owner=OTHER)
    assert await queries.count_tasks(held, cap=100) == 12
    page = await queries.page_tasks(held, limit=50)
    assert {row.id for row in page.rows} == {row["id"] for row in mine}
    assert await queries.count_tasks(TaskFilter(owner=OTHER), cap=100) == 13


def test_instances_page_lists_the_task_each_instance_is_running(env):
    client, manager = env.client, env.manager
    task_id = call(client, manager.enqueue, held_task, "held")
    wait_status(client, manager, task_id, "running")

    row = instance_row(client.get("/tasks/dashboard/instances").text, manager.instance_id)
    assert f'href="/tasks/dashboard/runs/{task_id}"' in row
    assert "held_task" in row
    assert re.search(r'class="elapsed" data-elapsed="\d+\.\d"', row)
    assert "more</a>" not in row

    listed = client.get("/tasks", params={"status": "running", "owner": manager.instance_id})
    assert [task["task_id"] for task in listed.json()] == [task_id]
    assert client.get("/tasks", params={"owner": OTHER}).json() == []

    RELEASE.set()
    wait_status(client, manager, task_id, "success")
    row = instance_row(client.get("/tasks/dashboard/instances").text, manager.instance_id)
    assert task_id not in row and "nothing" in row


def test_more_running_tasks_than_shown_link_to_the_instances_runs(env):
    client, manager = env.client, env.manager
    now = datetime.now(UTC)
    other = InstanceRow(
        id=OTHER,
        hostname="elsewhere",
        pid=4242,
        queues=["default"],
        started_at=now,
        heartbeat_at=now,
    )
    call(client, manager.db.register_instance, other)
    rows = running_rows(OTHER, 12, start=now - timedelta(minutes=5))
    call(client, insert_rows, manager, rows)

    row = instance_row(client.get("/tasks/dashboard/instances").text, OTHER)
    shown = re.findall(r'href="/tasks/dashboard/runs/([0-9a-f]+)"', row)
    assert shown == [task["id"] for task in rows[:10]]  # longest running first
    more = re.search(r'<a class="more-running" href="([^"]+)">\+2 more</a>', row)
    assert more, row
    link = html.unescape(more.group(1))
    assert link == f"/tasks/dashboard/runs?status=running&owner={OTHER}"

    runs = client.get(link).text
    listed = set(re.findall(r'<td class="fn"><a href="/tasks/dashboard/runs/([0-9a-f]+)"', runs))
    assert listed == {task["id"] for task in rows}
    assert f'name="owner" value="{OTHER}"' in runs  # kept when the form is applied
    assert "Filters (2 active)" in runs
