"""The task lifecycle on both databases: run, log, retry, time out, cancel, prioritise."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskflow import TaskArgumentError, get_task_context, task_log
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio


async def test_async_task_stores_result_logs_and_context(manager_factory):
    manager = manager_factory()
    seen = {}

    @manager.task(name="greet")
    async def greet(name: str) -> str:
        context = get_task_context()
        seen.update(attempt=context.attempt, tags=context.tags, name=context.func_name)
        task_log("greeting", name=name)
        return f"hello {name}"

    await manager.startup()
    task_id = await manager.enqueue(greet, "ada", tags={"team": "core", "n": 3})
    record = await wait_for_status(manager, task_id)
    assert record.status == "success"
    assert record.result == "hello ada"
    assert record.func_name == "greet"
    assert record.tags == {"team": "core", "n": "3"}
    assert seen == {"attempt": 0, "tags": {"team": "core", "n": "3"}, "name": "greet"}
    assert [(line.message, line.extra) for line in record.logs] == [("greeting", {"name": "ada"})]
    assert record.history[0].status == "success"


async def test_sync_task_runs_in_taskflow_thread_pool(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.thread_name)
    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(app_tasks.thread_name))
    assert record.result.startswith("taskflow")
    assert record.result != threading.current_thread().name


async def test_retries_keep_every_attempt_error(manager_factory):
    manager = manager_factory()

    @manager.task(retries=2, delay=0.01, backoff=2.0)
    async def always_fails() -> None:
        raise ConnectionError(f"attempt {get_task_context().attempt}")

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(always_fails))
    assert record.status == "failed"
    assert record.attempts == 3
    assert [a.error for a in record.history] == [
        "ConnectionError: attempt 0",
        "ConnectionError: attempt 1",
        "ConnectionError: attempt 2",
    ]
    assert all("ConnectionError" in a.traceback for a in record.history)
    assert record.error == "ConnectionError: attempt 2"


async def test_retry_on_filters_exceptions(manager_factory):
    manager = manager_factory()

    @manager.task(retries=5, retry_on=ConnectionError)
    async def wrong_kind() -> None:
        raise KeyError("not retryable")

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(wrong_kind))
    assert record.status == "failed"
    assert record.attempts == 1


async def test_manager_wide_retries_default(manager_factory):
    manager = manager_factory(retries=1)

    @manager.task()
    async def flaky() -> str:
        if get_task_context().attempt == 0:
            raise RuntimeError("first")
        return "second"

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(flaky))
    assert (record.status, record.result, record.attempts) == ("success", "second", 2)


async def test_timeout_fails_the_attempt(manager_factory):
    manager = manager_factory()
    never = asyncio.Event()

    @manager.task(timeout=0.1)
    async def hangs() -> None:
        await never.wait()

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(hangs))
    assert record.status == "failed"
    assert record.error.startswith("TaskTimeout")


async def test_cancelled_pending_task_never_runs(manager_factory):
    manager = manager_factory(max_concurrent_tasks=1)
    gate = asyncio.Event()
    ran = []

    @manager.task()
    async def blocker() -> None:
        await gate.wait()

    @manager.task()
    async def victim() -> None:
        ran.append(True)

    await manager.startup()
    first = await manager.enqueue(blocker)
    await wait_for_status(manager, first, "running")
    second = await manager.enqueue(victim)
    assert await manager.cancel(second) is True
    gate.set()
    await wait_for_status(manager, first)
    record = await wait_for_status(manager, second)
    await manager.shutdown()
    assert record.status == "cancelled"
    assert ran == []


async def test_cancel_running_async_task(manager_factory):
    manager = manager_factory()
    started = asyncio.Event()

    @manager.task()
    async def long_job() -> None:
        started.set()
        await asyncio.Event().wait()

    await manager.startup()
    task_id = await manager.enqueue(long_job)
    await started.wait()
    assert await manager.cancel(task_id) is True
    record = await wait_for_status(manager, task_id)
    assert record.status == "cancelled"
    assert await manager.cancel(task_id) is False


async def test_cancel_running_thread_task_sets_its_flag(manager_factory):
    manager = manager_factory()
    started = threading.Event()

    @manager.task()
    def cooperative() -> str:
        started.set()
        context = get_task_context()
        while not context.is_cancelled():
            threading.Event().wait(0.01)
        return "noticed"

    await manager.startup()
    task_id = await manager.enqueue(cooperative)
    await asyncio.to_thread(started.wait, 5)
    await manager.cancel(task_id)
    record = await wait_for_status(manager, task_id)
    assert (record.status, record.result) == ("cancelled", "noticed")


async def test_priority_orders_waiting_tasks(manager_factory):
    manager = manager_factory(max_concurrent_tasks=1)
    gate = asyncio.Event()
    order: list[str] = []

    @manager.task()
    async def blocker() -> None:
        await gate.wait()

    @manager.task()
    async def record_order(label: str) -> None:
        order.append(label)

    await manager.startup()
    first = await manager.enqueue(blocker)
    await wait_for_status(manager, first, "running")
    ids = [
        await manager.enqueue(record_order, label, priority=p)
        for label, p in [("low", 1), ("high", 10), ("mid", 5), ("default", None)]
    ]
    gate.set()
    for task_id in ids:
        await wait_for_status(manager, task_id)
    assert order == ["high", "mid", "low", "default"]


async def test_types_survive_the_round_trip(manager_factory):
    import datetime as dt
    import decimal
    import uuid

    manager = manager_factory()
    manager.task()(app_tasks.check_types)
    await manager.startup()
    task_id = await manager.enqueue(
        app_tasks.check_types,
        dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
        dt.date(2026, 1, 2),
        decimal.Decimal("1.10"),
        uuid.uuid4(),
        b"\x00\xff",
        (1, 2),
        {3, 4},
        app_tasks.Point(1, 2),
        invoice=app_tasks.Invoice(number=7, amount=decimal.Decimal("9.99")),
    )
    record = await wait_for_status(manager, task_id)
    assert record.status == "success", record.error
    assert record.result == {
        "when": "datetime",
        "tz": "UTC",
        "day": "date",
        "amount": "Decimal",
        "ident": "UUID",
        "blob": "bytes",
        "pair": "tuple",
        "members": "set",
        "point": "Point",
        "invoice": "Invoice",
        "invoice_amount": "Decimal",
    }
    assert isinstance(record.args[6], set) and record.args[7] == app_tasks.Point(1, 2)


async def test_unstorable_argument_is_refused_at_enqueue(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    with pytest.raises(TaskArgumentError, match=r"argument 'b'.*'object'"):
        await manager.enqueue(app_tasks.add, 1, b=object())
    assert await manager.list_tasks() == []


async def test_unstorable_result_fails_the_task(manager_factory):
    manager = manager_factory()

    @manager.task()
    async def returns_object() -> object:
        return object()

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(returns_object))
    assert record.status == "failed"
    assert "result cannot be stored" in record.error


async def test_a_raising_observer_never_changes_the_outcome(manager_factory):
    from taskflow import TaskObserver

    class Broken(TaskObserver):
        async def on_log(self, event):
            raise RuntimeError("observer bug")

        async def on_lifecycle(self, event):
            raise RuntimeError("observer bug")

    manager = manager_factory(loggers=[Broken()])

    @manager.task()
    async def fine() -> int:
        task_log("hello")
        return 1

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(fine))
    assert (record.status, record.result) == ("success", 1)


async def test_file_logger_receives_task_logs(manager_factory, tmp_path):
    log_file = tmp_path / "tasks.log"
    manager = manager_factory(log_file=str(log_file), log_lifecycle=True)

    @manager.task()
    async def chatty() -> None:
        task_log("line one", step=1)

    await manager.startup()
    task_id = await manager.enqueue(chatty)
    await wait_for_status(manager, task_id)
    await manager.shutdown()
    text = log_file.read_text()
    assert "line one" in text and task_id in text and "success" in text


async def test_unregistered_importable_function_runs(manager_factory):
    manager = manager_factory()
    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(app_tasks.add, 2, 3))
    assert (record.status, record.result) == ("success", 5)
    assert record.func_name == "tests.apps.tasks:add"


async def test_user_retry_copies_a_named_task_with_its_labels(manager_factory):
    manager = manager_factory()
    calls = []

    @manager.task(name="renamed_job")
    async def job(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            raise ValueError("first run fails")

    await manager.startup()
    original = await manager.enqueue(job, 5, tags={"k": "v"}, priority=7, idempotency_key="job-5")
    assert (await wait_for_status(manager, original)).status == "failed"
    again = await manager.retry(original)
    record = await wait_for_status(manager, again)
    assert record.status == "success"
    assert (
        record.func_name,
        record.source,
        record.tags,
        record.priority,
        record.idempotency_key,
    ) == ("renamed_job", "retry", {"k": "v"}, 7, "job-5")
    assert (await manager.get_task(original)).status == "failed"
    assert calls == [5, 5]


async def test_delete_only_final_tasks(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    task_id = await manager.enqueue(app_tasks.add, 1, 1)
    await wait_for_status(manager, task_id)
    assert await manager.delete(task_id) is True
    assert await manager.get_task(task_id) is None
    assert await manager.delete(task_id) is False


async def test_log_lines_are_stored_in_the_order_they_were_written(manager_factory):
    """Log ids grow in the order lines are written, across tasks logging at once, even
    with several write batches in flight (PostgreSQL): a reader tailing ``id > last``
    never skips a line, and a task's lines are all stored before its outcome."""
    manager = manager_factory()
    written = iter(range(10**6))

    @manager.task(name="chatty")
    async def chatty(lines: int) -> None:
        for _ in range(lines):
            task_log(str(next(written)))
            await asyncio.sleep(0)

    await manager.startup()
    ids = await asyncio.gather(*(manager.enqueue(chatty, 150) for _ in range(30)))
    for task_id in ids:
        record = await wait_for_status(manager, task_id, timeout=60)
        assert record.status == "success"
        assert len(record.logs) == 150
    async with manager.db.read() as conn:
        rows = (
            await conn.exec_driver_sql("SELECT message FROM taskflow_task_logs ORDER BY id")
        ).all()
    order = [int(row.message) for row in rows]
    assert order == sorted(order)
