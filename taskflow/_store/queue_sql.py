"""The paused queues in SQL: one row per paused queue in ``taskflow_queue_pauses``."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from taskflow._store.database import Database
from taskflow._store.rows import PAUSES_CHANGED, QueuePause
from taskflow._store.schema import queue_pauses


class QueueSQL(Database):
    """Pausing and resuming queues."""

    async def pause_queue(self, queue: str, *, by: str, now: datetime) -> QueuePause:
        """Pause ``queue``; a queue paused already keeps who paused it and when.

        Listening instances are told at commit (PostgreSQL), so they stop claiming from
        it without waiting for their next poll.
        """
        insert = self.upsert(queue_pauses)
        statement = insert.values(queue=queue, paused_at=now, paused_by=by).on_conflict_do_nothing(
            index_elements=["queue"]
        )
        async with self.write() as conn:
            await conn.execute(statement)
            row = (
                await conn.execute(sa.select(queue_pauses).where(queue_pauses.c.queue == queue))
            ).mappings()
            paused = QueuePause.of(row.one())
            await self._notify(conn, {PAUSES_CHANGED})
        return paused

    async def resume_queue(self, queue: str) -> bool:
        """Resume ``queue``; False when it was not paused. Listening instances are told
        at commit (PostgreSQL), so its waiting tasks start at once."""
        async with self.write() as conn:
            result = await conn.execute(queue_pauses.delete().where(queue_pauses.c.queue == queue))
            if result.rowcount == 1:
                await self._notify(conn, {PAUSES_CHANGED})
        return result.rowcount == 1

    async def paused_queues(self) -> list[QueuePause]:
        """Every paused queue, by name."""
        async with self.read() as conn:
            query = sa.select(queue_pauses).order_by(queue_pauses.c.queue)
            return [QueuePause.of(row) for row in (await conn.execute(query)).mappings()]
