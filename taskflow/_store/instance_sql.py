"""The instances aggregate: the processes serving the store, their heartbeats, and
the settling of the tasks a stopped or dead process held; and the meta table."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._payloads.payloads import MEMORY_ONLY, MEMORY_ONLY_LOST
from taskflow._store.database import Database
from taskflow._store.rows import (
    ClockReading,
    InstanceRow,
)
from taskflow._store.schema import (
    ATTEMPT_END_COLUMNS,
    instances,
    meta,
    task_attempts,
    tasks,
)


class InstanceSQL(Database):
    """Instances and rescue in SQL, and the key/value meta table."""

    async def register_instance(self, instance: InstanceRow) -> None:
        """Insert this process's instance row."""
        async with self.write() as conn:
            await conn.execute(instances.insert(), [instance.columns()])

    async def heartbeat(self, instance: str, *, now: datetime, info: Mapping[str, object]) -> bool:
        """Refresh an instance's heartbeat; False if its row is gone (it was rescued)."""
        async with self.write() as conn:
            result = await conn.execute(
                instances.update()
                .where(instances.c.id == instance)
                .values(heartbeat_at=now, info=info)
            )
            return result.rowcount == 1

    async def read_clock(self) -> ClockReading | None:
        """The database's clock (PostgreSQL ``clock_timestamp()``) against this host's;
        None on SQLite, whose clock is this host's (the file is on this host)."""
        if self.dialect != "postgresql":
            return None
        async with self.read() as conn:
            await conn.execute(sa.select(1))  # the transaction's BEGIN, outside the timing
            sent, before = time.monotonic(), datetime.now(UTC)
            database = await conn.scalar(sa.select(sa.func.clock_timestamp()))
            round_trip = time.monotonic() - sent
        assert isinstance(database, datetime)
        local = before + timedelta(seconds=round_trip / 2)
        return ClockReading(offset=database - local, round_trip=round_trip)

    async def list_instances(self) -> list[InstanceRow]:
        """Every registered instance, newest heartbeat first."""
        async with self.read() as conn:
            query = sa.select(instances).order_by(instances.c.heartbeat_at.desc())
            return [InstanceRow.of(row) for row in (await conn.execute(query)).mappings()]

    async def dead_instances(
        self, *, me: str, stale_before: datetime, hostname: str, dead_pids: Sequence[int]
    ) -> list[str]:
        """Instances whose heartbeat is older than ``stale_before``, or which ran on this
        host under a pid that no longer exists."""
        same_host_dead = sa.and_(instances.c.hostname == hostname, instances.c.pid.in_(dead_pids))
        query = sa.select(instances.c.id).where(
            instances.c.id != me,
            sa.or_(instances.c.heartbeat_at < stale_before, same_host_dead),
        )
        async with self.read() as conn:
            return [row.id for row in await conn.execute(query)]

    async def host_pids(self, *, hostname: str, me: str) -> dict[str, int]:
        """Other instances registered from this host, by id, with their pids (for the
        dead-pid check)."""
        query = sa.select(instances.c.id, instances.c.pid).where(
            instances.c.hostname == hostname, instances.c.id != me
        )
        async with self.read() as conn:
            return {row.id: row.pid for row in await conn.execute(query)}

    async def settle_instance(
        self,
        instance: str,
        *,
        now: datetime,
        reason: str,
        remove: bool = True,
        only: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Settle the tasks of a stopped instance, in one transaction.

        Its pending tasks become unowned (claimable); its running tasks go back to
        pending when ``requeue_on_interrupt`` was set, else end ``interrupted`` with
        ``reason``. Tasks that only that process could run (memory-only payload) end
        ``interrupted``, running or pending, with a message saying why. ``only`` limits
        this to some task ids (and keeps the instance row). Returns counts by outcome.
        """
        mine: sa.ColumnElement[bool] = tasks.c.owner == instance
        if only is not None:
            mine = sa.and_(mine, tasks.c.id.in_(list(only)))
            remove = False
        async with self.write() as conn:
            lost = await self._end_memory_only(conn, mine, instance, now=now, reason=reason)
            running = sa.and_(mine, tasks.c.status == "running")
            interrupted = await conn.execute(
                tasks.update()
                .where(running, tasks.c.requeue_on_interrupt.is_(False))
                .values(status="interrupted", finished_at=now, error=reason, owner=None)
                .returning(tasks.c.id, tasks.c.attempts, tasks.c.started_at)
            )
            interrupted_rows = list(interrupted)
            requeued = await conn.execute(
                tasks.update()
                .where(running, tasks.c.requeue_on_interrupt.is_(True))
                .values(status="pending", owner=None, next_attempt_at=now, error=reason)
                .returning(tasks.c.id, tasks.c.attempts, tasks.c.started_at)
            )
            requeued_rows = list(requeued)
            settled = interrupted_rows + requeued_rows
            await self._end_attempts(conn, settled, instance, now=now, why=reason)
            released = await conn.execute(
                tasks.update().where(mine, tasks.c.status == "pending").values(owner=None)
            )
            if remove:
                await conn.execute(instances.delete().where(instances.c.id == instance))
            await self._notify(conn, {"rescue"})
        return {
            "interrupted": len(interrupted_rows),
            "requeued": len(requeued_rows),
            "released": released.rowcount,
            "lost": lost,
        }

    async def _end_memory_only(
        self,
        conn: AsyncConnection,
        mine: sa.ColumnElement[bool],
        instance: str,
        *,
        now: datetime,
        reason: str,
    ) -> int:
        """End the memory-only tasks among ``mine`` (running or pending) as
        ``interrupted``: nothing stored can run them again. Returns how many."""
        why = f"{reason}; {MEMORY_ONLY_LOST}"
        memory = tasks.c.payload.startswith(MEMORY_ONLY, autoescape=True)
        ended = 0
        for status in ("running", "pending"):
            rows = list(
                await conn.execute(
                    tasks.update()
                    .where(mine, memory, tasks.c.status == status)
                    .values(status="interrupted", finished_at=now, error=why, owner=None)
                    .returning(tasks.c.id, tasks.c.attempts, tasks.c.started_at)
                )
            )
            if status == "running":
                await self._end_attempts(conn, rows, instance, now=now, why=why)
            ended += len(rows)
        return ended

    async def _end_attempts(
        self,
        conn: AsyncConnection,
        rows: Sequence[sa.Row[Any]],
        instance: str,
        *,
        now: datetime,
        why: str,
    ) -> None:
        """Record the running attempts of ``rows`` (settled tasks: ``id``, ``attempts``,
        ``started_at``) as interrupted on ``instance``. The task row then no longer
        describes them: it ends, or waits for its next attempt."""
        if not rows:
            return
        insert = self.upsert(task_attempts)
        statement = insert.on_conflict_do_update(
            index_elements=["task_id", "attempt"],
            set_={name: insert.excluded[name] for name in ATTEMPT_END_COLUMNS},
        )
        await conn.execute(
            statement,
            [
                {
                    "task_id": row.id,
                    "attempt": row.attempts,
                    "instance": instance,
                    "started_at": row.started_at or now,
                    "finished_at": now,
                    "status": "interrupted",
                    "error": why,
                    "traceback": None,
                }
                for row in rows
            ],
        )

    # -- meta ----------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value from the meta table, or None."""
        async with self.read() as conn:
            return await conn.scalar(sa.select(meta.c.value).where(meta.c.key == key))

    async def set_meta(self, key: str, value: str, *, now: datetime) -> None:
        """Insert or replace a value in the meta table."""
        insert = self.upsert(meta)
        statement = insert.values(key=key, value=value, updated_at=now).on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at": now}
        )
        async with self.write() as conn:
            await conn.execute(statement)
