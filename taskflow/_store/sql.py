"""The SQL store: taskflow's :class:`~taskflow._store.protocol.Store` on SQLite or
PostgreSQL.

Every statement taskflow runs lives in ``taskflow._store``, split by aggregate: tasks
(:mod:`~taskflow._store.task_sql`), one-off firings (:mod:`~taskflow._store.once_sql`),
schedules (:mod:`~taskflow._store.schedule_sql`), instances and meta
(:mod:`~taskflow._store.instance_sql`), all on the connection layer of
:mod:`~taskflow._store.database`. The dashboard's queries are in
:mod:`~taskflow._store.dashboard`.
"""

from __future__ import annotations

from taskflow._store.database import Database, Listener, Row
from taskflow._store.instance_sql import InstanceSQL
from taskflow._store.once_sql import OnceSQL
from taskflow._store.schedule_sql import ScheduleSQL

__all__ = ["Database", "Listener", "Row", "SQLStore"]


class SQLStore(OnceSQL, ScheduleSQL, InstanceSQL):
    """Async access to taskflow's tables on SQLite or PostgreSQL: every aggregate's
    queries on one connection pool.

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
