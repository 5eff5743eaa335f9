"""The SQL store: taskflow's :class:`~taskflow._store.protocol.Store` on SQLite or
PostgreSQL.

Every statement taskflow runs lives in ``taskflow._store``, split by aggregate: tasks
(:mod:`~taskflow._store.task_sql`), one-off firings (:mod:`~taskflow._store.once_sql`),
unique tasks (:mod:`~taskflow._store.unique_sql`), limited tasks
(:mod:`~taskflow._store.limit_sql`), dependencies and workflows
(:mod:`~taskflow._store.workflow_sql`),
schedules (:mod:`~taskflow._store.schedule_sql`), instances and meta
(:mod:`~taskflow._store.instance_sql`), paused queues
(:mod:`~taskflow._store.queue_sql`), all on the connection layer of
:mod:`~taskflow._store.database`. The dashboard's queries are in
:mod:`~taskflow._store.dashboard`.
"""

from __future__ import annotations

from taskflow._store.database import Database, Listener
from taskflow._store.instance_sql import InstanceSQL
from taskflow._store.limit_sql import LimitSQL
from taskflow._store.once_sql import OnceSQL
from taskflow._store.queue_sql import QueueSQL
from taskflow._store.schedule_sql import ScheduleSQL
from taskflow._store.unique_sql import UniqueSQL
from taskflow._store.workflow_sql import WorkflowSQL

__all__ = ["Database", "Listener", "SQLStore"]


class SQLStore(OnceSQL, UniqueSQL, LimitSQL, WorkflowSQL, ScheduleSQL, InstanceSQL, QueueSQL):
    """Async access to taskflow's tables on SQLite or PostgreSQL: every aggregate's
    queries on one connection pool. Constructed as :class:`Database` is (same arguments,
    same errors)."""
