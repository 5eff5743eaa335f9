"""The Overview's chart series: tasks created, started and finished per time bucket,
the tasks waiting, and wait times.

Each figure is a range count of an index on the time it counts, built once per shape
(SQLite: a UNION of one range per bucket; PostgreSQL: one statement over arrays of bucket
edges). Closed minutes come from the rollups of :mod:`taskflow._store.stats_minutes`
when asked to. :class:`SeriesSQL` is a part of
:class:`~taskflow._store.dashboard.DashboardStore`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.rows import FinishedRun
from taskflow._store.schema import UTCDateTime, tasks
from taskflow._store.sql import SQLStore
from taskflow._store.stats_minutes import (
    DEFAULT_KEEP,
    GRACE,
    WaitTimes,
    minute_floor,
    read_minutes,
    roll_up,
)

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]

# The statuses a task ends in.
FINAL_STATUSES = ("success", "failed", "cancelled", "interrupted", "rejected")
# The final statuses a task can reach without starting: cancelled while pending,
# rejected by a full queue, a memory-only task lost with its instance.
ENDS_UNSTARTED = ("cancelled", "rejected", "interrupted")
# Wait times per chart bucket: about this many tasks, the first to start in each of up
# to WAIT_SAMPLE_PARTS equal parts of the bucket (at most WAIT_SAMPLE_TOTAL_PARTS parts
# over all buckets).
WAIT_SAMPLE = 250
WAIT_SAMPLE_PARTS = 10
WAIT_SAMPLE_TOTAL_PARTS = 120


@dataclass(slots=True)
class Buckets:
    """Finished tasks per time bucket and status: ``counts[status][i]`` is the count
    of bucket ``i``, which starts at ``start + i * size`` seconds."""

    start: datetime
    size: int
    count: int
    counts: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Series:
    """Task flow per time bucket (bucket ``i`` is ``[start + i * size, start + (i + 1) *
    size)``), for the Overview's charts. Lists have one value per bucket.

    Attributes:
        enqueued: tasks created in the bucket.
        started: tasks whose (latest) attempt started in the bucket.
        processed: tasks that reached a final status in the bucket.
        ended: of those, the ones per final status other than ``success`` (the rest
            succeeded).
        ended_unstarted: tasks that reached a final status in the bucket without ever
            starting (cancelled before start, rejected, lost memory-only tasks).
        waiting_at_end: tasks waiting at the end of the last bucket: created before it
            and neither started nor finished before it.
        waits: seconds from creation to start of tasks started in the bucket: from the
            task rows all of them when few, else a sample of about :data:`WAIT_SAMPLE`,
            the first to start in each of several equal parts of the bucket; from the
            rollups a histogram of all of them.
    """

    start: datetime
    size: int
    count: int
    enqueued: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)
    ended: dict[str, list[int]] = field(default_factory=dict)
    ended_unstarted: list[int] = field(default_factory=list)
    waiting_at_end: int = 0
    waits: list[WaitTimes] = field(default_factory=list)


class SeriesSQL:
    """The charts' reads, through ``_store``'s transactions."""

    _store: SQLStore
    _retention_days: Callable[[], float | None] | None

    async def finished_buckets(
        self,
        *,
        start: datetime,
        size: int,
        count: int,
        statuses: Sequence[str],
        func_name: str | None = None,
        queue: str | None = None,
    ) -> Buckets:
        """Tasks that finished in ``statuses`` per ``size``-second bucket from ``start``
        (of one function and one queue, when given).

        Each bucket is one range count on the (status, finished_at) index, or on
        (func_name, finished_at) for one function: counting index entries is many times
        cheaper than grouping them by a computed bucket."""
        result = Buckets(start=start, size=size, count=count)
        params = _edges(start, size, count) | {"func_name": func_name, "queue": queue}
        where = ("status", *_shape(func_name, queue))
        leads = ("func",) if func_name else ("status",)
        query = _range_counts("finished_at", count, where, leads, self._store.dialect)
        async with self._store.read() as conn:
            for status in statuses:
                result.counts[status] = await _counts(
                    conn, query, count, params | {"status": status}
                )
        return result

    async def task_series(
        self,
        *,
        start: datetime,
        size: int,
        count: int,
        func_name: str | None = None,
        queue: str | None = None,
        now: datetime | None = None,
        keep: timedelta | None = None,
    ) -> Series:
        """Tasks created, started and finished per ``size``-second bucket from ``start``,
        the tasks waiting at the window's end, and the wait times per bucket (see
        :class:`Series`); of one function and one queue, when given.

        With ``now``, the closed minutes of the window come from the per-minute rollups
        of :mod:`taskflow._store.stats_minutes` (rolled up first where missing; those
        older than ``keep``, default the task retention or
        :data:`~taskflow._store.stats_minutes.DEFAULT_KEEP`, are deleted), and only the
        rest from the task rows.

        From the task rows, every figure is a range of an index on the time it counts
        (``created_at``, ``started_at``, ``finished_at``, or the function's
        ``(func_name, created_at)`` and ``(func_name, finished_at)``), read per bucket; a
        queue is checked in the rows of the window. The tasks waiting at the end are the
        pending ones that never started (an index range of the pending tasks), plus
        those whose start or end lies after it."""
        shape = _shape(func_name, queue)
        edges = [start + timedelta(seconds=size * index) for index in range(count + 1)]
        rolled = None
        if now is not None:
            rolled = await self._rolled_part(edges[0], edges[-1], now=now, keep=keep)
        series = Series(
            start=start,
            size=size,
            count=count,
            enqueued=[0] * count,
            started=[0] * count,
            processed=[0] * count,
            ended={status: [0] * count for status in FINAL_STATUSES[1:]},
            ended_unstarted=[0] * count,
            waits=[WaitTimes() for _ in range(count)],
        )
        params = {"func_name": func_name, "queue": queue}
        async with self._store.read() as conn:
            for lo, hi in _raw_parts(edges[0], edges[-1], rolled):
                part = [lo, *(edge for edge in edges if lo < edge < hi), hi]
                await self._add_raw(conn, series, part, shape, params)
            if rolled is not None:
                await self._add_rolled(conn, series, rolled, func_name, queue)
            end = {"end": edges[-1]}
            waiting = await conn.scalar(_waiting_at(shape, self._store.dialect), params | end)
            series.waiting_at_end = int(waiting or 0)
        for waits in series.waits:
            waits.values.sort()
        return series

    async def _rolled_part(
        self, start: datetime, end: datetime, *, now: datetime, keep: timedelta | None
    ) -> tuple[datetime, datetime] | None:
        """The part of ``[start, end)`` the rollups cover, after rolling up what is
        missing of it."""
        if keep is None:
            days = self._retention_days() if self._retention_days else None
            keep = timedelta(days=days) if days else DEFAULT_KEEP
        horizon = minute_floor(now - keep)
        since, until = max(start, horizon), min(end, minute_floor(now - GRACE))
        if until <= since:
            return None
        rolled = await roll_up(self._store, since=since, until=until, horizon=horizon)
        if rolled is None:
            return None
        lo, hi = max(start, rolled[0]), min(end, rolled[1])
        return (lo, hi) if lo < hi else None

    async def _add_raw(
        self,
        conn: AsyncConnection,
        series: Series,
        edges: list[datetime],
        shape: tuple[str, ...],
        params: dict[str, Any],
    ) -> None:
        """Add the counts and waits of the task rows between consecutive ``edges`` (each
        range inside one bucket of ``series``)."""
        count = len(edges) - 1
        dialect = self._store.dialect
        buckets = [int((edge - series.start).total_seconds()) // series.size for edge in edges]
        func = ("func",) if "func" in shape else ()
        params = params | _edge_params(edges)

        async def add(totals: list[int], query: sa.Executable, extra: dict[str, Any]) -> None:
            for index, number in enumerate(await _counts(conn, query, count, params | extra)):
                totals[buckets[index]] += number

        await add(series.enqueued, _range_counts("created_at", count, shape, func, dialect), {})
        await add(series.started, _range_counts("started_at", count, shape, (), dialect), {})
        await add(series.processed, _range_counts("finished_at", count, shape, func, dialect), {})
        unstarted = ("unstarted", *shape)
        await add(
            series.ended_unstarted,
            _range_counts("finished_at", count, unstarted, ("unstarted",), dialect),
            {},
        )
        # Few tasks end other than in success: their index ranges are short, so
        # successes are counted as the rest rather than over their long range.
        by_status = _range_counts("finished_at", count, ("status", *shape), ("status",), dialect)
        for status in FINAL_STATUSES[1:]:
            await add(series.ended[status], by_status, {"status": status})
        per_bucket, _ = _wait_slots(count)
        slots = [
            edges[index] + (edges[index + 1] - edges[index]) * part / per_bucket
            for index in range(count)
            for part in range(per_bucket)
        ] + [edges[-1]]
        slot_params = {
            name.replace("edge_", "slot_"): value for name, value in _edge_params(slots).items()
        }
        query = _wait_sample(count, shape, dialect)
        for position, seconds in await conn.execute(query, params | slot_params):
            series.waits[buckets[int(position) // per_bucket]].values.append(float(seconds))

    async def _add_rolled(
        self,
        conn: AsyncConnection,
        series: Series,
        rolled: tuple[datetime, datetime],
        func_name: str | None,
        queue: str | None,
    ) -> None:
        """Add the rolled-up minutes of ``rolled`` (inside the window of ``series``)."""
        minutes = await read_minutes(
            conn, since=rolled[0], until=rolled[1], queue=queue, func_name=func_name
        )
        for minute in minutes:
            index = int((minute.minute - series.start).total_seconds()) // series.size
            counts = minute.counts
            series.enqueued[index] += counts["enqueued"]
            series.started[index] += counts["started"]
            series.processed[index] += counts["processed"]
            series.ended_unstarted[index] += counts["ended_unstarted"]
            for status in FINAL_STATUSES[1:]:
                series.ended[status][index] += counts[status]
            if minute.wait_min is not None and minute.wait_max is not None:
                series.waits[index].add_histogram(
                    minute.wait_buckets, minute.wait_min, minute.wait_max
                )

    async def recent_finished(
        self, *, statuses: Sequence[str], limit: int, func_name: str | None = None
    ) -> list[FinishedRun]:
        """The ``limit`` most recently finished tasks in ``statuses`` (of one function,
        when given)."""
        conditions: list[Condition] = [tasks.c.finished_at.is_not(None)]
        if func_name is not None:
            conditions.append(tasks.c.func_name == func_name)
        else:
            conditions.append(tasks.c.status.in_(list(statuses)))
        query = (
            sa.select(tasks.c.func_name, tasks.c.status, tasks.c.started_at, tasks.c.finished_at)
            .where(*conditions)
            .order_by(tasks.c.finished_at.desc())
            .limit(limit)
        )
        async with self._store.read() as conn:
            runs = [FinishedRun.of(row) for row in (await conn.execute(query)).mappings()]
        if func_name is not None:
            runs = [run for run in runs if run.status in statuses]
        return runs


def _edges(start: datetime, size: float, count: int) -> dict[str, Any]:
    """The edges of ``count`` buckets of ``size`` seconds from ``start``, as
    :func:`_edge_params` gives them."""
    return _edge_params([start + timedelta(seconds=size * index) for index in range(count + 1)])


def _edge_params(edges: list[datetime]) -> dict[str, Any]:
    """Bucket edges as :func:`_range_counts` and :func:`_wait_sample` take them:
    ``edge_0`` … ``edge_<count>`` (SQLite), and the arrays ``los`` and ``his`` of each
    bucket's start and end (PostgreSQL)."""
    params: dict[str, Any] = {f"edge_{index}": edge for index, edge in enumerate(edges)}
    return params | {"los": edges[:-1], "his": edges[1:]}


def _raw_parts(
    start: datetime, end: datetime, rolled: tuple[datetime, datetime] | None
) -> list[tuple[datetime, datetime]]:
    """The parts of ``[start, end)`` that the rollups (``rolled``) do not cover."""
    if rolled is None:
        return [(start, end)]
    return [(lo, hi) for lo, hi in ((start, rolled[0]), (rolled[1], end)) if lo < hi]


def _shape(func_name: str | None, queue: str | None) -> tuple[str, ...]:
    """The names of the filters in use (keys of :func:`_filter`)."""
    return tuple(name for name, value in (("func", func_name), ("queue", queue)) if value)


def _filter(name: str, *, lead: bool, dialect: str) -> Condition:
    """A condition of a chart query, by name; its values are bound parameters.

    On SQLite, a condition that must not choose the index (``lead`` false) reads its
    column as ``+column``, which SQLite never looks up in an index: without statistics
    it would prefer an index with more equality columns (``(status, queue, …)`` for a
    queue, ``(func_name, status, …)`` for a function) whose range the time does not
    bound, and read every row of that function or queue."""

    def column(col: sa.Column[Any]) -> sa.ColumnElement[Any]:
        if lead or dialect != "sqlite":
            return col
        return sa.literal_column(f"+{tasks.name}.{col.name}", type_=col.type)

    if name == "status":
        return column(tasks.c.status) == sa.bindparam("status", type_=sa.String())
    if name == "func":
        return column(tasks.c.func_name) == sa.bindparam("func_name", type_=sa.String())
    if name == "queue":
        return column(tasks.c.queue) == sa.bindparam("queue", type_=sa.String())
    if name == "unstarted":
        return sa.and_(
            column(tasks.c.status).in_(ENDS_UNSTARTED),
            _unindexed(tasks.c.started_at, dialect).is_(None),
        )
    raise ValueError(f"unknown chart filter {name!r}")


def _unindexed(col: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """``col``, which SQLite must not look up in an index (see :func:`_filter`)."""
    if dialect != "sqlite":
        return col
    return sa.literal_column(f"+{tasks.name}.{col.name}", type_=col.type)


async def _counts(
    conn: AsyncConnection, query: sa.Executable, count: int, params: dict[str, Any]
) -> list[int]:
    counts = [0] * count
    for index, total in await conn.execute(query, params):
        counts[int(index)] = int(total)
    return counts


@functools.lru_cache(maxsize=64)
def _range_counts(
    column: str, count: int, where: tuple[str, ...], leads: tuple[str, ...], dialect: str
) -> sa.Executable:
    """One query: ``(bucket index, count)`` of the rows whose ``column`` falls in each of
    ``count`` consecutive ranges, whose edges are the parameters ``edge_0`` …
    ``edge_<count>``, and that meet the :func:`_filter` conditions named in ``where``
    (those in ``leads`` may choose the index; the time bounds its range).

    Built once per shape: constructing a 60-part UNION in SQLAlchemy costs tens of
    milliseconds of Python, many times the query itself."""
    if dialect == "postgresql":
        return _pg_range_counts(column, where)
    column_ = tasks.c[column]
    edges = [sa.bindparam(f"edge_{index}", type_=UTCDateTime()) for index in range(count + 1)]
    conditions = [_filter(name, lead=name in leads, dialect=dialect) for name in where]
    return sa.union_all(
        *(
            sa.select(sa.literal(bucket).label("bucket"), sa.func.count().label("n"))
            .select_from(tasks)
            .where(column_ >= edges[bucket], column_ < edges[bucket + 1], *conditions)
            for bucket in range(count)
        )
    )


@functools.lru_cache(maxsize=16)
def _waiting_at(where: tuple[str, ...], dialect: str) -> sa.Select[Any]:
    """The tasks waiting at the parameter ``end``: created before it, and neither started
    nor finished before it. Pending tasks that never started are one index range of the
    pending ones (``(status, queue, …)`` for a queue, ``(func_name, status,
    created_at)`` for a function, else ``(status, created_at)``); the others are those
    whose start (or, never started, end) is at or after ``end`` (none, unless ``end`` is
    in the future or clocks disagree)."""
    end = sa.bindparam("end", type_=UTCDateTime())
    lead = "func" if "func" in where else "queue"

    def filters(*leads: str) -> list[Condition]:
        return [_filter(name, lead=name in leads, dialect=dialect) for name in where]

    def plain(col: sa.Column[Any]) -> sa.ColumnElement[Any]:
        return _unindexed(col, dialect)

    pending = [
        tasks.c.status == "pending",
        plain(tasks.c.started_at).is_(None),
        plain(tasks.c.finished_at).is_(None),
        (tasks.c.created_at if lead == "func" else plain(tasks.c.created_at)) < end,
        *filters(lead),
    ]
    later_start = [tasks.c.started_at >= end, plain(tasks.c.created_at) < end, *filters()]
    later_end = [
        tasks.c.finished_at >= end,
        plain(tasks.c.started_at).is_(None),
        plain(tasks.c.created_at) < end,
        *filters(),
    ]
    counts = [
        sa.select(sa.func.count()).select_from(tasks).where(*part).scalar_subquery()
        for part in (pending, later_start, later_end)
    ]
    return sa.select(counts[0] + counts[1] + counts[2])


# PostgreSQL: one statement per chart series, whatever the number of buckets. A UNION of
# 60 range counts costs PostgreSQL more to plan than to run; here each bucket (a row of
# the arrays of its edges) runs the same index range through a correlated subquery.
_PG_FILTERS = {
    "status": "t.status = :status",
    "func": "t.func_name = :func_name",
    "queue": "t.queue = :queue",
    "unstarted": "t.status IN ({}) AND t.started_at IS NULL".format(
        ", ".join(f"'{status}'" for status in ENDS_UNSTARTED)
    ),
}
_PG_EDGES = (
    "unnest(CAST(:los AS timestamptz[]), CAST(:his AS timestamptz[])) "
    "WITH ORDINALITY AS b(lo, hi, i)"
)


def _pg_edge_params(statement: sa.TextClause) -> sa.TextClause:
    edges = postgresql.ARRAY(sa.DateTime(timezone=True))
    return statement.bindparams(sa.bindparam("los", type_=edges), sa.bindparam("his", type_=edges))


def _pg_range_counts(column: str, where: tuple[str, ...]) -> sa.TextClause:
    extra = "".join(f" AND {_PG_FILTERS[name]}" for name in where)
    return _pg_edge_params(
        sa.text(
            f"SELECT b.i - 1, (SELECT count(*) FROM {tasks.name} t WHERE t.{column} >= b.lo "
            f"AND t.{column} < b.hi{extra}) FROM {_PG_EDGES}"
        )
    )


def _pg_wait_sample(where: tuple[str, ...], per_part: int) -> sa.TextClause:
    extra = "".join(f" AND {_PG_FILTERS[name]}" for name in where)
    return _pg_edge_params(
        sa.text(
            f"SELECT b.i - 1, w.seconds FROM {_PG_EDGES} CROSS JOIN LATERAL ("
            "SELECT CAST(EXTRACT(epoch FROM t.started_at - t.created_at) AS float8) AS seconds "
            f"FROM {tasks.name} t WHERE t.started_at >= b.lo AND t.started_at < b.hi{extra} "
            f"ORDER BY t.started_at LIMIT {int(per_part)}) w"
        )
    )


def _wait_slots(count: int) -> tuple[int, int]:
    """``(parts per bucket, tasks per part)`` of the wait-time sample: about
    :data:`WAIT_SAMPLE` tasks per bucket, from at most :data:`WAIT_SAMPLE_TOTAL_PARTS`
    parts in all (each part is one statement of a UNION, which SQLite caps at 500)."""
    parts = max(1, min(WAIT_SAMPLE_PARTS, WAIT_SAMPLE_TOTAL_PARTS // count))
    return parts, WAIT_SAMPLE // parts


@functools.lru_cache(maxsize=32)
def _wait_sample(count: int, where: tuple[str, ...], dialect: str) -> sa.Executable:
    """``(part index, seconds from creation to start)`` of the first tasks to start in
    each part of ``count`` buckets (:func:`_wait_slots`; edges ``slot_0`` …), read from
    the ``started_at`` index."""
    per_bucket, per_part = _wait_slots(count)
    if dialect == "postgresql":
        return _pg_wait_sample(where, per_part)
    slots = count * per_bucket
    edges = [sa.bindparam(f"slot_{index}", type_=UTCDateTime()) for index in range(slots + 1)]
    conditions = [_filter(name, lead=False, dialect=dialect) for name in where]
    if dialect == "postgresql":
        wait: sa.ColumnElement[float] = sa.cast(
            sa.func.extract("epoch", tasks.c.started_at - tasks.c.created_at), sa.Float
        )
    else:
        wait = (sa.func.julianday(tasks.c.started_at) - sa.func.julianday(tasks.c.created_at)) * (
            86400.0
        )
    parts = []
    for slot in range(slots):
        part = (
            sa.select(sa.literal(slot).label("slot"), wait.label("seconds"))
            .select_from(tasks)
            .where(
                tasks.c.started_at >= edges[slot],
                tasks.c.started_at < edges[slot + 1],
                *conditions,
            )
            .order_by(tasks.c.started_at)
            .limit(per_part)
            .subquery()
        )
        parts.append(sa.select(part.c.slot, part.c.seconds))
    return sa.union_all(*parts)
