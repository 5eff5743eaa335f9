"""The queries of unique tasks (``unique_for=``): at most one task per ``unique_key`` in
a time window, whichever process enqueues it.

A unique task is inserted in its own transaction: a transaction-scoped advisory lock on
the key (PostgreSQL; a SQLite write transaction is exclusive already), a look for a task
with the key created in the window and in one of the blocking statuses (on the partial
index ``ix_taskflow_tasks_unique_key``), and the insert only when there is none. Tasks
without a ``unique_key`` never come here: they keep group commit's statements.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.rows import NewTask
from taskflow._store.schema import task_aliases, tasks
from taskflow._store.task_sql import TaskSQL


class UniqueSQL(TaskSQL):
    """Insert and find unique tasks."""

    async def insert_unique_task(
        self, task: NewTask, *, window: timedelta, states: Sequence[str]
    ) -> str:
        """Insert ``task`` unless a task with its ``unique_key``, created at or after
        ``task.created_at - window``, is in one of ``states``; the id stored, or that
        task's id (a ``promised`` id then becomes an alias of it). With an idempotency
        key, a live holder of the key is returned as :meth:`insert_task_now` does.

        Concurrent calls for one key, from any process, are serialised (see the module
        docstring), so exactly one of them inserts.
        """
        key = task.unique_key
        assert key is not None
        async with self.write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(key))))
            existing = await _unique_holder(
                conn, key, since=task.created_at - window, states=states
            )
            if existing is not None:
                if task.promised:
                    await conn.execute(
                        task_aliases.insert(), [{"alias": task.id, "task_id": existing}]
                    )
                return existing
            stored = await self._insert(conn, task)
            if stored == task.id and task.owner is None:
                await self._notify(conn, {task.queue})
            return stored

    async def find_unique_task(
        self, unique_key: str, *, since: datetime, states: Sequence[str]
    ) -> str | None:
        """Id of a task with ``unique_key`` created at or after ``since`` whose status
        is one of ``states``, or None."""
        async with self.read() as conn:
            return await _unique_holder(conn, unique_key, since=since, states=states)


async def _unique_holder(
    conn: AsyncConnection, key: str, *, since: datetime, states: Sequence[str]
) -> str | None:
    return await conn.scalar(
        sa.select(tasks.c.id)
        .where(
            tasks.c.unique_key == key,
            tasks.c.created_at >= since,
            tasks.c.status.in_(list(states)),
        )
        .order_by(tasks.c.created_at)
        .limit(1)
    )


def _lock_id(unique_key: str) -> int:
    """A stable signed 64-bit advisory lock id for ``unique_key``."""
    digest = hashlib.blake2b(f"taskflow-unique:{unique_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
