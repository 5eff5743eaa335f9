"""The queries of one-off firings (``TaskManager.schedule_once``).

A one-off firing is an ordinary pending task row, unowned, with ``next_attempt_at`` set
to its run time and a ``run_key``: any process serving its queue claims it when it is due
(:meth:`~taskflow._store.task_sql.TaskSQL.claim_tasks`), like any deferred task. The partial
unique index ``uq_taskflow_tasks_run_key`` (predicate
:data:`~taskflow._store.schema.ONCE_PENDING_WHERE`) allows one pending firing per key;
once its first attempt starts, the row leaves the index and is a task like any other.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.rows import NewTask, TaskRow
from taskflow._store.schema import ONCE_PENDING_WHERE, tasks
from taskflow._store.task_sql import TaskSQL

# Literal SQL, not bound parameters: only then can the planner see that a query implies
# the predicate of the partial index on run_key.
_PENDING = sa.text(ONCE_PENDING_WHERE)


class OnceSQL(TaskSQL):
    """Replace, cancel and list pending one-off firings."""

    async def replace_once(self, task: NewTask, *, now: datetime) -> str:
        """Store ``task`` as the pending firing of its ``run_key``, replacing the
        pending firing with that key (if any) in the same transaction.

        Concurrent calls for one key are serialised (a transaction-scoped advisory lock
        on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so exactly one firing is left:
        the last writer's. A replaced firing that a process had claimed but not started
        never starts (starting needs the row). Returns the stored id, or the id of the
        live task holding its ``idempotency_key`` (then nothing new is stored).
        """
        assert task.run_key is not None
        async with self.write() as conn:
            await self._lock_key(conn, task.run_key)
            await _delete_pending(conn, task.run_key)
            stored = await self._insert(conn, task)
            if task.next_attempt_at <= now:
                await self._notify(conn, {task.queue})
            return stored

    async def cancel_once(self, run_key: str) -> bool:
        """Delete the pending firing of ``run_key``; False if there is none (it fired
        already, was cancelled, or never existed)."""
        async with self.write() as conn:
            await self._lock_key(conn, run_key)
            return await _delete_pending(conn, run_key) > 0

    async def pending_once(self, *, before: datetime | None = None) -> list[TaskRow]:
        """Pending firings due at or before ``before`` (every one when None), soonest
        first."""
        query = sa.select(tasks).where(_PENDING).order_by(tasks.c.next_attempt_at, tasks.c.id)
        if before is not None:
            query = query.where(tasks.c.next_attempt_at <= before)
        async with self.read() as conn:
            return [TaskRow.of(row) for row in (await conn.execute(query)).mappings()]

    async def _lock_key(self, conn: AsyncConnection, run_key: str) -> None:
        """Serialise writers of one run_key until the transaction ends (PostgreSQL; a
        SQLite write transaction is exclusive already)."""
        if self.dialect == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(run_key))))


async def _delete_pending(conn: AsyncConnection, run_key: str) -> int:
    result = await conn.execute(tasks.delete().where(tasks.c.run_key == run_key, _PENDING))
    return int(result.rowcount)


def _lock_id(run_key: str) -> int:
    """A stable signed 64-bit advisory lock id for ``run_key``."""
    digest = hashlib.blake2b(f"taskflow-once:{run_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
