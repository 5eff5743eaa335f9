"""What the store tests share: the three stores (SQLite, PostgreSQL, memory) as
fixtures, fixed timestamps, and a new task to insert."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskflow._store.ids import new_task_id
from taskflow._store.memory import MemoryStore
from taskflow._store.protocol import Store
from taskflow._store.rows import NewTask
from taskflow._store.sql import SQLStore
from tests.conftest import _truncate

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MEMORY_URL = "memory://"
OpenStore = Callable[[], Awaitable[Store]]


def at(seconds: float) -> datetime:
    """``seconds`` after the fixed moment every test starts at."""
    return T0 + timedelta(seconds=seconds)


# When helper-made tasks start and end, unless a test says otherwise.
STARTED_AT = at(1)
FINISHED_AT = at(2)


# -- stores ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store under test lives: an empty migrated SQLite file, the empty
    PostgreSQL test database, or memory."""
    if request.param == "memory":
        return MEMORY_URL
    if request.param == "sqlite":
        target = tmp_path / "tasks.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("pg_migrated")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[OpenStore]:
    """Open a view of the store under test: each call a new ``SQLStore`` (its own
    connections, as another process would have) on the same database; in memory, the
    one store. Every view is closed at teardown."""
    memory = MemoryStore() if store_url == MEMORY_URL else None
    opened: list[Store] = []

    async def open_view() -> Store:
        view: Store = memory if memory is not None else SQLStore(store_url)
        await view.open(auto_upgrade=False)
        opened.append(view)
        return view

    yield open_view
    for view in opened:
        await view.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


def new_task(**changes: Any) -> NewTask:
    task = NewTask(
        id=new_task_id(),
        func_name="add",
        func_path="tests.apps.tasks:add",
        payload='{"args": [1, 2]}',
        encrypted=False,
        max_retries=0,
        priority=0,
        queue="default",
        tags={},
        idempotency_key=None,
        source="manual",
        owner=None,
        requeue_on_interrupt=False,
        created_at=T0,
        next_attempt_at=T0,
    )
    return replace(task, **changes)
