"""Group commit on PostgreSQL runs on asyncpg connections it keeps (``pg_writer.py``):
a batch of one kind as one statement, a mixed batch as one transaction, each with its
notification; a lost connection fails one batch as unavailable and the next batch
connects again; asyncpg's own errors are translated as SQLAlchemy's are."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from taskflow._store import failures
from taskflow._store.database import NOTIFY_CHANNEL
from taskflow._store.rows import Outcome, ended_notification
from taskflow._store.sql import SQLStore
from taskflow.errors import DatabaseFull, DatabaseReadOnly, DatabaseUnavailable
from tests.conftest import _truncate
from tests.store_support import at, new_task

pytestmark = pytest.mark.anyio

NOTICE_WAIT = 10.0  # seconds a committed notification may take to arrive


@pytest.fixture
async def store(pg_migrated: str) -> AsyncIterator[SQLStore]:
    await _truncate(pg_migrated)
    opened = SQLStore(pg_migrated)
    await opened.open(auto_upgrade=False)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def notices(pg_migrated: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads of the notifications on taskflow's channel, as they arrive."""
    received: asyncio.Queue[str] = asyncio.Queue()
    url = make_url(pg_migrated).set(drivername="postgresql")
    listener = await asyncpg.connect(url.render_as_string(hide_password=False))
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        yield received
    finally:
        await listener.close()


async def next_notices(received: asyncio.Queue[str], count: int) -> set[str]:
    async with asyncio.timeout(NOTICE_WAIT):
        return {await received.get() for _ in range(count)}


async def test_batches_of_one_kind_and_mixed_batches_notify_at_commit(
    store: SQLStore, notices: asyncio.Queue[str]
) -> None:
    # Inserts alone: one statement, its notification in a WITH.
    first = await store.insert_task(new_task(queue="mail"))
    assert await next_notices(notices, 1) == {"mail"}
    assert await store.start_task(first, instance="a", now=at(1)) == 1
    # A finish and an insert in one batch: one transaction, both notifications.
    end = Outcome(first, "a", 1, "success", at(2), result="3")
    _, second = await asyncio.gather(
        store.finish_task(end), store.insert_task(new_task(queue="default"))
    )
    assert await next_notices(notices, 2) == {"default", ended_notification([first])}
    # A finish alone.
    assert await store.start_task(second, instance="a", now=at(3)) == 1
    await store.finish_task(Outcome(second, "a", 1, "failed", at(4), error="E"))
    assert await next_notices(notices, 1) == {ended_notification([second])}
    rows = [await store.get_task(task_id) for task_id in (first, second)]
    assert [(row.status, row.result) for row in rows if row] == [("success", "3"), ("failed", None)]
    assert notices.empty()


async def test_a_lost_connection_fails_one_batch_and_the_next_connects_again(
    store: SQLStore, pg_migrated: str
) -> None:
    await store.insert_task(new_task())  # the writer holds its connection from here on
    writer = store._pg_writer
    assert writer is not None and len(writer._idle) == 1
    pid = writer._idle[0].driver.get_server_pid()
    killer = await asyncpg.connect(
        make_url(pg_migrated).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    lost = new_task()
    with pytest.raises(DatabaseUnavailable):
        await store.insert_task(lost)
    assert await store.get_task(lost.id) is None
    again = await store.insert_task(new_task())
    assert (await store.get_task(again)) is not None
    assert len(writer._idle) == 1 and writer._idle[0].driver.get_server_pid() != pid


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (asyncpg.exceptions.DiskFullError("could not extend file"), DatabaseFull),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), DatabaseReadOnly),
        (
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
            DatabaseUnavailable,
        ),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), DatabaseUnavailable),
        (asyncpg.exceptions.InterfaceError("cannot perform operation"), DatabaseUnavailable),
        (
            asyncpg.exceptions.InternalClientError("another operation is in progress"),
            DatabaseUnavailable,
        ),
        (TimeoutError(), DatabaseUnavailable),
    ],
)
def test_asyncpg_errors_are_translated_as_the_engines_are(
    error: Exception, kind: type[Exception]
) -> None:
    url = make_url("postgresql+asyncpg://app@db.example:5432/tasks")
    translated = failures.translate(error, url=url, display_url="postgresql://db.example/tasks")
    assert type(translated) is kind
