"""Engine creation: one place that knows each dialect's connection settings.

SQLite gets WAL, foreign keys, a busy timeout and explicit ``BEGIN`` statements, so that
write transactions can start with ``BEGIN IMMEDIATE`` (the write lock is taken up front
and concurrent writers queue on the busy timeout instead of failing with
"database is locked" when they upgrade a read lock).

The busy timeout is 30 s; the URL's ``timeout`` query parameter (seconds, as for Python's
``sqlite3.connect``) changes it: ``sqlite:///tasks.db?timeout=5``. A write that waits
longer for another process's lock fails with
:class:`~taskflow.errors.DatabaseUnavailable`.

PostgreSQL waits are bounded too, so a network partition (packets silently dropped, no
error ever arrives) fails requests with ``DatabaseUnavailable`` instead of hanging them:
opening a connection gives up after ``connect_timeout`` seconds (10 by default) and any
statement, ``COMMIT`` and ``ROLLBACK`` included, after ``command_timeout`` seconds (30 by
default). Both are URL query parameters:
``postgresql://user@host/db?connect_timeout=5&command_timeout=15``. Migrations run by
``taskflow db upgrade`` have no statement limit.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    import aiosqlite

WRITE_OPTION = "taskflow_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # the default; ``?timeout=<seconds>`` in the URL overrides it
# PostgreSQL: ``?connect_timeout=`` (or asyncpg's own name, ``?timeout=``) and
# ``?command_timeout=`` (seconds) in the URL.
_PG_TIMEOUTS = ("connect_timeout", "timeout", "command_timeout")
PG_TIMEOUTS_DEFAULT = (10.0, 30.0)

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_SUPPORTED = {"sqlite+aiosqlite", "postgresql+asyncpg"}


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with taskflow's async driver, or raise for an unsupported database.

    ``sqlite:///x.db`` and ``postgresql://...`` are accepted and mapped to aiosqlite and
    asyncpg. Raises :class:`ConfigurationError` (a ``ValueError``) naming the masked URL,
    also for a SQLite ``?timeout=`` that is not a number of seconds.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError as exc:
        hint = (
            f" (a SQLite file is written sqlite:///{url}, PostgreSQL postgresql://user@host/db)"
            if isinstance(url, str) and "://" not in url
            else ""
        )
        raise ConfigurationError(f"invalid database URL {str(url)!r}: {exc}{hint}") from exc
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername not in _SUPPORTED:
        raise ConfigurationError(
            f"unsupported database URL {mask(parsed)}: taskflow supports "
            "sqlite+aiosqlite:// and postgresql+asyncpg:// URLs"
        )
    normalized = parsed.set(drivername=drivername)
    if normalized.get_backend_name() == "sqlite":
        sqlite_busy_timeout(normalized)  # refuse a bad ``?timeout=`` at construction
    else:
        pg_timeouts(normalized)  # and a bad ``?connect_timeout=`` or ``?command_timeout=``
    return normalized


def mask(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def is_memory_sqlite(url: URL) -> bool:
    """True for an in-memory SQLite database (one connection must be shared)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def is_sqlite_file(url: URL) -> bool:
    """True for a SQLite file named by a plain path, which the stdlib driver can open
    beside the engine (not ``:memory:``, which lives in the engine's one connection;
    not a ``file:`` URI, left to the engine)."""
    sqlite = url.get_backend_name() == "sqlite"
    return sqlite and not is_memory_sqlite(url) and "uri" not in url.query


def sqlite_busy_timeout(url: URL) -> float:
    """Seconds a SQLite statement waits for another connection's lock: the URL's
    ``timeout`` query parameter, else 30.

    Raises:
        ConfigurationError: ``timeout`` is not a number of seconds >= 0.
    """
    raw = url.query.get("timeout")
    if raw is None:
        return SQLITE_BUSY_TIMEOUT_MS / 1000
    try:
        seconds = float(raw if isinstance(raw, str) else raw[-1])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # also refuses nan
        raise ConfigurationError(
            f"timeout={raw!r} in the SQLite URL {mask(url)} must be a number of seconds >= 0",
            field="database_url",
        )
    return seconds


def create_engine(
    url: URL, *, pool_size: int = 10, synchronous: str = "FULL", migrating: bool = False
) -> AsyncEngine:
    """Create the async engine for ``url`` with taskflow's per-dialect settings;
    ``migrating``: PostgreSQL statements have no ``command_timeout`` (a migration may
    rewrite a large table)."""
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, synchronous=synchronous)
    connect_timeout, command_timeout = pg_timeouts(url)
    return create_async_engine(
        url.difference_update_query(_PG_TIMEOUTS),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=connect_timeout + command_timeout,  # waiting for a free connection
        connect_args={
            "timeout": connect_timeout,
            "command_timeout": None if migrating else command_timeout,
        },
    )


def pg_timeouts(url: URL) -> tuple[float, float]:
    """Seconds PostgreSQL may take to accept a connection and to answer one statement
    (``COMMIT`` included): the URL's ``connect_timeout`` and ``command_timeout`` query
    parameters (``timeout``, asyncpg's name, for the first too), else 10 and 30.

    Raises:
        ConfigurationError: a value is not a number of seconds > 0.
    """
    values = []
    for names, default in zip(
        (_PG_TIMEOUTS[:2], _PG_TIMEOUTS[2:]), PG_TIMEOUTS_DEFAULT, strict=True
    ):
        given = [(name, url.query[name]) for name in names if name in url.query]
        if not given:
            values.append(default)
            continue
        name, raw = given[0]
        try:
            seconds = float(raw if isinstance(raw, str) else raw[-1])
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise ConfigurationError(
                f"{name}={raw!r} in the PostgreSQL URL {mask(url)} must be a number of seconds > 0",
                field="database_url",
            )
        values.append(seconds)
    return values[0], values[1]


def _create_sqlite_engine(url: URL, *, synchronous: str) -> AsyncEngine:
    busy_seconds = sqlite_busy_timeout(url)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_seconds}}
    if is_memory_sqlite(url):
        kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_size=5, max_overflow=5)
    engine = create_async_engine(url, **kwargs)
    memory = is_memory_sqlite(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let our "begin" listener issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={round(busy_seconds * 1000)}")
        if not memory:
            _enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")  # statement journals of triggers
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor: DBAPICursor) -> None:
    """Switch a new database file to WAL. Several processes opening a fresh file at once
    can get "database is locked" here without the busy handler being consulted, so the
    switch is retried; a file already in WAL mode needs no lock at all."""
    cursor.execute("PRAGMA journal_mode")
    mode = cursor.fetchone()
    if mode is not None and str(mode[0]).lower() == "wal":
        return
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, wrapped by aiosqlite
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


async def check_sqlite_writable(engine: AsyncEngine, url: URL) -> None:
    """Raise the driver's error when a SQLite database refuses the write lock: a
    read-only file, directory or file system (``SQLITE_READONLY``). A lock held by
    another process says nothing about that, so this neither waits for it nor fails."""
    async with engine.connect() as conn:
        driver: aiosqlite.Connection | None = (await conn.get_raw_connection()).driver_connection
        assert driver is not None  # a connection checked out just now is open
        await driver.execute("PRAGMA busy_timeout=0")
        try:
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY":
                raise
        finally:
            await driver.execute(f"PRAGMA busy_timeout={round(sqlite_busy_timeout(url) * 1000)}")


async def write_options(conn: AsyncConnection) -> AsyncConnection:
    """Mark ``conn`` so that its next transaction is a write transaction."""
    return await conn.execution_options(**{WRITE_OPTION: True})
