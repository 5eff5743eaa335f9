"""fastapi-taskflow's submodule import paths (``backends``, ``loggers``, ``periodic``,
``exceptions``) and the manager attributes its docs use (``store.get``, ``merged_list``,
``add_task``), with only the import changed to ``taskflow``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskflow import ConfigurationError, TaskManager, task_log
from taskflow.backends import MySQLBackend, PostgresBackend, RedisBackend, SqliteBackend
from taskflow.backends.base import SnapshotBackend
from taskflow.backends.postgres import asyncpg_url
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio


def backend_for(db_url: str) -> SqliteBackend | PostgresBackend:
    """The documented backend for the test database: ``SqliteBackend(path)``, or
    ``PostgresBackend`` with a plain libpq URL (no ``+asyncpg``)."""
    if db_url.startswith("sqlite"):
        return SqliteBackend(db_url.split(":///", 1)[1])
    return PostgresBackend(db_url.replace("postgresql+asyncpg://", "postgresql://", 1))


def fails() -> None:
    raise RuntimeError("smtp down")


def chatty() -> str:
    task_log("dbg line", level="debug")
    task_log("hello", level="info", user="ada")
    task_log("careful", level="warning")
    return "ok"


# -- import paths ----------------------------------------------------------------------------


def test_every_documented_submodule_name_imports() -> None:
    import taskflow
    import taskflow.errors
    from taskflow.backends.mysql import MySQLBackend as MySQLFromModule
    from taskflow.backends.postgres import PostgresBackend as PostgresFromModule
    from taskflow.backends.redis import RedisBackend as RedisFromModule
    from taskflow.backends.sqlite import SqliteBackend as SqliteFromModule
    from taskflow.exceptions import QueueFullError
    from taskflow.loggers import FileLogger, InMemoryLogger, StdoutLogger
    from taskflow.loggers.base import LifecycleEvent, LogEvent, TaskObserver
    from taskflow.periodic import DEFAULT_HORIZON, DEFAULT_REFILL_INTERVAL, ScheduledEntry

    assert (SqliteFromModule, PostgresFromModule) == (SqliteBackend, PostgresBackend)
    assert (RedisFromModule, MySQLFromModule) == (RedisBackend, MySQLBackend)
    assert QueueFullError is taskflow.errors.QueueFullError is taskflow.QueueFullError
    assert (taskflow.StdoutLogger, taskflow.InMemoryLogger) == (StdoutLogger, InMemoryLogger)
    assert {"StdoutLogger", "InMemoryLogger"} <= set(taskflow.__all__)
    assert FileLogger is taskflow.FileLogger and TaskObserver is taskflow.TaskObserver
    assert (LogEvent, LifecycleEvent) == (taskflow.LogEvent, taskflow.LifecycleEvent)
    assert issubclass(StdoutLogger, TaskObserver) and issubclass(InMemoryLogger, TaskObserver)
    assert (DEFAULT_HORIZON, DEFAULT_REFILL_INTERVAL) == (300.0, 150.0)
    assert ScheduledEntry.__name__ == "ScheduledEntry"


def test_exceptions_module_re_exports_every_public_error() -> None:
    import taskflow.errors
    import taskflow.exceptions

    public = {
        name
        for name, value in vars(taskflow.errors).items()
        if isinstance(value, type) and issubclass(value, taskflow.errors.TaskflowError)
    }
    assert public == set(taskflow.exceptions.__all__)
    for name in public:
        assert getattr(taskflow.exceptions, name) is getattr(taskflow.errors, name)


# -- backends ----------------------------------------------------------------------------------


async def test_documented_backend_runs_tasks_and_sqlite_query_reads_them(db_url: str) -> None:
    backend = backend_for(db_url)
    manager = TaskManager(snapshot_backend=backend, poll_interval=0.05, shutdown_timeout=5)
    manager.task()(app_tasks.add)
    manager.task()(fails)
    await manager.startup()
    try:
        ok = await wait_for_status(manager, await manager.enqueue(app_tasks.add, 2, 3))
        bad = await wait_for_status(manager, await manager.enqueue(fails))
        assert (ok.status, ok.result, bad.status) == ("success", 5, "failed")
        assert manager.database_url.split("://")[0] in ("sqlite+aiosqlite", "postgresql+asyncpg")
        finished = {record.task_id: record.status for record in await backend.load()}
        assert finished == {ok.task_id: "success", bad.task_id: "failed"}
        assert await backend.load_pending() == [] and await backend.save([ok]) == 0
    finally:
        await manager.shutdown()
    if isinstance(backend, SqliteBackend):
        rows = backend.query(status="failed", func_name="fails", limit=50)
        assert [(row["task_id"], row["status"]) for row in rows] == [(bad.task_id, "failed")]
        assert "smtp down" in rows[0]["error"]
        assert {"task_id", "func_name", "created_at", "end_time", "duration", "queue"} <= set(
            rows[0]
        )
        assert [row["task_id"] for row in backend.query()] == [bad.task_id, ok.task_id]
        assert len(backend.query(limit=1)) == 1


def test_sqlite_query_of_a_missing_file_is_empty_and_creates_nothing(tmp_path: Any) -> None:
    path = tmp_path / "never.db"
    assert SqliteBackend(str(path)).query() == []
    assert not path.exists()


def test_libpq_connection_strings_become_asyncpg_urls() -> None:
    assert (
        asyncpg_url("postgresql://user:pw@db:5432/app")
        == "postgresql+asyncpg://user:pw@db:5432/app"
    )
    assert asyncpg_url("postgres://u@h/app") == "postgresql+asyncpg://u@h/app"
    assert asyncpg_url("postgresql+psycopg2://u@h/app") == "postgresql+asyncpg://u@h/app"
    assert (
        asyncpg_url("postgresql://u@h/app?sslmode=require&connect_timeout=5")
        == "postgresql+asyncpg://u@h/app?ssl=require&timeout=5"
    )
    assert (
        asyncpg_url("host=db port=5433 dbname=app user=me password='p w'")
        == "postgresql+asyncpg://me:p w@db:5433/app"
    )
    with pytest.raises(ConfigurationError, match="PostgreSQL connection string"):
        PostgresBackend("mysql://root@h/db")
    with pytest.raises(ValueError, match="Either url or pool"):
        PostgresBackend()


def test_postgres_backend_with_only_a_psycopg2_pool_is_refused_with_the_fix() -> None:
    backend = PostgresBackend(pool=object())
    with pytest.raises(ConfigurationError, match=r"pool.*asyncpg.*postgresql://"):
        TaskManager(snapshot_backend=backend)


@pytest.mark.parametrize(
    ("backend", "names"),
    [
        (RedisBackend(), "Redis"),
        (RedisBackend("redis://:hunter2@cache:6379/0", prefix="app"), "Redis"),
        (MySQLBackend("mysql://root:hunter2@localhost/mydb"), "MySQL"),
    ],
    ids=["redis-default", "redis-url", "mysql"],
)
async def test_redis_and_mysql_backends_construct_but_are_refused(
    backend: SnapshotBackend, names: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TaskManager(snapshot_backend=backend)
    message = str(caught.value)
    assert names in message and "PostgreSQL" in message and "database_url=" in message
    assert "hunter2" not in message
    with pytest.raises(ConfigurationError, match=names):
        await backend.load()


class InMemoryBackend(SnapshotBackend):
    """fastapi-taskflow's documented custom backend, verbatim but for the import."""

    def __init__(self) -> None:
        self._history: dict[str, Any] = {}

    async def save(self, records: list[Any]) -> int:
        return len(records)

    async def load(self) -> list[Any]:
        return list(self._history.values())

    async def save_pending(self, records: list[Any]) -> int:
        return len(records)

    async def load_pending(self) -> list[Any]:
        return []

    async def clear_pending(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_custom_snapshot_backend_is_refused_with_what_to_use() -> None:
    with pytest.raises(ConfigurationError, match=r"custom SnapshotBackend.*snapshot_db="):
        TaskManager(snapshot_backend=InMemoryBackend(), snapshot_interval=60.0)


# -- loggers -----------------------------------------------------------------------------------


async def test_stdout_logger_prints_lines_at_its_level_and_lifecycle_on_request(
    manager_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskflow import InMemoryLogger, StdoutLogger

    quiet, loud, seen = (
        StdoutLogger(),
        StdoutLogger(log_lifecycle=True, min_level="warning"),
        InMemoryLogger(),
    )
    manager = manager_factory(loggers=[quiet, seen])
    manager.task()(chatty)
    await manager.startup()
    task_id = await manager.enqueue(chatty)
    await wait_for_status(manager, task_id)
    await manager.shutdown()  # delivers every queued event before returning
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if task_id in line] == [
        line for line in out if " INFO chatty " in line or " WARNING chatty " in line
    ]
    assert any(line.endswith("hello user=ada") for line in out)
    assert any("careful" in line for line in out)
    assert not any("dbg line" in line or "task success" in line for line in out)
    assert [event.status.value for event in seen.lifecycle_events][-1] == "success"

    manager = manager_factory(loggers=[loud])
    manager.task()(chatty)
    manager.task()(fails)
    await manager.startup()
    failed_id = await manager.enqueue(fails)
    await wait_for_status(manager, failed_id)
    chatty_id = await manager.enqueue(chatty)
    await wait_for_status(manager, chatty_id)
    await manager.shutdown()
    out = capsys.readouterr().out.splitlines()
    assert any(failed_id in line and "task failed" in line and "smtp down" in line for line in out)
    assert any(chatty_id in line and "careful" in line for line in out)
    assert not any("hello" in line or "task success" in line for line in out)


async def test_in_memory_logger_keeps_events_for_assertions(manager_factory: Any) -> None:
    from taskflow import InMemoryLogger

    everything, info_up = InMemoryLogger(), InMemoryLogger(min_level="info")
    manager = manager_factory(loggers=[everything, info_up])
    manager.task()(chatty)
    await manager.startup()
    task_id = await manager.enqueue(chatty)
    await wait_for_status(manager, task_id)
    await manager.shutdown()
    assert [e.message for e in everything.log_events] == ["dbg line", "hello", "careful"]
    assert everything.log_events[1].extra == {"user": "ada"}
    assert {e.task_id for e in everything.log_events} == {task_id}
    assert [e.message for e in info_up.log_events] == ["hello", "careful"]
    assert [e.status.value for e in everything.lifecycle_events] == ["running", "success"]
    everything.clear()
    assert everything.log_events == [] and everything.lifecycle_events == []


# -- manager attributes the docs use -------------------------------------------------------------


def test_store_get_to_dict_from_a_sync_route(db_url: str) -> None:
    task_manager = TaskManager(snapshot_backend=backend_for(db_url), poll_interval=0.05)
    task_manager.task()(app_tasks.add)
    app = FastAPI()
    task_manager.init_app(app)

    @app.post("/add")
    async def add(a: int, b: int) -> dict[str, str]:
        return {"task_id": await task_manager.add_task(app_tasks.add, a, b)}

    @app.get("/tasks/{task_id}")
    def report(task_id: str) -> dict[str, Any]:
        record = task_manager.store.get(task_id)
        return {"missing": True} if record is None else record.to_dict()

    with TestClient(app) as client:
        task_id = client.post("/add", params={"a": 4, "b": 5}).json()["task_id"]
        deadline = time.monotonic() + 10
        body = client.get(f"/tasks/{task_id}").json()
        while body.get("status") != "success" and time.monotonic() < deadline:
            body = client.get(f"/tasks/{task_id}").json()
        assert (body["task_id"], body["status"], body["result"]) == (task_id, "success", 9)
        assert client.get("/tasks/nope").json() == {"missing": True}


async def test_add_task_is_enqueue_and_merged_list_lists_every_task(manager_factory: Any) -> None:
    manager = manager_factory(queues=["default", "reports"])
    manager.task()(app_tasks.add)
    await manager.startup()
    first = await manager.add_task(app_tasks.add, 1, 2)
    second = await manager.add_task(app_tasks.add, 3, b=4, queue="reports")
    records = [await wait_for_status(manager, task_id) for task_id in (first, second)]
    assert [(r.result, r.queue) for r in records] == [(3, "default"), (7, "reports")]
    listed = await manager.merged_list()
    assert {record.task_id for record in listed} == {first, second}
    assert len(await manager.merged_list(limit=1)) == 1


# -- periodic ----------------------------------------------------------------------------------


async def test_scheduled_entries_describe_the_stored_schedules(manager_factory: Any) -> None:
    from taskflow.models import ScheduledOnce
    from taskflow.periodic import ScheduledEntry, scheduled_entries

    manager = manager_factory()

    @manager.schedule(every=3600, run_on_startup=False)
    async def hourly() -> None:
        return None

    @manager.schedule(cron="0 9 * * *", timezone="Europe/Paris")
    async def morning() -> None:
        return None

    await manager.startup()
    entries = {entry.config.name: entry for entry in await scheduled_entries(manager)}
    stored = {s.name: s for s in await manager.list_schedules()}
    assert set(entries) == {"hourly", "morning"}
    hourly_entry, morning_entry = entries["hourly"], entries["morning"]
    assert (hourly_entry.func, hourly_entry.every, hourly_entry.cron) == (hourly, 3600, None)
    assert hourly_entry.next_run == stored["hourly"].next_run_at
    assert (morning_entry.cron, morning_entry.timezone, morning_entry.every) == (
        "0 9 * * *",
        "Europe/Paris",
        None,
    )
    assert hourly_entry.recurring and not hourly_entry.cancelled
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert hourly_entry.compute_next(start) == start + timedelta(hours=1)
    assert morning_entry.compute_next(start) == datetime(2030, 1, 2, 8, 0, tzinfo=UTC)
    once = ScheduledOnce(run_key="r", func_name="hourly", fire_at=start)
    one_off = ScheduledEntry(hourly, hourly_entry.config, None, None, False, once=once)
    assert not one_off.recurring
    with pytest.raises(ValueError, match="one-off"):
        one_off.compute_next(start)
