"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests use ``TASKFLOW_TEST_DATABASE_URL`` (``scripts/test`` sets it up). The
schema is migrated once per session; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import TaskManager
from taskflow._store import migrate
from taskflow._store.schema import metadata

# The store fixtures (``store_url``, ``open_store``, ``store``: SQLite, PostgreSQL, memory).
pytest_plugins = ("tests.store_support",)

PG_URL = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"
PG_SKIP_REASON = (
    "PostgreSQL tests skipped: set TASKFLOW_TEST_DATABASE_URL="
    "postgresql+asyncpg://postgres@127.0.0.1:5432/taskflow_test (scripts/test does this)"
)


def pytest_report_header(config: pytest.Config) -> str:
    if PG_URL:
        return f"taskflow: PostgreSQL tests use {migrate.mask_url(PG_URL)}"
    return f"taskflow: {PG_SKIP_REASON}"


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI and not PG_URL:
        raise pytest.UsageError("CI=true but TASKFLOW_TEST_DATABASE_URL is not set")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- databases ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    """The PostgreSQL test database, rebuilt at head once per session."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    asyncio.run(_drop_taskflow_tables(PG_URL))
    migrate.upgrade(PG_URL)
    return PG_URL


async def _drop_taskflow_tables(url: str) -> None:
    """Drop every ``taskflow_*`` table, whichever revision created it."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            names = await conn.scalars(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE 'taskflow%'"
                )
            )
            for name in list(names):
                await conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        await engine.dispose()


async def _truncate(url: str) -> None:
    engine = create_async_engine(url)
    names = ", ".join(table.name for table in metadata.sorted_tables)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "tasks.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    url = request.getfixturevalue("pg_migrated")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
async def manager_factory(db_url: str) -> AsyncIterator[Callable[..., TaskManager]]:
    """Build TaskManagers on the test database; started ones are shut down afterwards."""
    made: list[TaskManager] = []

    def make(**kwargs: Any) -> TaskManager:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("shutdown_timeout", 5.0)
        manager = TaskManager(database_url=db_url, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.shutdown()


async def abandon(manager: TaskManager) -> None:
    """Stop a manager the way ``kill -9`` would, as far as the database can tell: its
    loops stop and its connections close, but nothing is settled and its instance row
    stays behind."""
    runtime = manager._engine.runtime
    await manager.coordinator.stop()
    assert runtime.dispatcher is not None
    for running in list(runtime.dispatcher.running.values()):
        running.cancel()
    await runtime.dispatcher.wait_idle(5)
    runtime.started = False
    await manager.executors.shutdown()
    await manager.db.close()
    if runtime.bridge is not None:
        await asyncio.to_thread(runtime.bridge.close)


# -- waiting without sleeping blindly ------------------------------------------------------


async def wait_for_status(
    manager: TaskManager, task_id: str, *statuses: str, timeout: float = 10.0
) -> Any:
    """Poll the database until the task reaches one of ``statuses`` (default: final)."""
    deadline = time.monotonic() + timeout
    while True:
        record = await manager.get_task(task_id)
        if record is not None and (
            record.status.value in statuses if statuses else record.status.is_final
        ):
            return record
        if time.monotonic() > deadline:
            state = record.status.value if record else "missing"
            raise AssertionError(f"task {task_id} is {state}, wanted {statuses or 'final'}")
        await asyncio.sleep(0.02)


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it is true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@pytest.fixture
def free_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@pytest.fixture
def db(db_url: str) -> Iterator[Any]:
    """A synchronous reader of the test database's task tables (``tests.servers``)."""
    from tests.servers import Database

    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def spawn(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Make real servers (``tests.servers.Server``) on the test database; all are killed
    at teardown (with their workers) and their logs printed (pytest shows them only when
    the test failed)."""
    from tests.servers import Server

    made: list[Server] = []

    def make(name: str, **options: Any) -> Server:
        server = Server(db_url, tmp_path, name, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.proc is not None and (server.running() or server.workers is not None):
            server.kill()
        server._reap()
        print(f"===== {server.name} (port {server.port}) =====\n{server.log(tail=20000)}")
