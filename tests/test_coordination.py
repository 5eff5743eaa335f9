"""Several instances on one database: queues, standalone workers, deferred tasks,
cancellation across processes and PostgreSQL notifications."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


async def test_tasks_on_a_queue_run_where_the_queue_is_served(manager_factory):
    web = manager_factory()
    worker = manager_factory(queues=("heavy",))
    for manager in (web, worker):
        manager.task(queue="heavy", name="heavy_add")(app_tasks.add)
    await web.startup()
    await worker.startup()
    task_id = await web.enqueue(app_tasks.add, 20, 22)
    record = await wait_for_status(web, task_id)
    assert (record.result, record.queue, record.owner) == (42, "heavy", worker.instance_id)


async def test_enqueue_to_another_queue_and_defer(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    elsewhere = await manager.enqueue(app_tasks.add, 1, 1, queue="reports")
    later = await manager.enqueue(app_tasks.add, 2, 2, defer=0.3)
    done = await wait_for_status(manager, later)
    assert done.result == 4
    assert (done.start_time - done.created_at).total_seconds() >= 0.3
    waiting = await manager.get_task(elsewhere)
    assert (waiting.status, waiting.owner) == ("pending", None)  # nobody serves "reports"
    with pytest.raises(ValueError, match="defer"):
        await manager.enqueue(app_tasks.add, 1, 1, defer=-1)


async def test_cancel_reaches_the_instance_running_the_task(manager_factory):
    runner = manager_factory()
    other = manager_factory()
    started = asyncio.Event()

    @runner.task(name="long")
    async def long_job() -> None:
        started.set()
        await asyncio.Event().wait()

    await runner.startup()
    await other.startup()
    task_id = await runner.enqueue(long_job)
    await started.wait()
    assert await other.cancel(task_id) is True
    record = await wait_for_status(other, task_id)
    assert record.status == "cancelled"


async def test_notifications_wake_instances_and_survive_a_lost_connection(manager_factory, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    web = manager_factory()
    worker = manager_factory(queues=("heavy",), poll_interval=60)  # polling cannot help
    for manager in (web, worker):
        manager.task(queue="heavy", name="heavy_add")(app_tasks.add)
    await web.startup()
    await worker.startup()
    first = await web.enqueue(app_tasks.add, 1, 2)
    assert (await wait_for_status(web, first, timeout=20)).result == 3
    await _terminate_listeners(db_url)
    second = await web.enqueue(app_tasks.add, 3, 4)
    assert (await wait_for_status(web, second, timeout=20)).result == 7


async def _terminate_listeners(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await engine.dispose()
    assert killed >= 1


@pytest.mark.slow
async def test_standalone_worker_runs_a_queue_the_web_app_does_not(
    manager_factory, db_url, tmp_path
):
    web = manager_factory()
    web.task(queue="heavy", name="crunch")(app_tasks.crunch)
    await web.startup()
    env = {**os.environ, "TASKFLOW_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskflow.cli",
                "worker",
                "tests.apps.worker_app:task_manager",
                "--queues",
                "heavy",
                "--concurrency",
                "4",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            task_id = await web.enqueue(app_tasks.crunch, 10)
            assert (await web.get_task(task_id)).owner is None  # web does not run "heavy"
            record = await wait_for_status(web, task_id, timeout=60)
            assert (record.status, record.result) == ("success", 45), log_path.read_text()
            assert record.owner != web.instance_id
            assert record.logs[0].message == "crunching"
        finally:
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, log_path.read_text()


def test_worker_command_reports_a_bad_target(capsys):
    from taskflow.cli import main

    assert main(["worker", "no_such_module:task_manager"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["worker", "os:path"]) == 2
    assert "not a TaskManager" in capsys.readouterr().err


def test_worker_command_needs_module_and_attribute(capsys):
    from taskflow.cli import main

    assert main(["worker", "tests.apps.tasks"]) == 2
    assert "module:attribute" in capsys.readouterr().err


async def test_tasks_an_instance_lost_track_of_are_settled(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    manager.task(requeue_on_interrupt=True, name="rerun_add")(app_tasks.crunch)
    await manager.startup()
    # Rows this instance owns in the database but never heard of: as if the replies
    # to its own commits had been lost.
    lost_pending = await _own_row(manager, app_tasks.add, (5, 5), status="pending")
    lost_running = await _own_row(manager, app_tasks.crunch, (4,), status="running")
    await manager.coordinator.reconcile()
    assert (await wait_for_status(manager, lost_pending)).result == 10
    rerun = await wait_for_status(manager, lost_running)
    assert (rerun.status, rerun.result) == ("success", 6)


async def _own_row(manager, func, args, *, status):
    from datetime import timedelta

    from taskflow._engine.job import utcnow
    from taskflow._store.schema import tasks

    config = manager.config_for_callable(func)
    task, _ = manager._intake.new_task(
        config, args, {}, idempotency_key=None, tags=None, priority=None, source="manual"
    )
    old = utcnow() - timedelta(minutes=10)
    row = {
        **task.columns(),
        "status": status,
        "created_at": old,
        "next_attempt_at": old,
        "started_at": old if status == "running" else None,
        "attempts": 1 if status == "running" else 0,
    }
    async with manager.db.write() as conn:  # a row as another process left it
        await conn.execute(tasks.insert(), [row])
    return task.id


async def test_a_database_outage_is_logged_once_not_at_every_step(manager_factory, caplog):
    """While the database does not answer, the background loops log one line (no
    traceback), not one per step, and one more when it answers again."""
    from taskflow import DatabaseUnavailable

    manager = manager_factory(heartbeat_interval=0.05)
    await manager.startup()
    real = manager.db.heartbeat
    failures = 0

    async def down(*args, **kwargs):
        nonlocal failures
        failures += 1
        raise DatabaseUnavailable("the task database is unavailable (injected)")

    caplog.set_level("WARNING", logger="taskflow")
    manager.db.heartbeat = down
    deadline = time.monotonic() + 10
    while failures < 5:
        assert time.monotonic() < deadline, failures
        await asyncio.sleep(0.02)
    manager.db.heartbeat = real
    while not any("answers again" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.02)
    outage = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(outage) == 1, caplog.text
    assert outage[0].exc_info is None and "injected" in outage[0].getMessage()
    assert "Traceback" not in caplog.text
