"""The database's side of the dashboard's Prometheus endpoint: queue depths, the age of
each queue's oldest waiting task, live instances and schedule lateness.

Every figure is read through an index that exists for the claim or the scheduler, so a
scrape costs about the same with a million stored tasks as with a hundred:

* the queues that hold pending or running tasks are found by skipping along the claim
  index ``(status, queue, next_attempt_at)``: one probe per distinct queue, never a scan;
* a queue's running, waiting (due now) and deferred (due later) tasks are counted on
  ranges of that index, each count capped (:data:`COUNT_CAP`), and its oldest waiting
  task is the first entry of its waiting range;
* live instances come from the heartbeat index, schedules from ``(enabled,
  next_run_at)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.schema import UTCDateTime, instances, schedules
from taskflow._store.sql import SQLStore

__all__ = ["COUNT_CAP", "GaugeReader", "Gauges", "QueueGauges"]

#: A queue's running, waiting and deferred tasks are counted up to this many each.
COUNT_CAP = 100_000
# At most this many queues, live instances and schedules are reported.
MAX_QUEUES = 200
MAX_INSTANCES = 1000
MAX_SCHEDULES = 1000

# The distinct queues of one status, skipping along the claim index (status, queue, ...):
# each step is one index probe for the next larger queue name.
_DISTINCT_QUEUES = """
{name}(queue, depth) AS (
    SELECT (SELECT queue FROM taskflow_tasks WHERE status = '{status}'
            ORDER BY queue LIMIT 1), 1
    UNION ALL
    SELECT (SELECT t.queue FROM taskflow_tasks t
            WHERE t.status = '{status}' AND t.queue > {name}.queue
            ORDER BY t.queue LIMIT 1), {name}.depth + 1
    FROM {name} WHERE {name}.queue IS NOT NULL AND {name}.depth < :max_queues
)"""

# A capped count of one queue's range of the claim index.
_CAPPED = """(SELECT count(*) FROM (SELECT 1 FROM taskflow_tasks t
    WHERE t.status = '{status}' AND t.queue = named.queue{more} LIMIT :cap) AS {alias})"""

# Each queue's figures, in one statement: the queues holding pending or running tasks,
# plus the named ones (``{named}``), and for each of them four index ranges.
_QUEUE_GAUGES = (
    "WITH RECURSIVE"
    + _DISTINCT_QUEUES.format(name="pending_queues", status="pending")
    + ","
    + _DISTINCT_QUEUES.format(name="running_queues", status="running")
    + """,
named(queue) AS (
    SELECT queue FROM pending_queues WHERE queue IS NOT NULL
    UNION SELECT queue FROM running_queues WHERE queue IS NOT NULL{named}
)
SELECT named.queue AS queue,
    """
    + _CAPPED.format(status="running", more="", alias="r")
    + """ AS running,
    """
    + _CAPPED.format(status="pending", more=" AND t.next_attempt_at <= :now", alias="w")
    + """ AS waiting,
    """
    + _CAPPED.format(status="pending", more=" AND t.next_attempt_at > :now", alias="d")
    + """ AS deferred,
    (SELECT t.next_attempt_at FROM taskflow_tasks t
     WHERE t.status = 'pending' AND t.queue = named.queue AND t.next_attempt_at <= :now
     ORDER BY t.next_attempt_at LIMIT 1) AS oldest
FROM named ORDER BY named.queue LIMIT :max_queues"""
)


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """One queue's tasks right now.

    Attributes:
        name: the queue.
        running: tasks running (capped at :data:`COUNT_CAP`).
        waiting: pending tasks that are due (capped).
        deferred: pending tasks due later: deferred, or waiting out a retry delay (capped).
        oldest_due: when the oldest waiting task became due, or None when none waits.
    """

    name: str
    running: int
    waiting: int
    deferred: int
    oldest_due: datetime | None


@dataclass(frozen=True, slots=True)
class Gauges:
    """The database's figures at one moment.

    Attributes:
        queues: each queue that holds pending or running tasks or was asked for.
        live_instances: the queues each live instance serves, one list per instance.
        schedules: ``(name, next_run_at)`` of each enabled schedule, most overdue first.
    """

    queues: list[QueueGauges]
    live_instances: list[list[str]]
    schedules: list[tuple[str, datetime]]


class GaugeReader:
    """Reads :class:`Gauges` from ``store``.

    Args:
        store: the manager's open :class:`SQLStore`.
    """

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def read(self, *, queues: Iterable[str], now: datetime, live_since: datetime) -> Gauges:
        """The figures at ``now``, in one read transaction.

        Args:
            queues: queues to report even when they hold no task (the configured ones).
            now: the current time; tasks due at or before it are waiting.
            live_since: instances whose last heartbeat is older are not live.
        """
        async with self.store.read() as conn:
            per_queue = await _queue_gauges(conn, sorted(set(queues)), now)
            live = await _live_instances(conn, live_since)
            due = await _schedules(conn)
        return Gauges(queues=per_queue, live_instances=live, schedules=due)


async def _queue_gauges(
    conn: AsyncConnection, named: Sequence[str], now: datetime
) -> list[QueueGauges]:
    extra = "".join(
        f"\n    UNION SELECT CAST(:named_{index} AS VARCHAR(100))" for index in range(len(named))
    )
    query = (
        sa.text(_QUEUE_GAUGES.format(named=extra))
        .bindparams(sa.bindparam("now", type_=UTCDateTime()))
        .columns(
            sa.column("queue", sa.String()),
            sa.column("running", sa.Integer()),
            sa.column("waiting", sa.Integer()),
            sa.column("deferred", sa.Integer()),
            sa.column("oldest", UTCDateTime()),
        )
    )
    values: dict[str, Any] = {"now": now, "cap": COUNT_CAP, "max_queues": MAX_QUEUES}
    values |= {f"named_{index}": name for index, name in enumerate(named)}
    return [
        QueueGauges(
            name=str(row.queue),
            running=int(row.running or 0),
            waiting=int(row.waiting or 0),
            deferred=int(row.deferred or 0),
            oldest_due=row.oldest,
        )
        for row in await conn.execute(query, values)
    ]


async def _live_instances(conn: AsyncConnection, since: datetime) -> list[list[str]]:
    query = (
        sa.select(instances.c.queues)
        .where(instances.c.heartbeat_at >= since)
        .order_by(instances.c.heartbeat_at.desc())
        .limit(MAX_INSTANCES)
    )
    return [[str(name) for name in row.queues or ()] for row in await conn.execute(query)]


async def _schedules(conn: AsyncConnection) -> list[tuple[str, datetime]]:
    query = (
        sa.select(schedules.c.name, schedules.c.next_run_at)
        .where(schedules.c.enabled.is_(True), schedules.c.next_run_at.is_not(None))
        .order_by(schedules.c.next_run_at)
        .limit(MAX_SCHEDULES)
    )
    return [(row.name, row.next_run_at) for row in await conn.execute(query)]
