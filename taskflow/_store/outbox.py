"""Tasks written in the application's own transaction (a transactional outbox).

``enqueue(..., session=...)`` hands a new task here with the application's SQLAlchemy
session or connection. The row is inserted through that session's connection, in its
transaction: it exists once the application commits and never if it rolls back. Nothing
here commits. Because the writing process cannot know when (or whether) the application
commits, the row is stored claimable (``owner`` None) and started by whichever process
serving its queue claims it, which two signals make prompt:

* on PostgreSQL, the same ``NOTIFY`` the store sends for new claimable tasks, issued in
  the application's transaction, so it is delivered at its commit and dropped with its
  rollback;
* on both databases, ``on_commit`` is called once per committed transaction that
  enqueued (the session's ``after_commit`` event; a connection's ``commit`` event),
  to wake this process's claim loop.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from taskflow._store.database import NOTIFY_CHANNEL
from taskflow._store.engine import is_memory_sqlite, mask, normalize_url
from taskflow._store.hot_sql import LIVE_KEY_PREDICATE
from taskflow._store.rows import NewTask
from taskflow._store.schema import tasks
from taskflow.errors import ConfigurationError, DatabaseError

ASYNC_ACCEPTED = "an AsyncSession or AsyncConnection (sqlalchemy.ext.asyncio)"
SYNC_ACCEPTED = "a Session (sqlalchemy.orm) or Connection (sqlalchemy)"
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_KEY_RACES = 3  # a key holder that ends between the insert and the read: insert again
_log = logging.getLogger("taskflow._store")


def check_async_target(target: object) -> None:
    """Refuse anything but an async session or connection.

    Raises:
        TypeError: ``target`` is not an ``AsyncSession`` or ``AsyncConnection``.
    """
    if not isinstance(target, AsyncSession | AsyncConnection):
        hint = " (use enqueue_sync for a sync one)" if _is_sync(target) else ""
        raise TypeError(
            f"enqueue(session=...) takes {ASYNC_ACCEPTED}, got {type(target).__name__}{hint}"
        )


def check_sync_target(target: object) -> None:
    """Refuse anything but a sync session or connection.

    Raises:
        TypeError: ``target`` is not a ``Session`` or ``Connection``.
    """
    if not _is_sync(target):
        hint = " (await enqueue(..., session=...) for an async one)" if _is_async(target) else ""
        raise TypeError(
            f"enqueue_sync(session=...) takes {SYNC_ACCEPTED}, got {type(target).__name__}{hint}"
        )


async def insert_async(
    target: AsyncSession | AsyncConnection,
    task: NewTask,
    *,
    database: str | None,
    on_commit: Callable[[], None],
) -> str:
    """Insert ``task`` in the transaction of an async session or connection (begun if
    none is); the id stored, the holder's when its idempotency key is taken.

    Raises:
        TypeError: ``target`` is not an async session or connection.
        ConfigurationError: ``target`` is bound to another database than ``database``
            (taskflow's; None when it is private), checked before anything is written.
        DatabaseError: the idempotency key changed hands at every try.

    The driver's own errors are left as SQLAlchemy raises them: the transaction is the
    application's, and so is handling its failures.
    """
    check_async_target(target)
    if isinstance(target, AsyncSession):
        return await target.run_sync(
            lambda session: insert_sync(session, task, database=database, on_commit=on_commit)
        )
    return await target.run_sync(
        lambda conn: insert_sync(conn, task, database=database, on_commit=on_commit)
    )


def insert_sync(
    target: Session | sa.Connection,
    task: NewTask,
    *,
    database: str | None,
    on_commit: Callable[[], None],
) -> str:
    """Insert ``task`` in the transaction of a sync session or connection (begun if none
    is, as SQLAlchemy's autobegin would); see :func:`insert_async`.

    Raises:
        TypeError: ``target`` is not a sync session or connection.
        ConfigurationError: ``target`` is bound to another database than ``database``.
    """
    check_sync_target(target)
    if isinstance(target, Session):
        check_same_database(_session_url(target), database)
        conn = target.connection()  # begins the session's transaction if none is
    else:
        check_same_database(target.engine.url, database)
        if not target.in_transaction():
            target.begin()
        conn = target
    stored = _insert(conn, task)
    if stored == task.id:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, task.queue)))
        _arm(target, on_commit)
    return stored


# -- the statements ----------------------------------------------------------------------


def _insert(conn: sa.Connection, task: NewTask) -> str:
    """Insert the row; with an idempotency key, skip it when a live task holds the key
    (the partial unique index is the conflict target) and return that task's id."""
    key = task.idempotency_key
    if key is None:
        conn.execute(_INSERT, task.columns())
        return task.id
    for _ in range(_KEY_RACES):
        if conn.execute(_KEYED_INSERT[conn.dialect.name], task.columns()).rowcount == 1:
            return task.id
        holder = conn.execute(_KEY_HOLDER, {"key": key}).scalar()
        if holder is not None:
            return str(holder)
    raise DatabaseError(f"idempotency key {key!r} kept changing hands; the task was not stored")


# Built once: the values are bound at execution, so each dialect compiles them once.
_INSERT = tasks.insert()
_KEYED_INSERT = {
    name: insert(tasks).on_conflict_do_nothing(
        index_elements=["idempotency_key"], index_where=sa.text(LIVE_KEY_PREDICATE)
    )
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_KEY_HOLDER = sa.select(tasks.c.id).where(
    tasks.c.idempotency_key == sa.bindparam("key"), sa.text(LIVE_KEY_PREDICATE)
)


# -- the same database -------------------------------------------------------------------


def check_same_database(app: URL, database: str | None) -> None:
    """Refuse a session bound to another database than taskflow's.

    The dialects must match; on PostgreSQL the host (loopback names are one host), port
    and database; on SQLite the resolved file path. An in-memory SQLite database, or
    taskflow's private temporary one (``database`` None), never matches.

    Raises:
        ConfigurationError: the databases differ.
    """
    ours = None if database is None else normalize_url(database)
    if ours is not None and _same(app, ours):
        return
    where = "a private temporary database" if ours is None else mask(ours)
    raise ConfigurationError(
        f"the session is bound to {mask(app)}, but taskflow stores its tasks in {where}: "
        "a task can only be written in a transaction of taskflow's own database"
    )


def _same(app: URL, ours: URL) -> bool:
    if app.get_backend_name() != ours.get_backend_name():
        return False
    if app.get_backend_name() == "sqlite":
        if is_memory_sqlite(app) or is_memory_sqlite(ours):
            return False
        return _sqlite_path(app) == _sqlite_path(ours)
    return _pg_address(app) == _pg_address(ours)


def _sqlite_path(url: URL) -> str:
    path = url.database or ""
    if "uri" in url.query:  # file:<path>?<options>
        path = path.removeprefix("file:").split("?", 1)[0]
    return os.path.realpath(os.path.expanduser(path))


def _pg_address(url: URL) -> tuple[str, int, str]:
    socket = url.query.get("host")
    database = url.database or url.username or ""
    if isinstance(socket, tuple) or (isinstance(socket, str) and "," in socket):
        # A multi-host URL (failover): the same set of servers is the same database.
        listed = socket if isinstance(socket, tuple) else tuple(socket.split(","))
        ports = url.query.get("port")
        if ports is not None:  # host=h1,h2&port=p1,p2
            split = ports if isinstance(ports, tuple) else tuple(ports.split(","))
            listed = tuple(f"{h}:{p}" for h, p in zip(listed, split, strict=False))
        return (",".join(sorted(host.lower() for host in listed)), 0, database)
    host = (url.host or (socket if isinstance(socket, str) else None) or "localhost").lower()
    return ("localhost" if host in _LOOPBACK else host, url.port or 5432, database)


def _session_url(session: Session) -> URL:
    try:
        bind = session.get_bind()
    except sa.exc.UnboundExecutionError as exc:
        raise ConfigurationError(f"the session is bound to no database: {exc}") from exc
    return bind.engine.url if isinstance(bind, sa.Connection) else bind.url


# -- waking at commit --------------------------------------------------------------------


class _CommitHook:
    """The wake-ups owed at the next commit of one session or connection: called once
    per committed transaction, forgotten when it rolls back."""

    def __init__(self) -> None:
        self.wakes: list[Callable[[], None]] = []

    def committed(self, *_args: Any) -> None:
        wakes, self.wakes = self.wakes, []
        for wake in wakes:
            try:
                wake()
            except Exception:  # noqa: BLE001 - the application's commit must not fail
                _log.warning("could not wake the claim loop after a commit", exc_info=True)

    def rolled_back(self, *_args: Any) -> None:
        self.wakes = []


_hooks: weakref.WeakKeyDictionary[object, _CommitHook] = weakref.WeakKeyDictionary()


def _arm(target: Session | sa.Connection, wake: Callable[[], None]) -> None:
    """Call ``wake`` when the current transaction of ``target`` commits.

    A session's ``after_commit`` runs once the commit is done. A connection's ``commit``
    event runs just before it; that is enough: on SQLite the claim waits for the
    application's write lock, so it sees the row, and on PostgreSQL the ``NOTIFY``
    arrives after the commit anyway.
    """
    hook = _hooks.get(target)
    if hook is None:
        hook = _hooks[target] = _CommitHook()
        if isinstance(target, Session):
            event.listen(target, "after_commit", hook.committed)
            event.listen(target, "after_rollback", hook.rolled_back)
        else:
            event.listen(target, "commit", hook.committed)
            event.listen(target, "rollback", hook.rolled_back)
    if wake not in hook.wakes:
        hook.wakes.append(wake)


def _is_sync(target: object) -> bool:
    return isinstance(target, Session | sa.Connection)


def _is_async(target: object) -> bool:
    return isinstance(target, AsyncSession | AsyncConnection)
