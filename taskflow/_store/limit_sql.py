"""The queries of limited task functions (``concurrency=``, ``rate_limit=``): each start
is counted against the other starts of its limit, whichever process makes them.

A limited task starts in its own transaction: a transaction-scoped advisory lock on the
limit's key (PostgreSQL; a SQLite write transaction is exclusive already), a count of
the key's running tasks and of its starts in the rate window (on the partial index
``ix_taskflow_tasks_limit``), and pending → running only when both are under the limit.
Tasks of functions without limits never come here: they keep group commit's start.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.rows import Limit, LimitHold, LimitUsage, repeats_start
from taskflow._store.schema import task_attempts, tasks
from taskflow._store.task_sql import TaskSQL

# The statuses a task that started can have (spelt out so the count walks the index).
STARTED_STATUSES = ("pending", "running", "success", "failed", "cancelled", "interrupted")


class LimitSQL(TaskSQL):
    """Start limited tasks; read how much of a limit is in use."""

    async def start_limited(
        self, task_id: str, *, instance: str, limit: Limit, now: datetime
    ) -> int | LimitHold | None:
        """pending → running for ``task_id`` if ``limit`` allows one more start now: the
        attempt number; a :class:`LimitHold` saying why when it does not (the task stays
        pending); None if the task is not pending. Concurrent calls for one key, from
        any process, are serialised (see the module docstring)."""
        async with self.write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(limit.key))))
            row = (
                await conn.execute(
                    sa.select(
                        tasks.c.status, tasks.c.owner, tasks.c.started_at, tasks.c.attempts
                    ).where(tasks.c.id == task_id)
                )
            ).one_or_none()
            if row is None:
                return None
            if repeats_start(row.status, row.owner, row.started_at, instance=instance, now=now):
                return int(row.attempts)
            if row.status != "pending":  # cancelled, or started elsewhere: nothing to hold
                return None
            hold = await _hold(conn, limit, now)
            if hold is not None:
                return hold
            started = await conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, tasks.c.status == "pending")
                .values(
                    status="running",
                    owner=instance,
                    started_at=now,
                    finished_at=None,
                    attempts=tasks.c.attempts + 1,
                )
                .returning(tasks.c.attempts)
            )
            attempt: int | None = started.scalar_one_or_none()
            return attempt

    async def limit_usage(self, limit_key: str, *, since: datetime | None) -> LimitUsage:
        """Tasks with ``limit_key`` running, and (``since`` given) their starts at or
        after ``since``, retries included."""
        async with self.read() as conn:
            running = await _running(conn, limit_key)
            if since is None:
                return LimitUsage(running=running, starts=0, oldest_start=None)
            starts, oldest = await _starts(conn, limit_key, since=since)
            return LimitUsage(running=running, starts=starts, oldest_start=oldest)


async def _hold(conn: AsyncConnection, limit: Limit, now: datetime) -> LimitHold | None:
    """Why ``limit`` allows no start at ``now``, or None when it allows one."""
    if limit.concurrency is not None:
        running = await _running(conn, limit.key)
        if running >= limit.concurrency:
            return LimitHold(reason="concurrency", count=running)
    if limit.rate is not None and limit.period is not None:
        period = timedelta(seconds=limit.period)
        starts, oldest = await _starts(conn, limit.key, since=now - period)
        if starts >= limit.rate:
            retry_at = (oldest or now) + period
            return LimitHold(reason="rate", count=starts, retry_at=retry_at)
    return None


async def _running(conn: AsyncConnection, key: str) -> int:
    count = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(tasks)
        .where(tasks.c.limit_key == key, tasks.c.status == "running")
    )
    return int(count or 0)


async def _starts(
    conn: AsyncConnection, key: str, *, since: datetime
) -> tuple[int, datetime | None]:
    """Starts of ``key``'s tasks at or after ``since``, and the oldest: each task's
    latest start (on the task row) and its earlier attempts in the window (a retry
    counts as a new start)."""
    in_window = sa.and_(
        tasks.c.limit_key == key,
        tasks.c.status.in_(STARTED_STATUSES),
        tasks.c.started_at >= since,
    )
    latest = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(tasks.c.started_at)).where(in_window)
        )
    ).one()
    earlier = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(task_attempts.c.started_at))
            .select_from(task_attempts.join(tasks, task_attempts.c.task_id == tasks.c.id))
            .where(
                in_window,
                task_attempts.c.started_at >= since,
                task_attempts.c.started_at < tasks.c.started_at,
            )
        )
    ).one()
    oldest = [moment for moment in (latest[1], earlier[1]) if moment is not None]
    return int(latest[0]) + int(earlier[0]), min(oldest, default=None)


def _lock_id(limit_key: str) -> int:
    """A stable signed 64-bit advisory lock id for ``limit_key``."""
    digest = hashlib.blake2b(f"taskflow-limit:{limit_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
