"""Startup, shutdown, rescue after a crash, process tasks and retention."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import DatabaseError, DatabaseUnavailable, SchemaOutOfDate, TaskManager, task_log
from taskflow._engine.retention import run_if_due
from tests.apps import tasks as app_tasks
from tests.conftest import abandon, wait_for_status

pytestmark = pytest.mark.anyio


async def test_shutdown_settles_running_tasks_by_their_rerun_flag(manager_factory):
    first = manager_factory(shutdown_timeout=0.2)
    started = asyncio.Event()

    def declare(manager: TaskManager) -> None:
        @manager.task(requeue_on_interrupt=True)
        async def rerunnable() -> str:
            started.set()
            await asyncio.sleep(3600 if manager is first else 0)
            return "finished"

        @manager.task()
        async def not_rerunnable() -> str:
            started.set()
            await asyncio.sleep(3600)
            return "never"

        manager.registered = (rerunnable, not_rerunnable)

    declare(first)
    await first.startup()
    again = await first.enqueue(first.registered[0])
    lost = await first.enqueue(first.registered[1])
    await wait_for_status(first, again, "running")
    await wait_for_status(first, lost, "running")
    await first.shutdown()

    second = manager_factory()
    declare(second)
    await second.startup()
    rerun = await wait_for_status(second, again)
    assert (rerun.status, rerun.result, rerun.attempts) == ("success", "finished", 2)
    assert rerun.history[0].status == "interrupted"
    interrupted = await second.get_task(lost)
    assert interrupted.status == "interrupted"
    assert "shut down" in interrupted.error


async def test_pending_tasks_survive_shutdown_and_run_on_next_start(manager_factory):
    first = manager_factory()
    first.task()(app_tasks.add)
    await first.startup()
    task_id, write, _ = first.submit(app_tasks.add, (2, 2), {})
    await write  # stored, never released: as if the response was still being sent
    await first.shutdown()
    assert (await _status(first, task_id)) == "pending"
    second = manager_factory()
    second.task()(app_tasks.add)
    await second.startup()
    assert (await wait_for_status(second, task_id)).result == 4


async def _status(manager: TaskManager, task_id: str) -> str:
    engine = create_async_engine(manager._engine.url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(
                sa.text("SELECT status FROM taskflow_tasks WHERE id=:i"), {"i": task_id}
            )
    finally:
        await engine.dispose()


async def test_tasks_of_a_dead_process_are_rescued_at_start(manager_factory, db_url):
    crashed = manager_factory()
    crashed.task(requeue_on_interrupt=True)(app_tasks.add)
    await crashed.startup()
    task_id, write, _ = crashed.submit(app_tasks.add, (1, 1), {})
    await write
    # Simulate kill -9: the instance row stays, with a pid that no longer exists.
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE taskflow_instances SET pid = 999999999"))
    await engine.dispose()
    await abandon(crashed)
    survivor = manager_factory()
    survivor.task(requeue_on_interrupt=True)(app_tasks.add)
    await survivor.startup()
    assert (await wait_for_status(survivor, task_id)).result == 2


async def test_process_task_runs_in_another_process_and_logs(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(app_tasks.process_info)
    await manager.startup()
    task_id = await manager.enqueue(app_tasks.process_info, 21)
    record = await wait_for_status(manager, task_id, timeout=60)
    assert record.status == "success", record.error
    assert record.result["value"] == 42 and record.result["attempt"] == 0
    assert record.result["pid"] != os.getpid()
    deadline = asyncio.get_running_loop().time() + 10
    while not (await manager.get_task(task_id)).logs:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert (await manager.get_task(task_id)).logs[0].message == "in a worker process"


async def test_process_task_sees_cancellation(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(app_tasks.process_until_cancelled)
    await manager.startup()
    task_id = await manager.enqueue(app_tasks.process_until_cancelled)
    await wait_for_status(manager, task_id, "running", timeout=60)
    await manager.cancel(task_id)
    record = await wait_for_status(manager, task_id, timeout=30)
    assert (record.status, record.result) == ("cancelled", "stopped")


async def test_log_lines_are_visible_while_the_task_runs(manager_factory):
    manager = manager_factory()
    release = asyncio.Event()

    @manager.task()
    async def step_by_step() -> None:
        task_log("step one")
        await release.wait()

    await manager.startup()
    task_id = await manager.enqueue(step_by_step)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        record = await manager.get_task(task_id)
        if record.logs:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert record.status == "running"
    release.set()
    await wait_for_status(manager, task_id)


async def test_retention_prunes_old_final_tasks_only(manager_factory, db_url):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    old = await manager.enqueue(app_tasks.add, 1, 1)
    recent = await manager.enqueue(app_tasks.add, 2, 2)
    await wait_for_status(manager, old)
    await wait_for_status(manager, recent)
    long_ago = datetime.now(UTC) - timedelta(days=10)
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        value = long_ago.replace(tzinfo=None) if db_url.startswith("sqlite") else long_ago
        await conn.execute(
            sa.text("UPDATE taskflow_tasks SET finished_at=:t WHERE id=:i"), {"t": value, "i": old}
        )
    await engine.dispose()
    assert await run_if_due(manager.db, days=7, interval=3600) == 1
    assert await manager.get_task(old) is None
    assert await manager.get_task(recent) is not None
    assert await run_if_due(manager.db, days=7, interval=3600) == 0  # not due again yet
    assert await manager.db.get_meta("retention.last_run") is not None


async def test_unreachable_database_names_the_masked_url():
    manager = TaskManager(database_url="postgresql+asyncpg://user:secret@127.0.0.1:1/none")
    with pytest.raises(DatabaseError) as caught:
        await manager.startup()
    assert "127.0.0.1:1" in str(caught.value) and "secret" not in str(caught.value)


async def test_a_startup_that_fails_half_way_can_be_retried(tmp_path):
    """A SQLite file locked by another process past the busy timeout while the manager
    registers itself: startup raises DatabaseUnavailable and leaves nothing started;
    once the lock is gone, the same manager starts and runs tasks."""
    path = tmp_path / "tasks.db"
    first = TaskManager(database_url=f"sqlite:///{path}")
    await first.startup()  # creates the schema
    await first.shutdown()
    manager = TaskManager(database_url=f"sqlite:///{path}?timeout=0.5")
    manager.task()(app_tasks.add)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable, match="locked"):
            await manager.startup()
        assert not manager.started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await manager.startup()
    try:
        assert (
            await wait_for_status(manager, await manager.enqueue(app_tasks.add, 1, 2))
        ).result == 3
    finally:
        await manager.shutdown()


async def test_stale_schema_is_refused_with_the_command(tmp_path):
    manager = TaskManager(database_url=f"sqlite:///{tmp_path}/fresh.db", auto_upgrade=False)
    with pytest.raises(SchemaOutOfDate, match="taskflow db upgrade --url"):
        await manager.startup()


async def test_sqlite_auto_upgrades_by_default(tmp_path):
    manager = TaskManager(snapshot_db=str(tmp_path / "tasks.db"))
    manager.task()(app_tasks.add)
    await manager.startup()
    try:
        assert (
            await wait_for_status(manager, await manager.enqueue(app_tasks.add, 3, 4))
        ).result == 7
    finally:
        await manager.shutdown()


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url"])
def test_unsupported_url_fails_at_construction(url):
    with pytest.raises(ValueError):
        TaskManager(database_url=url)


async def _coroutine_function() -> None:
    return None


@pytest.mark.parametrize(
    "executor, func",
    [
        ("async", app_tasks.add),
        ("thread", _coroutine_function),
        ("process", lambda: None),
        ("fiber", app_tasks.add),
    ],
)
def test_incompatible_executor_is_refused_at_decoration(executor, func):
    with pytest.raises(ValueError, match="executor"):
        TaskManager().task(executor=executor)(func)
