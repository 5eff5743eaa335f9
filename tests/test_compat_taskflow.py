"""fastapi-taskflow users change one import: its ``models``/``loggers`` import paths, its
observer events, and ``ManagedBackgroundTasks`` outside a request, as its docs show them."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime

import fastapi
import pytest

from taskflow import ManagedBackgroundTasks, TaskManager, TaskObserver, task_log
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio

# -- taskflow.models -----------------------------------------------------------------------


def test_every_documented_models_name_imports_with_its_documented_shape() -> None:
    from taskflow.models import (
        AuditEntry,
        QueueConfig,
        ScheduledOnce,
        TaskConfig,
        TaskContext,
        TaskRecord,
        TaskStatus,
    )

    assert [s.value for s in TaskStatus][:6] == [
        "pending",
        "running",
        "success",
        "failed",
        "cancelled",
        "interrupted",
    ]
    assert TaskStatus.SUCCESS == "success"
    config = TaskConfig(retries=3, delay=1.0, backoff=2.0, name="x", eager=True, priority=5)
    assert (config.retries, config.name, config.executor, config.persist) == (3, "x", None, False)
    assert QueueConfig(concurrency=4, max_size=50).max_size == 50
    documented = {
        "task_id", "func_name", "status", "args", "kwargs", "created_at", "start_time",
        "end_time", "error", "logs", "stacktrace", "idempotency_key", "tags",
        "encrypted_payload", "source", "priority", "executor", "queue",
    }  # fmt: skip
    assert documented <= {f.name for f in dataclasses.fields(TaskRecord)}
    assert {"task_id", "func_name", "attempt", "tags"} <= {
        f.name for f in dataclasses.fields(TaskContext)
    }
    once = ScheduledOnce(run_key="r", func_name="f", fire_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert (once.args, once.kwargs, once.queue) == ((), {}, "default")
    at = datetime(2030, 1, 1, tzinfo=UTC)
    entry = AuditEntry.from_audit(
        {"id": 7, "at": at, "actor": "ada", "action": "retry", "target": "t1", "detail": {}}
    )
    assert entry == AuditEntry("7", "retry", "t1", "ada", at, {})
    assert entry.to_dict()["timestamp"] == at.isoformat()


async def test_record_has_fastapi_taskflow_fields_and_to_dict(manager_factory):
    manager = manager_factory()
    manager.task(retries=1)(app_tasks.add)
    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(app_tasks.add, 2, 3))
    assert (record.status, record.result, record.retries_used) == ("success", 5, 0)
    assert (record.source, record.executor, record.encrypted_payload) == ("manual", "thread", None)
    assert record.duration is not None and record.duration >= 0
    data = record.to_dict()
    assert {"task_id", "status", "duration", "retries_used", "logs", "executor"} <= set(data)
    assert data["status"] == "success" and "encrypted_payload" not in data


# -- observers written for fastapi-taskflow ----------------------------------------------------


class FakeSlack:
    """Stands in for the Slack client of fastapi-taskflow's observer example."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def connect(self) -> None:
        self.calls.append("connect")

    async def disconnect(self) -> None:
        self.calls.append("disconnect")

    async def post(self, text: str) -> None:
        self.calls.append(text)


slack = FakeSlack()


def make_slack_alerter() -> TaskObserver:
    """fastapi-taskflow's observability guide example, with only the import changed."""
    from taskflow import TaskObserver
    from taskflow.loggers.base import LifecycleEvent, LogEvent

    class SlackAlerter(TaskObserver):
        async def on_log(self, event: LogEvent) -> None:
            if event.level == "error":
                await slack.post(f"[{event.func_name}] {event.message}")

        async def on_lifecycle(self, event: LifecycleEvent) -> None:
            if event.status.value == "failed":
                await slack.post(
                    f"Task {event.func_name} failed after "
                    f"{event.retries_used} retries: {event.error}"
                )

        async def startup(self) -> None:
            await slack.connect()

        async def close(self) -> None:
            await slack.disconnect()

    return SlackAlerter()


class Recorder(TaskObserver):
    """An observer in fastapi-taskflow's style that keeps what it receives."""

    def __init__(self) -> None:
        super().__init__(min_level="debug")
        self.logs: list = []
        self.lifecycle: list = []

    async def on_log(self, event) -> None:
        self.logs.append(event)

    async def on_lifecycle(self, event) -> None:
        self.lifecycle.append(event)


async def test_documented_observer_example_works_unchanged(manager_factory):
    slack.calls.clear()
    manager = manager_factory(loggers=[make_slack_alerter()])

    @manager.task(retries=2)
    def charge() -> None:
        task_log("card declined", level="error")
        raise ValueError("declined")

    await manager.startup()
    assert slack.calls == ["connect"]
    record = await wait_for_status(manager, await manager.enqueue(charge))
    assert record.status == "failed"
    await manager.shutdown()
    assert slack.calls[1:4] == ["[charge] card declined"] * 3
    assert slack.calls[4:] == [
        "Task charge failed after 2 retries: ValueError: declined",
        "disconnect",
    ]


async def test_events_carry_fastapi_taskflow_fields_through_a_retry(manager_factory):
    from taskflow.models import TaskStatus

    recorder = Recorder()
    manager = manager_factory(loggers=[recorder])

    @manager.task(retries=1, delay=0.0)
    async def flaky() -> str:
        from taskflow import get_task_context

        task_log("trying", level="debug", n=1)
        if get_task_context().attempt == 0:
            raise ConnectionError("first attempt")
        return "ok"

    await manager.startup()
    task_id = await manager.enqueue(flaky, tags={"team": "core"})
    await wait_for_status(manager, task_id)
    await manager.shutdown()  # delivers every queued event

    events = recorder.lifecycle
    assert [e.status for e in events] == ["running", "pending", "running", "success"]
    assert all(isinstance(e.status, TaskStatus) for e in events)
    assert [e.status.value for e in events] == ["running", "pending", "running", "success"]
    assert [(e.attempt, e.retries_used, e.retrying) for e in events] == [
        (0, 0, False),
        (0, 0, True),
        (1, 1, False),
        (1, 1, False),
    ]
    retry = events[1]
    assert retry.label == "retrying" and "ConnectionError: first attempt" in retry.error
    assert "ConnectionError" in retry.stacktrace
    assert events[0].duration is None and events[-1].duration >= 0
    assert all(e.timestamp.tzinfo is not None and e.at == e.timestamp for e in events)
    assert all(e.tags == {"team": "core"} for e in events)
    assert [(e.message, e.level, e.attempt, e.extra) for e in recorder.logs] == [
        ("trying", "debug", 0, {"n": 1}),
        ("trying", "debug", 1, {"n": 1}),
    ]
    assert all(e.func_name == "flaky" and e.task_id == task_id for e in recorder.logs)


async def test_an_observer_that_raises_is_logged_with_its_traceback(manager_factory, caplog):
    class Broken(TaskObserver):
        async def on_lifecycle(self, event) -> None:
            raise RuntimeError(f"observer bug on {event.status.value}")

    manager = manager_factory(loggers=[Broken()])
    manager.task()(app_tasks.add)
    await manager.startup()
    caplog.set_level(logging.ERROR, logger="taskflow.observers")
    record = await wait_for_status(manager, await manager.enqueue(app_tasks.add, 1, 1))
    await manager.shutdown()
    assert (record.status, record.result) == ("success", 2)
    failures = [r for r in caplog.records if r.name == "taskflow.observers"]
    assert [r.exc_info[1].args[0] for r in failures] == [
        "observer bug on running",
        "observer bug on success",
    ]
    assert all("Broken.on_lifecycle raised" in r.getMessage() for r in failures)


def test_file_logger_accepts_min_level(tmp_path) -> None:
    import asyncio

    from taskflow.loggers import FileLogger, LoggerChain
    from taskflow.loggers.base import LogEvent

    path = tmp_path / "tasks.log"
    at = datetime(2030, 1, 1, tzinfo=UTC)

    async def scenario() -> None:
        chain = LoggerChain([FileLogger(str(path), min_level="warning")])
        await chain.open()
        for level in ("debug", "info", "warning", "error"):
            chain.emit(LogEvent("t1", "f", f"at {level}", level, at, 0))
        await chain.close()

    asyncio.run(scenario())
    assert [line.split(" ", 4)[-1] for line in path.read_text().splitlines()] == [
        "at warning",
        "at error",
    ]


# -- ManagedBackgroundTasks outside a request --------------------------------------------------


def test_managed_background_tasks_is_a_fastapi_background_tasks() -> None:
    managed = ManagedBackgroundTasks(TaskManager())
    assert isinstance(managed, fastapi.BackgroundTasks)
    native = fastapi.BackgroundTasks()
    shared = ManagedBackgroundTasks(TaskManager(), native)
    assert shared.tasks is native.tasks


async def test_add_task_before_startup_is_stored_and_run_by_startup(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    managed = ManagedBackgroundTasks(manager)
    task_id = managed.add_task(app_tasks.add, 20, 22, tags={"via": "early"})
    assert isinstance(task_id, str) and len(managed.tasks) == 1
    await manager.startup()
    record = await wait_for_status(manager, task_id)
    assert (record.status, record.result, record.tags) == ("success", 42, {"via": "early"})
    await managed()  # awaiting the list afterwards must not run it a second time
    assert len(await manager.list_tasks()) == 1


async def test_add_task_before_startup_runs_in_memory_when_awaited_first(manager_factory):
    manager = manager_factory()
    calls: list[int] = []
    managed = ManagedBackgroundTasks(manager)
    task_id = managed.add_task(calls.append, 7)
    await managed()  # what Starlette (or a test) does with a BackgroundTasks
    assert calls == [7]
    await manager.startup()
    assert await manager.get_task(task_id) is None  # already ran; startup skips it
    assert calls == [7]


@pytest.mark.parametrize("priority", [5, None])
async def test_add_task_outside_a_request_after_startup_runs(manager_factory, priority):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    task_id = ManagedBackgroundTasks(manager).add_task(app_tasks.add, 2, 3, priority=priority)
    record = await wait_for_status(manager, task_id, timeout=10)
    assert (record.status, record.result) == ("success", 5)
    assert record.priority == (priority or 0)
