"""Unique tasks (``unique_for=``): a repeated enqueue within the window returns the first
task, on SQLite and PostgreSQL (the store on both, and in memory), through ``enqueue``,
the decorator, ``ManagedBackgroundTasks`` over HTTP, and from several real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from taskflow import TaskManager
from taskflow._engine.job import clock_offset, set_clock_offset
from taskflow._store.rows import NewTask
from taskflow.errors import ConfigurationError, QueueFullError
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status, wait_until
from tests.store_support import T0, new_task

STATES = ("pending", "running", "success")
ROOT = Path(__file__).resolve().parent.parent


# -- the store: SQLite, PostgreSQL and memory -------------------------------------------


def unique_task(seconds: float = 0, *, key: str = "k", **changes: Any) -> NewTask:
    """A task with unique key ``key`` created ``seconds`` after ``T0``."""
    created = T0 + timedelta(seconds=seconds)
    return new_task(created_at=created, next_attempt_at=created, unique_key=key, **changes)


@pytest.mark.anyio
async def test_store_returns_the_task_of_the_window_then_inserts_after_it(open_store):
    store = await open_store()
    window = timedelta(seconds=60)
    first = unique_task(0)
    assert await store.insert_unique_task(first, window=window, states=STATES) == first.id
    again = unique_task(60)  # the window includes its start
    assert await store.insert_unique_task(again, window=window, states=STATES) == first.id
    other_key = unique_task(30, key="other")
    assert await store.insert_unique_task(other_key, window=window, states=STATES) == other_key.id
    later = unique_task(61)
    assert await store.insert_unique_task(later, window=window, states=STATES) == later.id
    stored = {task.id for task in await store.list_tasks(limit=None)}
    assert stored == {first.id, other_key.id, later.id}
    assert (await store.get_task(later.id)).unique_key == "k"
    assert await store.get_task(again.id) is None


@pytest.mark.anyio
async def test_store_counts_only_tasks_in_the_given_states(open_store):
    store = await open_store()
    window = timedelta(hours=1)
    first = unique_task(0)
    await store.insert_unique_task(first, window=window, states=STATES)
    since = T0 - window
    assert await store.find_unique_task("k", since=since, states=("pending",)) == first.id
    assert await store.find_unique_task("k", since=since, states=("running",)) is None
    assert await store.find_unique_task("k", since=T0 + timedelta(seconds=1), states=STATES) is None
    running_only = unique_task(10)
    stored = await store.insert_unique_task(running_only, window=window, states=("running",))
    assert stored == running_only.id


@pytest.mark.anyio
async def test_store_keeps_a_promised_id_as_an_alias(open_store):
    store = await open_store()
    window = timedelta(minutes=5)
    first = unique_task(0)
    await store.insert_unique_task(first, window=window, states=STATES)
    promised = unique_task(1, promised=True)
    assert await store.insert_unique_task(promised, window=window, states=STATES) == first.id
    assert (await store.get_task(promised.id)).id == first.id


@pytest.mark.anyio
async def test_store_with_an_idempotency_key_returns_its_live_holder(open_store):
    store = await open_store()
    window = timedelta(minutes=5)
    holder = unique_task(0, key="a", idempotency_key="invoice-1")
    await store.insert_unique_task(holder, window=window, states=STATES)
    same_key = unique_task(1, key="b", idempotency_key="invoice-1")
    assert await store.insert_unique_task(same_key, window=window, states=STATES) == holder.id


@pytest.mark.anyio
async def test_store_concurrent_inserts_of_one_key_store_one_task(open_store):
    views = [await open_store() for _ in range(3)]
    window = timedelta(minutes=5)
    tasks = [unique_task(i / 100) for i in range(12)]
    stored = await asyncio.gather(
        *[
            views[i % 3].insert_unique_task(task, window=window, states=STATES)
            for i, task in enumerate(tasks)
        ]
    )
    assert len(set(stored)) == 1
    assert len(await views[0].list_tasks(limit=None)) == 1


# -- the manager: enqueue and the decorator ---------------------------------------------


@pytest.mark.anyio
async def test_a_repeated_enqueue_returns_the_first_task_and_runs_once(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    first = await manager.enqueue(app_tasks.add, 1, 2, unique_for=60)
    assert await manager.enqueue(app_tasks.add, 1, 2, unique_for=60) == first
    keyword = await manager.enqueue(app_tasks.add, a=1, b=2, unique_for=60)
    assert keyword != first  # other arguments as far as the call is concerned
    assert await manager.enqueue(app_tasks.add, b=2, a=1, unique_for=60) == keyword
    other = await manager.enqueue(app_tasks.add, 2, 2, unique_for=60)
    assert other not in (first, keyword)
    assert (await wait_for_status(manager, first)).status.value == "success"
    # A finished task still blocks by default.
    assert await manager.enqueue(app_tasks.add, 1, 2, unique_for=60) == first
    assert len(await manager.list_tasks()) == 3
    assert (await manager.get_task(first)).attempts == 1


@pytest.mark.anyio
async def test_after_the_window_a_new_task_is_stored(manager_factory):
    manager = manager_factory()
    manager.task(unique_for=timedelta(minutes=10))(app_tasks.add)
    await manager.startup()
    first = await manager.enqueue(app_tasks.add, 1, 2)
    assert await manager.enqueue(app_tasks.add, 1, 2) == first
    before = clock_offset()
    set_clock_offset(before + timedelta(minutes=10, seconds=1))  # the engine's clock
    try:
        later = await manager.enqueue(app_tasks.add, 1, 2)
    finally:
        set_clock_offset(before)
    assert later != first
    assert len(await manager.list_tasks()) == 2


@pytest.mark.anyio
async def test_a_failed_task_does_not_block_by_default(manager_factory):
    manager = manager_factory()

    @manager.task(unique_for=60)
    async def boom(n: int) -> None:
        raise RuntimeError(f"no {n}")

    await manager.startup()
    first = await manager.enqueue(boom, 1)
    assert (await wait_for_status(manager, first)).status.value == "failed"
    second = await manager.enqueue(boom, 1)
    assert second != first
    # The states may be given per call: a failed task blocks when they say so.
    await wait_for_status(manager, second)
    assert await manager.enqueue(boom, 1, unique_states=("failed",)) in (first, second)


@pytest.mark.anyio
async def test_custom_states_let_a_finished_task_not_block(manager_factory):
    manager = manager_factory()
    manager.task(unique_for=3600, unique_states=("pending",))(app_tasks.add)
    await manager.startup()
    first = await manager.enqueue(app_tasks.add, 1, 2)
    await wait_for_status(manager, first)
    second = await manager.enqueue(app_tasks.add, 1, 2)
    assert second != first
    # Per call, the decorator's states can be widened back.
    await wait_for_status(manager, second)
    assert await manager.enqueue(app_tasks.add, 1, 2, unique_states=STATES) in (first, second)


@pytest.mark.anyio
async def test_per_call_window_overrides_and_tasks_without_it_are_not_unique(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    plain = [await manager.enqueue(app_tasks.add, 1, 2) for _ in range(2)]
    assert plain[0] != plain[1]
    for task_id in plain:
        assert (await manager.get_task(task_id)) is not None
    unique = await manager.enqueue(app_tasks.add, 1, 2, unique_for=timedelta(seconds=30))
    assert unique not in plain  # earlier tasks without unique_for have no unique key
    assert await manager.enqueue(app_tasks.add, 1, 2, unique_for=30.5) == unique


@pytest.mark.anyio
async def test_encrypted_arguments_still_dedupe(manager_factory):
    manager = manager_factory(encrypt_args_key=Fernet.generate_key())
    manager.task(unique_for=60)(app_tasks.add)
    await manager.startup()
    first = await manager.enqueue(app_tasks.add, 1, 2)
    assert await manager.enqueue(app_tasks.add, 1, 2) == first
    assert await manager.enqueue(app_tasks.add, 1, 3) != first
    rows = await manager.db.list_tasks()
    assert len(rows) == 2
    assert all(row.encrypted and "[1" not in row.payload for row in rows)


@pytest.mark.anyio
async def test_idempotency_key_gives_the_unique_key(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    await manager.pause_queue("default")
    first = await manager.enqueue(app_tasks.add, 1, 2, idempotency_key="inv-1", unique_for=60)
    # Same key, other arguments: the same task (the key, not the arguments, is matched).
    assert await manager.enqueue(app_tasks.add, 5, 5, idempotency_key="inv-1", unique_for=60) == (
        first
    )
    await manager.cancel(first)
    # The key is free again (cancelled), and a cancelled task does not block either.
    second = await manager.enqueue(app_tasks.add, 1, 2, idempotency_key="inv-1", unique_for=60)
    assert second != first
    keys = {(await manager.db.get_task(task_id)).unique_key for task_id in (first, second)}
    assert len(keys) == 1 and None not in keys


@pytest.mark.anyio
async def test_a_full_queue_returns_the_existing_unique_task(manager_factory):
    manager = manager_factory(max_size=1)
    manager.task(unique_for=60)(app_tasks.add)
    await manager.startup()
    await manager.pause_queue("default")  # the tasks stay waiting
    first = await manager.enqueue(app_tasks.add, 1, 2)
    assert await manager.enqueue(app_tasks.add, 1, 2) == first
    with pytest.raises(QueueFullError):
        await manager.enqueue(app_tasks.add, 3, 4)
    assert await manager.enqueue(app_tasks.add, 1, 2) == first


BAD_VALUES: list[dict[str, Any]] = [
    {"unique_for": 0},
    {"unique_for": -5},
    {"unique_for": timedelta(0)},
    {"unique_for": "60"},
    {"unique_for": True},
    {"unique_for": float("nan")},
    {"unique_for": 60, "unique_states": ()},
    {"unique_for": 60, "unique_states": ("pending", "done")},
    {"unique_for": 60, "unique_states": "pending"},
    {"unique_states": ("pending",)},
]


@pytest.mark.anyio
@pytest.mark.parametrize("options", BAD_VALUES, ids=repr)
async def test_bad_values_raise_and_store_nothing(manager_factory, options):
    manager = manager_factory()
    with pytest.raises(ConfigurationError, match="unique_"):
        manager.task(**options)(app_tasks.add)
    manager.task()(app_tasks.add)
    await manager.startup()
    with pytest.raises(ConfigurationError, match="unique_"):
        await manager.enqueue(app_tasks.add, 1, 2, **options)
    assert await manager.list_tasks() == []


# -- ManagedBackgroundTasks over HTTP ---------------------------------------------------


def build_unique_app(url: str) -> tuple[FastAPI, TaskManager]:
    task_manager = TaskManager(database_url=url, poll_interval=0.05)
    app = FastAPI()
    task_manager.task()(app_tasks.add)

    @app.post("/async-refresh/{n}")
    async def async_refresh(n: int, tasks=Depends(task_manager.get_tasks)):
        return {"task_id": tasks.add_task(app_tasks.add, n, 1, unique_for=60)}

    @app.post("/sync-refresh/{n}")
    def sync_refresh(n: int, tasks=Depends(task_manager.get_tasks)):
        return {"task_id": tasks.add_task(app_tasks.add, n, 1, unique_for=60)}

    @app.post("/twice/{n}")
    async def twice(n: int, tasks=Depends(task_manager.get_tasks)):
        ids = [tasks.add_task(app_tasks.add, n, 1, unique_for=60) for _ in range(2)]
        return {"task_ids": ids}

    @app.post("/bad")
    async def bad(tasks=Depends(task_manager.get_tasks)):
        try:
            tasks.add_task(app_tasks.add, 1, 1, unique_for=-1)
        except ConfigurationError as exc:
            return {"error": str(exc)}
        return {"error": None}

    @app.get("/report/{task_id}")
    def report(task_id: str):
        record = task_manager.store.get(task_id)
        return None if record is None else record.to_dict()

    task_manager.init_app(app)
    return app, task_manager


@pytest.mark.parametrize("route", ["/async-refresh", "/sync-refresh"])
def test_add_task_in_a_request_returns_the_first_task(db_url, db, route):
    app, _ = build_unique_app(db_url)
    with TestClient(app) as client:
        ids = {client.post(f"{route}/7").json()["task_id"] for _ in range(4)}
        assert len(ids) == 1
        first = ids.pop()
        wait_until(
            lambda: (client.get(f"/report/{first}").json() or {}).get("status") == "success",
            what="the unique task to finish",
        )
        assert client.post(f"{route}/7").json()["task_id"] == first
        assert client.post(f"{route}/8").json()["task_id"] != first
        both = client.post("/twice/9").json()["task_ids"]
        assert both[0] == both[1]
        assert "unique_for" in client.post("/bad").json()["error"]
    rows = db.tasks()
    assert len(rows) == 3
    assert rows[first]["attempts"] == 1


# -- several processes ------------------------------------------------------------------

CHILD = """
import asyncio, os, sys, time
from taskflow import TaskManager
from tests.apps import tasks as app_tasks

async def main(url, directory, index):
    manager = TaskManager(database_url=url, poll_interval=0.05)
    manager.task()(app_tasks.add)
    await manager.startup()
    try:
        open(os.path.join(directory, f"ready-{index}"), "w").close()
        go = os.path.join(directory, "go")
        deadline = time.monotonic() + 120
        while not os.path.exists(go):  # the barrier: every process enqueues at once
            assert time.monotonic() < deadline, "no go"
            await asyncio.sleep(0.002)
        ids = await asyncio.gather(*[
            manager.enqueue(app_tasks.add, 1, 2, unique_for=600, queue="nobody-runs-it")
            for _ in range(5)
        ])
        print(" ".join(ids), flush=True)
    finally:
        await manager.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


@pytest.mark.slow
def test_processes_enqueueing_one_unique_task_at_once_store_one_row(db_url, db, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    count = 4
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, db_url, str(tmp_path), str(index)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(count)
    ]
    try:
        wait_until(
            lambda: (
                all((tmp_path / f"ready-{i}").exists() for i in range(count))
                or any(child.poll() is not None for child in children)
            ),
            timeout=120,
            what="every process to start",
        )
        (tmp_path / "go").touch()
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    ids = {task_id for out, _err in outputs for task_id in out.split()}
    assert len(ids) == 1
    rows = db.tasks()
    assert list(rows) == list(ids)
