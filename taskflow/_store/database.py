"""The connection layer every part of the SQL store stands on: the engine, read and
write transactions, driver errors translated to :class:`~taskflow.errors.DatabaseError`,
and PostgreSQL notifications.

One implementation serves SQLite (aiosqlite) and PostgreSQL (asyncpg); where the
dialects differ, the difference stays inside a method with one name and one contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskflow._store import engine as engines
from taskflow._store import failures
from taskflow.errors import DatabaseError

NOTIFY_CHANNEL = "taskflow"
LISTEN_RETRY = 1.0  # seconds between attempts to re-open a lost listening connection


class Database:
    """An open connection pool on SQLite or PostgreSQL, with taskflow's schema.

    Args:
        url: any SQLAlchemy URL for SQLite or PostgreSQL; sync driver names are mapped
            to aiosqlite/asyncpg. For SQLite, ``?timeout=<seconds>`` sets the busy
            timeout (default 30).
        pool_size: connections kept open (PostgreSQL).
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (``FULL`` survives power loss,
            ``NORMAL`` survives a process crash).

    Raises:
        ConfigurationError: the URL is not a supported database.
    """

    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        self.url = engines.normalize_url(url)
        self.display_url = engines.mask(self.url)
        self.dialect = self.url.get_backend_name()
        self._pool_size = pool_size
        self._synchronous = sqlite_synchronous
        self.engine: AsyncEngine | None = None
        # SQLite allows one writer: queue our own writers here rather than on the file lock.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, *, auto_upgrade: bool) -> None:
        """Connect and check (or upgrade) the schema.

        Raises:
            DatabaseError: the database cannot be reached (the message names the URL).
            DatabaseReadOnly: a SQLite file (or its directory) cannot be written.
            DatabaseUnavailable: the database is down, or locked past the busy timeout.
            SchemaOutOfDate: the schema is stale and ``auto_upgrade`` is off.
        """
        from taskflow._store import migrate

        self.engine = engine = engines.create_engine(
            self.url, pool_size=self._pool_size, synchronous=self._synchronous
        )
        try:
            await migrate.prepare_schema(
                engine, auto_upgrade=auto_upgrade, display_url=self.display_url
            )
            if self.dialect == "sqlite":  # read-only: fail now, not at the first enqueue
                await engines.check_sqlite_writable(engine, self.url)
        except DatabaseError:
            await engine.dispose()
            raise
        except (sa.exc.SQLAlchemyError, OSError, sqlite3.Error) as exc:
            await engine.dispose()
            raise failures.translate(
                exc, url=self.url, display_url=self.display_url, connecting=True
            ) from exc
        except Exception as exc:
            await engine.dispose()
            raise DatabaseError(f"cannot open the task database {self.display_url}: {exc}") from exc

    async def close(self) -> None:
        """Close every connection."""
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    # -- transactions ----------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction; driver errors leave as :class:`DatabaseError`."""
        async with self._translated(), self.require_engine().connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        async with (
            _maybe(self._write_lock),
            self._translated(),
            self.require_engine().connect() as conn,
        ):
            conn = await engines.write_options(conn)
            async with conn.begin():
                yield conn

    def require_engine(self) -> AsyncEngine:
        """The engine of the open store.

        Raises:
            DatabaseError: the store is not open, or is closed already.
        """
        if self.engine is None:
            raise DatabaseError("the task store is closed")
        return self.engine

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except DatabaseError:
            raise
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise failures.translate(exc, url=self.url, display_url=self.display_url) from exc

    def upsert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An ``INSERT`` on ``table`` with the dialect's ``ON CONFLICT`` clauses."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _notify(self, conn: AsyncConnection, queues: set[str]) -> None:
        """Tell listening instances (PostgreSQL) that tasks became claimable; delivered
        at commit. SQLite has no notifications: instances poll."""
        if self.dialect != "postgresql":
            return
        for queue in sorted(queues):
            await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, queue)))

    async def listen(self, on_notify: Callable[[str], None]) -> Listener | None:
        """Call ``on_notify(payload)`` for every notification (PostgreSQL only; None on
        SQLite). The listener reconnects by itself after a connection loss."""
        if self.dialect != "postgresql":
            return None
        listener = Listener(self, on_notify)
        await listener.start()
        return listener


@asynccontextmanager
async def _maybe(lock: asyncio.Lock | None) -> AsyncIterator[None]:
    if lock is None:
        yield
        return
    async with lock:
        yield


class Listener:
    """A PostgreSQL connection kept open for ``LISTEN``, reopened when it drops."""

    def __init__(self, store: Database, on_notify: Callable[[str], None]) -> None:
        self._store = store
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first connection listens (or failed once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="taskflow-listen")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ready.wait()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect below
                _log.warning("taskflow listener lost its connection (%s); reconnecting", exc)
            self._ready.set()
            await asyncio.sleep(LISTEN_RETRY)
            self._on_notify("reconnected")  # anything may have been missed meanwhile

    async def _listen_until_lost(self) -> None:
        lost = asyncio.Event()
        async with self._store.require_engine().connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection  # asyncpg: untyped
            assert raw is not None  # a connection checked out just now is open
            raw.add_termination_listener(lambda _c: lost.set())
            await raw.add_listener(NOTIFY_CHANNEL, self._deliver)
            self._ready.set()
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(Exception):
                    await raw.remove_listener(NOTIFY_CHANNEL, self._deliver)
        raise ConnectionError("listening connection closed")

    def _deliver(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def close(self) -> None:
        """Stop listening and release the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


_log = logging.getLogger("taskflow._store")
