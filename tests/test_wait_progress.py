"""``wait()`` and ``task_progress()``, on SQLite and PostgreSQL.

``wait()`` returns a task's final record as soon as it ends: a success, a failure, the
last attempt of a retried task; in this process and in another one (a real uvicorn
process; PostgreSQL tells waiters through a notification, SQLite waiters poll). A wait
that gives up or is cancelled leaves nothing behind, and the task runs on.

``task_progress()`` reports reach the task's record and the JSON API from async, thread
and process tasks; a burst of reports makes a few writes and the last one is stored;
bad input is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskflow import TaskAdmin, TaskManager, TaskNotFound, get_task_context, task_progress
from taskflow._engine.context import MAX_PROGRESS_MESSAGE
from taskflow._store.protocol import Store
from taskflow._store.rows import (
    TASKS_ENDED,
    Outcome,
    ProgressUpdate,
    ended_ids,
    ended_notification,
)
from taskflow._store.sql import SQLStore
from tests.conftest import wait_for_status
from tests.servers import post
from tests.store_support import OpenStore
from tests.test_store import started

pytestmark = pytest.mark.anyio

WAIT = 15.0  # seconds any one wait in these tests may take at most


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll an async ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- task functions of the process tests (imported back by name in a worker) ---------------


def process_reports(gate: str) -> str:
    """Reports, then waits for ``gate`` (a file) to exist, then reports its last value."""
    task_progress(1, 4, "started")
    deadline = time.monotonic() + WAIT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    for done in range(2, 5):
        task_progress(done, 4, f"step {done}")
    return "ok"


def process_many_reports(count: int) -> int:
    for done in range(count + 1):
        task_progress(done, count)
    return count


# -- the store ----------------------------------------------------------------------------------


async def test_the_store_keeps_the_latest_progress_and_commits_it_before_the_end(
    store: Store,  # noqa: F811  (the fixture imported above)
) -> None:
    task_id = await started(store)
    await store.set_progress(ProgressUpdate(task_id, '{"done": 1}'))
    assert (await store.get_task(task_id)).progress == '{"done": 1}'  # type: ignore[union-attr]
    # Queued together, the report and the end commit in that order.
    last = store.set_progress(ProgressUpdate(task_id, '{"done": 2}'))
    end = store.finish_task(Outcome(task_id, "a", 1, "success", datetime.now(UTC)))
    await asyncio.gather(last, end)
    row = await store.get_task(task_id)
    assert row is not None and (row.status, row.progress) == ("success", '{"done": 2}')
    await store.set_progress(ProgressUpdate("no-such-task", "{}"))  # nothing, no error
    assert await store.get_task("no-such-task") is None


async def test_the_end_of_tasks_is_one_notification_per_commit_on_postgresql(
    open_store: OpenStore,  # noqa: F811
    store_url: str,  # noqa: F811
) -> None:
    writer, listener = await open_store(), await open_store()
    heard: list[str] = []
    listening = await listener.listen(heard.append)
    if not store_url.startswith("postgresql"):
        assert listening is None  # SQLite and memory: waiters poll
        return
    assert listening is not None
    try:
        retried, first, second = [await started(writer) for _ in range(3)]
        now = datetime.now(UTC)
        await writer.finish_task(Outcome(retried, "a", 1, "pending", now, next_attempt_at=now))
        await asyncio.gather(
            writer.finish_task(Outcome(first, "a", 1, "success", now)),
            writer.finish_task(Outcome(second, "a", 1, "failed", now, error="E")),
        )
        await until(lambda: _true(second in str(heard)), "the notification")
        ended = [ids for ids in map(ended_ids, heard) if ids is not None]
        assert [sorted(ids) for ids in ended] == [sorted([first, second])]  # one, naming both
        assert retried not in str(heard)  # pending again: not ended
    finally:
        await listening.close()


def test_an_ended_notification_too_long_for_postgresql_names_no_task() -> None:
    few = [f"{n:032x}" for n in range(3)]
    assert ended_ids(ended_notification(few)) == few
    many = [f"{n:032x}" for n in range(1000)]
    assert ended_notification(many) == TASKS_ENDED
    assert ended_ids(TASKS_ENDED) == []  # every waiter reads its task again
    assert ended_ids("default") is None  # an enqueue notification


async def test_progress_goes_through_the_engine_on_in_memory_sqlite() -> None:
    memory_db = SQLStore("sqlite+aiosqlite://")
    await memory_db.open(auto_upgrade=True)
    try:
        task_id = await started(memory_db)
        await memory_db.set_progress(ProgressUpdate(task_id, '{"done": 5}'))
        row = await memory_db.get_task(task_id)
        assert row is not None and row.progress == '{"done": 5}'
    finally:
        await memory_db.close()


# -- wait() -----------------------------------------------------------------------------------


async def test_wait_returns_the_record_of_a_success_and_of_a_failure(manager_factory):
    manager = manager_factory()
    gate = asyncio.Event()

    @manager.task()
    async def succeeds() -> str:
        await gate.wait()
        return "done"

    @manager.task()
    async def fails() -> None:
        await gate.wait()
        raise RuntimeError("boom")

    await manager.startup()
    ok_id = await manager.enqueue(succeeds)
    bad_id = await manager.enqueue(fails)
    waits = asyncio.gather(manager.wait(ok_id, timeout=WAIT), manager.wait(bad_id, timeout=WAIT))
    await wait_for_status(manager, ok_id, "running")
    gate.set()
    ok, bad = await waits
    assert (ok.task_id, ok.status.value, ok.result) == (ok_id, "success", "done")
    assert (bad.status.value, bad.result) == ("failed", None)
    assert bad.error == "RuntimeError: boom"
    assert bad.stacktrace is not None and "boom" in bad.stacktrace
    # A task that has ended already: its record at once.
    assert (await manager.wait(ok_id, timeout=0)).status.value == "success"
    assert manager._engine.waiters.count == 0


async def test_wait_goes_on_through_retries_to_the_last_attempt(manager_factory):
    manager = manager_factory()
    gate = asyncio.Event()
    runs: list[int] = []

    @manager.task(retries=2, delay=0.01)
    async def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            await gate.wait()
        if len(runs) < 3:
            raise ValueError(f"attempt {len(runs)}")
        return "third time"

    await manager.startup()
    task_id = await manager.enqueue(flaky)
    waiting = asyncio.ensure_future(manager.wait(task_id, timeout=WAIT))
    await wait_for_status(manager, task_id, "running")
    gate.set()
    record = await waiting
    assert (record.status.value, record.result, record.attempts) == ("success", "third time", 3)
    assert [attempt.status for attempt in record.history] == ["failed", "failed", "success"]


async def test_a_wait_that_times_out_or_is_cancelled_leaves_nothing_and_the_task_runs_on(
    manager_factory,
):
    manager = manager_factory()
    gate = asyncio.Event()

    @manager.task()
    async def parked() -> str:
        await gate.wait()
        return "released"

    await manager.startup()
    task_id = await manager.enqueue(parked)
    await wait_for_status(manager, task_id, "running")
    with pytest.raises(TimeoutError):
        await manager.wait(task_id, timeout=0.2)
    waiters = manager._engine.waiters
    assert waiters.count == 0
    assert (await manager.get_task(task_id)).status.value == "running"

    cancelled = asyncio.ensure_future(manager.wait(task_id))
    await until(lambda: _true(waiters.count == 1), "the wait to register")
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert waiters.count == 0

    gate.set()
    record = await manager.wait(task_id.replace("-", "").upper(), timeout=WAIT)  # either id shape
    assert (record.status.value, record.result) == ("success", "released")
    assert waiters.count == 0


async def _true(value: bool) -> bool:
    return value


async def test_wait_returns_a_task_cancelled_before_it_started(manager_factory):
    manager = manager_factory()

    @manager.task(queue="unserved")
    async def never_runs() -> None:
        raise AssertionError("no process serves this queue")

    await manager.startup()
    task_id = await manager.enqueue(never_runs)
    waiting = asyncio.ensure_future(manager.wait(task_id, timeout=WAIT))
    await until(lambda: _true(manager._engine.waiters.count == 1), "the wait to register")
    assert await manager.cancel(task_id)
    record = await waiting
    assert (record.status.value, record.error) == ("cancelled", "cancelled before start")


async def test_wait_on_an_unknown_id_raises_task_not_found(manager_factory):
    manager = manager_factory()
    await manager.startup()
    with pytest.raises(TaskNotFound, match="no-such-task"):
        await manager.wait("no-such-task", timeout=1)


async def test_wait_sees_a_task_end_in_another_process(db_url, spawn, manager_factory):
    """The task runs in a real uvicorn process; this process only waits. On PostgreSQL
    the end arrives as a notification naming the task; on SQLite the waiter polls."""
    server = spawn("worker").start()
    # This manager serves another queue, so it never runs the task itself.
    manager = manager_factory(queues=["elsewhere"])
    await manager.startup()
    heard: list[str] = []
    listening = await manager.db.listen(heard.append)
    try:
        task_id = post(server.url, "/slow", seconds=0.5)["task_id"]
        record = await manager.wait(task_id, timeout=WAIT)
        assert (record.status.value, record.result) == ("success", "done")
        assert record.owner != manager.instance_id
        if db_url.startswith("postgresql"):
            await until(
                lambda: _true(any(task_id in (ended_ids(p) or ()) for p in heard)),
                "the notification of the end",
            )
            assert all(p.startswith(TASKS_ENDED) for p in heard if ended_ids(p) is not None)
        else:
            assert listening is None
    finally:
        if listening is not None:
            await listening.close()


async def test_ends_notified_on_postgresql_wake_waiters_but_claim_nothing(
    db_url, manager_factory, monkeypatch
):
    """An app that never waits pays nothing for the notification of ends: it wakes the
    waiters of this process (here, at once) and never the claim loop."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    manager = manager_factory(poll_interval=3600, queues=["elsewhere"])
    await manager.startup()
    claims: list[int] = []
    original = manager.db.claim_tasks

    async def counting(**kwargs: Any) -> Any:
        claims.append(1)
        return await original(**kwargs)

    monkeypatch.setattr(manager.db, "claim_tasks", counting)
    waiters = manager._engine.waiters
    notified: list[str] = []
    signal = waiters.ended

    def ended(task_id: str) -> None:  # what the notification calls (the runner has its own)
        notified.append(task_id)
        signal(task_id)

    monkeypatch.setattr(waiters, "ended", ended)
    other = SQLStore(db_url)  # another process's view of the database
    await other.open(auto_upgrade=False)
    ended_ids_here: list[str] = []
    try:
        for _ in range(3):
            task_id = await started(other, owner="another-instance")
            waiting = asyncio.ensure_future(manager.wait(task_id, timeout=WAIT))
            await until(lambda: _true(manager._engine.waiters.count == 1), "the wait")
            await other.finish_task(Outcome(task_id, "another-instance", 1, "success", _now()))
            assert (await waiting).status.value == "success"
            ended_ids_here.append(task_id)
        await until(
            lambda: _true(set(ended_ids_here) <= set(notified)), "the notifications naming them"
        )
    finally:
        await other.close()
    assert claims == []


def _now() -> datetime:
    return datetime.now(UTC)


# -- task_progress() --------------------------------------------------------------------------


async def test_progress_of_async_and_thread_tasks_reaches_the_record_and_the_json_api(
    manager_factory,
):
    manager = manager_factory()
    async_gate, thread_gate = asyncio.Event(), threading.Event()

    @manager.task()
    async def copies(count: int) -> int:
        task_progress(count // 2, count, "copying files")
        await async_gate.wait()
        return count

    @manager.task(executor="thread")
    def counts() -> str:
        context = get_task_context()
        assert context is not None
        context.progress(7, message="rows so far")  # no total: unknown
        thread_gate.wait(WAIT)
        return "counted"

    app = FastAPI()
    TaskAdmin(app, manager)
    await manager.startup()
    async_id = await manager.enqueue(copies, 10)
    thread_id = await manager.enqueue(counts)

    async def progress_of(task_id: str) -> Any:
        record = await manager.get_task(task_id)
        return record.progress if record is not None else None

    mid = await until(lambda: progress_of(async_id), "the async task's progress")
    assert (mid.done, mid.total, mid.message, mid.fraction) == (5, 10, "copying files", 0.5)
    assert mid.at.tzinfo is not None
    threaded = await until(lambda: progress_of(thread_id), "the thread task's progress")
    assert (threaded.done, threaded.total, threaded.message) == (7, None, "rows so far")
    assert threaded.fraction is None

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        detail = (await client.get(f"/tasks/{async_id}")).json()
        assert detail["progress"]["done"] == 5 and detail["progress"]["total"] == 10
        assert detail["progress"]["message"] == "copying files"
        listed = {item["task_id"]: item for item in (await client.get("/tasks")).json()}
        assert listed[thread_id]["progress"]["done"] == 7
        assert listed[thread_id]["progress"]["total"] is None

    async_gate.set()
    thread_gate.set()
    for task_id in (async_id, thread_id):
        assert (await manager.wait(task_id, timeout=WAIT)).status.value == "success"
    # The last report stays on the finished task.
    assert (await manager.get_task(async_id)).progress.done == 5


async def test_progress_of_a_process_task_is_seen_while_it_runs_and_its_last_value_kept(
    manager_factory, tmp_path: Path
):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(process_reports)
    await manager.startup()
    gate = tmp_path / "gate"
    task_id = await manager.enqueue(process_reports, str(gate))

    async def progress() -> Any:
        return (await manager.get_task(task_id)).progress

    first = await until(progress, "the process task's first report")
    assert (first.done, first.total, first.message) == (1, 4, "started")
    gate.touch()
    record = await manager.wait(task_id, timeout=WAIT)
    assert record.status.value == "success"
    assert (record.progress.done, record.progress.message) == (4, "step 4")


# -- coalescing -------------------------------------------------------------------------------


def count_progress_writes(manager: TaskManager, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every progress write the manager's store is asked for (then made)."""
    db = manager.db
    made: list[str] = []
    original = db.set_progress

    def counting(update: Any) -> Any:
        made.append(update.report)
        return original(update)

    monkeypatch.setattr(db, "set_progress", counting)
    return made


def allowed_writes(elapsed: float) -> int:
    """At most one write per half second of a task's run, one at its start and the
    last one before its end."""
    return math.ceil(elapsed / 0.5) + 2


@pytest.mark.parametrize("executor", ["async", "thread", "process"])
async def test_a_burst_of_reports_makes_few_writes_and_stores_the_last(
    manager_factory, monkeypatch, executor
):
    count = 20_000 if executor == "process" else 100_000
    manager = manager_factory(max_process_workers=1)

    async def burst_async(count: int) -> int:
        for done in range(count + 1):
            task_progress(done, count)
        return count

    def burst_thread(count: int) -> int:
        for done in range(count + 1):
            task_progress(done, count)
        return count

    func: Callable[..., Any] = {
        "async": burst_async,
        "thread": burst_thread,
        "process": process_many_reports,
    }[executor]
    manager.task(executor=executor)(func)
    await manager.startup()
    writes = count_progress_writes(manager, monkeypatch)
    task_id = await manager.enqueue(func, count)
    record = await manager.wait(task_id, timeout=60)
    assert record.status.value == "success", record.error
    assert (record.progress.done, record.progress.total) == (count, count)
    run = (record.end_time - record.start_time).total_seconds()
    assert 1 <= len(writes) <= allowed_writes(run), (len(writes), run)
    assert json.loads(writes[-1])["done"] == count


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("3",), {}, TypeError, "done=.*must be a number, got str"),
        ((True,), {}, TypeError, "done=.*must be a number, got bool"),
        ((-1,), {}, ValueError, "done=.*must be 0 or more"),
        ((float("nan"),), {}, ValueError, "done=.*must be finite"),
        ((1, 0), {}, ValueError, "total=.*must be above 0"),
        ((1, -5), {}, ValueError, "total=.*must be above 0"),
        ((1, "10"), {}, TypeError, "total=.*must be a number"),
        ((1, float("inf")), {}, ValueError, "total=.*must be finite"),
        ((1, 10), {"message": 42}, TypeError, "message=.*must be a string or None, got int"),
    ],
)
def test_bad_progress_is_refused_with_a_clear_error(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        task_progress(*args, **kwargs)


def test_progress_outside_a_task_is_logged_at_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="taskflow"):
        task_progress(3, 10, "loading")
    assert "task_progress outside a task: 3/10 loading" in caplog.text


async def test_bad_progress_fails_the_task_and_a_long_message_is_cut(manager_factory):
    manager = manager_factory()

    @manager.task()
    async def reports_badly() -> None:
        task_progress(-3)

    @manager.task()
    async def talks_a_lot() -> None:
        task_progress(1, 2, "x" * 10_000)

    await manager.startup()
    bad = await manager.wait(await manager.enqueue(reports_badly), timeout=WAIT)
    assert bad.status.value == "failed"
    assert bad.error == "ValueError: task_progress(done=...) must be 0 or more, got -3"
    assert bad.progress is None
    long = await manager.wait(await manager.enqueue(talks_a_lot), timeout=WAIT)
    assert long.progress is not None and long.progress.message is not None
    assert len(long.progress.message) == MAX_PROGRESS_MESSAGE
    assert long.progress.message.endswith("…")


# -- the guide ----------------------------------------------------------------------------------


def test_the_guide_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fastapi.testclient import TestClient

    guide = (Path(__file__).parent.parent / "docs" / "results-and-progress.md").read_text()
    found = re.search(r"```python\n(# app\.py.*?)```", guide, re.S)
    assert found, "no app.py example in docs/results-and-progress.md"
    monkeypatch.chdir(tmp_path)  # its SQLite file lands here
    namespace: dict[str, Any] = {"__name__": "guide_app"}
    exec(compile(found.group(1), "results-and-progress.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        task_id = client.post("/images/resize", params={"count": 40}).json()["task_id"]
        running = client.get(f"/images/resize/{task_id}", params={"timeout": 0}).json()
        assert running["status"] == "running"
        done = client.get(f"/images/resize/{task_id}", params={"timeout": WAIT}).json()
        assert done == {"status": "success", "result": {"resized": 40}}
        assert client.get("/images/resize/no-such-task").status_code == 404
        detail = client.get(f"/tasks/{task_id}").json()
        assert detail["progress"]["done"] == 40 and detail["progress"]["message"] == "image 40"
