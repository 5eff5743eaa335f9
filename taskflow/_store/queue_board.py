"""The database's side of the dashboard's Queues page: per queue, what waits, what runs,
what finished lately, who serves it and whether it is paused.

Every figure comes through an index, so the page costs about the same with a million
stored tasks as with a hundred: the per-queue counts and the oldest waiting task are
those of :mod:`taskflow._store.gauges` (ranges of the claim index ``(status, queue,
next_attempt_at)``, counts capped), a queue's next deferred task is the first entry of
its deferred range, and throughput counts the tasks of the ``finished_at`` index range
of the last few minutes (capped).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.gauges import COUNT_CAP, MAX_INSTANCES, QueueGauges, _queue_gauges
from taskflow._store.rows import InstanceRow, QueuePause
from taskflow._store.schema import instances, queue_pauses, tasks
from taskflow._store.sql import SQLStore

__all__ = ["COUNT_CAP", "QueueBoard", "QueueBoardReader", "QueueFigures"]

FINISHED = ("success", "failed", "cancelled", "interrupted")


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's tasks right now.

    Attributes:
        gauges: running, waiting (due), deferred and the oldest due task (capped counts).
        next_deferred: when the earliest deferred task becomes due (None: none deferred).
        finished: tasks of the queue that finished since the board's ``finished_since``
            (capped at :data:`COUNT_CAP` over all queues).
    """

    gauges: QueueGauges
    next_deferred: datetime | None
    finished: int


@dataclass(frozen=True, slots=True)
class QueueBoard:
    """The Queues page's figures at one moment.

    Attributes:
        queues: each queue that holds pending or running tasks or was asked for, by name.
        live_instances: instances whose heartbeat is recent, newest heartbeat first.
        paused: the paused queues, by name.
    """

    queues: list[QueueFigures]
    live_instances: list[InstanceRow]
    paused: dict[str, QueuePause]


class QueueBoardReader:
    """Reads a :class:`QueueBoard` from ``store``.

    Args:
        store: the manager's open :class:`SQLStore`.
    """

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def read(
        self,
        *,
        queues: Iterable[str],
        now: datetime,
        live_since: datetime,
        finished_since: datetime,
    ) -> QueueBoard:
        """The figures at ``now``, in one read transaction.

        Args:
            queues: queues to report even when they hold no task (configured ones, the
                queues of registered functions); served and paused queues are added.
            now: the current time; tasks due at or before it are waiting.
            live_since: instances whose last heartbeat is older are not live.
            finished_since: throughput counts tasks finished since then.
        """
        async with self.store.read() as conn:
            live = await _live_instances(conn, live_since)
            paused = await _paused(conn)
            named = set(queues) | set(paused)
            named |= {name for instance in live for name in instance.queues or ()}
            gauges = await _queue_gauges(conn, sorted(named), now)
            finished = await _finished(conn, finished_since)
            figures = [
                QueueFigures(
                    gauges=gauge,
                    next_deferred=await _next_deferred(conn, gauge, now),
                    finished=finished.get(gauge.name, 0),
                )
                for gauge in gauges
            ]
        return QueueBoard(queues=figures, live_instances=live, paused=paused)


async def _live_instances(conn: AsyncConnection, since: datetime) -> list[InstanceRow]:
    query = (
        sa.select(instances)
        .where(instances.c.heartbeat_at >= since)
        .order_by(instances.c.heartbeat_at.desc())
        .limit(MAX_INSTANCES)
    )
    return [InstanceRow.of(row) for row in (await conn.execute(query)).mappings()]


async def _paused(conn: AsyncConnection) -> dict[str, QueuePause]:
    query = sa.select(queue_pauses).order_by(queue_pauses.c.queue)
    rows = (await conn.execute(query)).mappings()
    return {pause.queue: pause for pause in map(QueuePause.of, rows)}


async def _next_deferred(
    conn: AsyncConnection, gauge: QueueGauges, now: datetime
) -> datetime | None:
    """The first entry of the queue's deferred range of the claim index."""
    if not gauge.deferred:
        return None
    query = (
        sa.select(tasks.c.next_attempt_at)
        .where(
            tasks.c.status == "pending",
            tasks.c.queue == gauge.name,
            tasks.c.next_attempt_at > now,
        )
        .order_by(tasks.c.next_attempt_at)
        .limit(1)
    )
    return await conn.scalar(query)


async def _finished(conn: AsyncConnection, since: datetime) -> dict[str, int]:
    """Tasks finished since ``since`` per queue: a range of the ``finished_at`` index
    (at most :data:`COUNT_CAP` rows read)."""
    recent = (
        sa.select(tasks.c.queue)
        .where(tasks.c.finished_at >= since, tasks.c.status.in_(FINISHED))
        .limit(COUNT_CAP)
        .subquery()
    )
    query = sa.select(recent.c.queue, sa.func.count()).group_by(recent.c.queue)
    return {str(queue): int(count) for queue, count in await conn.execute(query)}
