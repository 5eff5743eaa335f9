"""Task counts per minute for the Overview's charts, rolled up from the task rows.

A chart over a day would otherwise count every task of the day. Instead, each closed
minute is counted once into ``taskflow_stats_minutes`` (one row per minute, queue and
function, plus the rows of every queue and of every function, so any filter reads one
row per minute), and the charts add up those rows.

* A minute is closed once it ended :data:`GRACE` ago: a task's times are stamped by the
  process that runs it and may reach the database a little later (group commit, clocks
  of different processes). The open minutes are counted from the task rows as before.
* The minutes rolled up form one range, ``[from, until)``, kept in ``taskflow_meta``.
  The charts extend it towards their window (a window apart from it starts a new
  range), :data:`CHUNK` at a time, each chunk in one write transaction that takes the
  rollup's lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
  PostgreSQL) and re-reads the range; rows are inserted with ``ON CONFLICT DO
  NOTHING``. Processes filling at once never count a minute twice.
* A closed minute is not counted again: a task whose times change after its minute was
  rolled up (a retry restarts it, a failure is retried from the dashboard, retention
  deletes it) keeps its old place in the rollup, while the task rows show it at its new
  time. Retention of tasks keeps the rollups; the rollups older than the charts'
  horizon (the task retention, else :data:`DEFAULT_KEEP`) are deleted as the range moves.
* Wait times (creation to start) are kept as a histogram whose buckets are
  :data:`WAIT_STEPS` per doubling (:func:`wait_bucket`), with the sum, the smallest and the
  largest wait. A percentile read from it is the geometric middle of its bucket, held
  within the smallest and largest wait: at most 4.5 % (or 1 ms) from the nearest-rank
  value of the same tasks, and exact for the smallest and the largest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.schema import UTCDateTime, meta, stats_minutes, tasks
from taskflow._store.sql import SQLStore

# How long after its end a minute is rolled up (see the module's docstring).
GRACE = timedelta(minutes=2)
# How far back the rollups are kept when tasks have no retention.
DEFAULT_KEEP = timedelta(days=8)
# Minutes rolled up per write transaction.
CHUNK = timedelta(minutes=60)
# Wait-time histogram: buckets per doubling, and the smallest wait told apart (seconds).
WAIT_STEPS = 8
WAIT_FLOOR = 0.001
# The final statuses counted apart (``success`` is the rest of ``processed``).
ENDED = ("failed", "cancelled", "interrupted", "rejected")
COUNTS = ("enqueued", "started", "processed", *ENDED, "ended_unstarted")
# taskflow_meta keys of the range rolled up.
ROLLED_FROM = "stats_minutes_from"
ROLLED_UNTIL = "stats_minutes_until"
# pg_advisory_xact_lock key of the filler ("tfstats" as bytes).
_PG_LOCK = int.from_bytes(b"tfstats", "big")
_ALL = ""  # the queue or function of the rows that count them all
# Grouped by the label of the minute: PostgreSQL would not match the expression itself,
# whose bound parameters differ between SELECT and GROUP BY.
_M: sa.ColumnClause[Any] = sa.literal_column("m")
# A range of minutes, [start, end).
Span = tuple[datetime, datetime]


def wait_bucket(seconds: float) -> int:
    """The histogram bucket of a wait: ``floor(WAIT_STEPS * log2(seconds))``, waits
    under :data:`WAIT_FLOOR` counted as that."""
    return math.floor(WAIT_STEPS * math.log2(max(seconds, WAIT_FLOOR)))


@dataclass(slots=True)
class WaitTimes:
    """The wait times of one chart bucket: exact values (sorted), a histogram of
    rolled-up minutes, or both; and their nearest-rank percentiles."""

    values: list[float] = field(default_factory=list)
    buckets: dict[str, int] = field(default_factory=dict)  # as stored: keys are text
    low: float | None = None
    high: float | None = None

    @property
    def count(self) -> int:
        """How many waits the percentiles are taken from."""
        return len(self.values) + sum(self.buckets.values())

    def add_histogram(self, stored: str, low: float, high: float) -> None:
        """Merge a rolled-up minute's histogram (its stored JSON) with its smallest and
        largest wait."""
        buckets = self.buckets
        get = buckets.get
        for bucket, number in json.loads(stored).items():
            buckets[bucket] = get(bucket, 0) + number
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def percentile(self, fraction: float) -> float | None:
        """The ``fraction`` percentile (nearest rank), None without waits: exact from
        values alone, else estimated from the histogram (see the module docstring)."""
        total = self.count
        if not total:
            return None
        rank = min(total - 1, max(0, int(round(fraction * total + 0.5)) - 1))
        if not self.buckets:
            return self.values[rank]
        merged: dict[int, int] = {}
        for key, number in self.buckets.items():
            merged[int(key)] = merged.get(int(key), 0) + number
        for value in self.values:
            merged[wait_bucket(value)] = merged.get(wait_bucket(value), 0) + 1
        low = min(v for v in (self.low, *self.values[:1]) if v is not None)
        high = max(v for v in (self.high, *self.values[-1:]) if v is not None)
        if rank == 0:
            return low
        if rank == total - 1:
            return high
        seen = 0
        for bucket in sorted(merged):
            seen += merged[bucket]
            if seen > rank:
                middle = 2 ** ((bucket + 0.5) / WAIT_STEPS)
                return min(high, max(low, middle))
        return high


@dataclass(slots=True)
class Minute:
    """A rolled-up minute of one queue and function (or all of them)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    wait_sum: float = 0.0
    wait_min: float | None = None
    wait_max: float | None = None
    wait_buckets: dict[int, int] = field(default_factory=dict)

    def add_waits(self, bucket: int, number: int, total: float, low: float, high: float) -> None:
        """Count ``number`` waits of histogram ``bucket``."""
        self.wait_buckets[bucket] = self.wait_buckets.get(bucket, 0) + number
        self.wait_sum += total
        self.wait_min = low if self.wait_min is None else min(self.wait_min, low)
        self.wait_max = high if self.wait_max is None else max(self.wait_max, high)

    def row(self, minute: datetime, queue: str, func_name: str) -> dict[str, Any]:
        """The table row of this minute."""
        return {
            "queue": queue,
            "func_name": func_name,
            "minute": minute,
            **self.counts,
            "wait_sum": self.wait_sum,
            "wait_min": self.wait_min,
            "wait_max": self.wait_max,
            "wait_buckets": json.dumps(
                {str(bucket): number for bucket, number in sorted(self.wait_buckets.items())}
            ),
        }


@dataclass(frozen=True, slots=True)
class RolledMinute:
    """A minute read back from the rollups."""

    minute: datetime
    counts: dict[str, int]
    wait_min: float | None
    wait_max: float | None
    wait_buckets: str  # JSON, as stored


def minute_floor(moment: datetime) -> datetime:
    """The start of the minute holding ``moment``."""
    return moment.replace(second=0, microsecond=0)


async def roll_up(
    store: SQLStore, *, since: datetime, until: datetime, horizon: datetime
) -> tuple[datetime, datetime] | None:
    """Extend the rolled-up range to cover ``[since, until)`` (whole minutes, ``until``
    at most the first open minute), drop the rollups before ``horizon``, and return the
    range rolled up, or None when there is none."""
    async with store.read() as conn:
        rolled = await _rolled(conn)
    if (rolled is None or rolled[0] >= horizon) and _next_chunk(rolled, since, until) is None:
        return rolled
    while True:
        async with store.write() as conn:
            if store.dialect == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK)))
            rolled = await _rolled(conn)
            rolled = await _prune(conn, rolled, horizon)
            chunk = _next_chunk(rolled, since, until)
            if chunk is None:
                return rolled
            (lo, hi), (first, last) = chunk
            await _roll_chunk(conn, lo, hi, store.dialect)
            await _set_mark(conn, ROLLED_FROM, first, store.dialect)
            await _set_mark(conn, ROLLED_UNTIL, last, store.dialect)


async def read_minutes(
    conn: AsyncConnection,
    *,
    since: datetime,
    until: datetime,
    queue: str | None,
    func_name: str | None,
) -> list[RolledMinute]:
    """The rolled-up minutes in ``[since, until)`` of ``queue`` and ``func_name`` (None:
    all), those without tasks left out."""
    columns = [stats_minutes.c[name] for name in COUNTS]
    query = sa.select(
        stats_minutes.c.minute,
        stats_minutes.c.wait_min,
        stats_minutes.c.wait_max,
        stats_minutes.c.wait_buckets,
        *columns,
    ).where(
        stats_minutes.c.queue == (queue or _ALL),
        stats_minutes.c.func_name == (func_name or _ALL),
        stats_minutes.c.minute >= since,
        stats_minutes.c.minute < until,
    )
    return [
        RolledMinute(
            minute=minute,
            counts=dict(zip(COUNTS, numbers, strict=True)),
            wait_min=low,
            wait_max=high,
            wait_buckets=buckets,
        )
        for minute, low, high, buckets, *numbers in await conn.execute(query)
    ]


def _next_chunk(
    rolled: tuple[datetime, datetime] | None, since: datetime, until: datetime
) -> tuple[Span, Span] | None:
    """The next minutes to roll up towards ``[since, until)``, and the range rolled up
    after them: the range grows before, then after, in one piece. A window apart from
    it starts a new range (the rows of the old one stay: rolling up one of their
    minutes again keeps the row there)."""
    if until <= since:
        return None
    if rolled is None or since > rolled[1] or until < rolled[0]:
        chunk = (since, min(until, since + CHUNK))
        return chunk, chunk
    first, last = rolled
    if since < first:
        lo = max(since, first - CHUNK)
        return (lo, first), (lo, last)
    if until > last:
        hi = min(until, last + CHUNK)
        return (last, hi), (first, hi)
    return None


async def _rolled(conn: AsyncConnection) -> tuple[datetime, datetime] | None:
    marks = dict(
        (
            await conn.execute(
                sa.select(meta.c.key, meta.c.value).where(
                    meta.c.key.in_((ROLLED_FROM, ROLLED_UNTIL))
                )
            )
        ).all()
    )
    if len(marks) < 2:
        return None
    return (
        datetime.fromisoformat(marks[ROLLED_FROM]),
        datetime.fromisoformat(marks[ROLLED_UNTIL]),
    )


async def _prune(
    conn: AsyncConnection, rolled: tuple[datetime, datetime] | None, horizon: datetime
) -> tuple[datetime, datetime] | None:
    """Drop the rollups before ``horizon``; the range left (None: none)."""
    await conn.execute(stats_minutes.delete().where(stats_minutes.c.minute < horizon))
    if rolled is None or rolled[0] >= horizon:
        return rolled
    if rolled[1] <= horizon:
        await conn.execute(meta.delete().where(meta.c.key.in_((ROLLED_FROM, ROLLED_UNTIL))))
        return None
    dialect = conn.dialect.name
    await _set_mark(conn, ROLLED_FROM, horizon, dialect)
    return horizon, rolled[1]


async def _set_mark(conn: AsyncConnection, key: str, moment: datetime, dialect: str) -> None:
    now = datetime.now(UTC)
    values = {"key": key, "value": moment.astimezone(UTC).isoformat(), "updated_at": now}
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(meta).values(values)
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
        )
    )


def _minute_of(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """``column``'s minute: text ``YYYY-MM-DD HH:MM`` on SQLite (as stored), a
    timestamp on PostgreSQL."""
    if dialect == "postgresql":
        return sa.func.date_trunc("minute", column)
    return sa.func.substr(column, 1, 16)


def _minute_value(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value + ":00").replace(tzinfo=UTC)
    moment: datetime = value
    return moment.astimezone(UTC)


def _wait_seconds(dialect: str) -> sa.ColumnElement[float]:
    if dialect == "postgresql":
        return sa.cast(sa.func.extract("epoch", tasks.c.started_at - tasks.c.created_at), sa.Float)
    return (sa.func.julianday(tasks.c.started_at) - sa.func.julianday(tasks.c.created_at)) * 86400.0


def _wait_bucket_sql(seconds: sa.ColumnElement[float], dialect: str) -> sa.ColumnElement[int]:
    floor = sa.literal(WAIT_FLOOR, sa.Float)
    if dialect == "postgresql":
        log2 = sa.func.ln(sa.func.greatest(seconds, floor)) / math.log(2)
    else:
        log2 = sa.func.log2(sa.func.max(seconds, floor))
    return sa.cast(sa.func.floor(WAIT_STEPS * log2), sa.Integer)


def _grouped_waits(rows: Iterable[Any]) -> list[tuple[Any, ...]]:
    """``(minute, queue, func_name, bucket, count, sum, min, max)`` of the rows
    ``(minute, queue, func_name, wait seconds)``, as the rollup's grouped query gives
    them."""
    groups: dict[tuple[Any, str, str, int], list[float]] = {}
    for minute, queue, func_name, seconds in rows:
        wait = float(seconds)
        key = (minute, queue, func_name, wait_bucket(wait))
        found = groups.get(key)
        if found is None:
            groups[key] = [1, wait, wait, wait]
        else:
            found[0] += 1
            found[1] += wait
            found[2] = min(found[2], wait)
            found[3] = max(found[3], wait)
    return [(*key, int(group[0]), *group[1:]) for key, group in groups.items()]


async def _roll_chunk(conn: AsyncConnection, lo: datetime, hi: datetime, dialect: str) -> None:
    """Count the minutes ``[lo, hi)`` from the task rows and store them."""
    minutes: dict[tuple[datetime, str, str], Minute] = {}

    def each(minute: Any, queue: str, func_name: str) -> Iterable[Minute]:
        moment = _minute_value(minute)
        for key in ((queue, func_name), (queue, _ALL), (_ALL, func_name), (_ALL, _ALL)):
            yield minutes.setdefault((moment, *key), Minute())

    def bounds(column: sa.Column[Any]) -> list[sa.ColumnElement[bool]]:
        return [
            column >= sa.bindparam("lo", type_=UTCDateTime()),
            column < sa.bindparam("hi", type_=UTCDateTime()),
        ]

    params = {"lo": lo, "hi": hi}
    created = _minute_of(tasks.c.created_at, dialect)
    query = (
        sa.select(created.label("m"), tasks.c.queue, tasks.c.func_name, sa.func.count())
        .where(*bounds(tasks.c.created_at))
        .group_by(_M, tasks.c.queue, tasks.c.func_name)
    )
    for minute, queue, func_name, number in await conn.execute(query, params):
        for counted in each(minute, queue, func_name):
            counted.counts["enqueued"] += number

    started = _minute_of(tasks.c.started_at, dialect)
    seconds = _wait_seconds(dialect)
    bucket = _wait_bucket_sql(seconds, dialect)
    query = (
        sa.select(
            started.label("m"),
            tasks.c.queue,
            tasks.c.func_name,
            bucket.label("w"),
            sa.func.count(),
            sa.func.sum(seconds),
            sa.func.min(seconds),
            sa.func.max(seconds),
        )
        .where(*bounds(tasks.c.started_at))
        .group_by(_M, tasks.c.queue, tasks.c.func_name, sa.literal_column("w"))
    )
    try:
        waits: list[Any] = list(await conn.execute(query, params))
    except sa.exc.OperationalError:
        if dialect == "postgresql":
            raise
        # An SQLite built without its math functions (no log2): bucket in Python.
        plain = sa.select(started, tasks.c.queue, tasks.c.func_name, seconds)
        waits = _grouped_waits(await conn.execute(plain.where(*bounds(tasks.c.started_at)), params))
    for minute, queue, func_name, wait, number, total, low, high in waits:
        for counted in each(minute, queue, func_name):
            counted.counts["started"] += number
            counted.add_waits(int(wait), number, float(total), float(low), float(high))

    finished = _minute_of(tasks.c.finished_at, dialect)
    unstarted = sa.and_(
        tasks.c.status.in_(("cancelled", "rejected", "interrupted")),
        tasks.c.started_at.is_(None),
    )
    unstarted_flag = sa.case((unstarted, 1), else_=0)
    query = (
        sa.select(
            finished.label("m"),
            tasks.c.queue,
            tasks.c.func_name,
            tasks.c.status,
            unstarted_flag.label("u"),
            sa.func.count(),
        )
        .where(*bounds(tasks.c.finished_at))
        .group_by(_M, tasks.c.queue, tasks.c.func_name, tasks.c.status, sa.literal_column("u"))
    )
    for minute, queue, func_name, status, flag, number in await conn.execute(query, params):
        for counted in each(minute, queue, func_name):
            counted.counts["processed"] += number
            if status in ENDED:
                counted.counts[status] += number
            if flag:
                counted.counts["ended_unstarted"] += number

    if not minutes:
        return
    rows = [
        counted.row(minute, queue, func_name)
        for (minute, queue, func_name), counted in minutes.items()
    ]
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(stats_minutes)
    await conn.execute(insert.on_conflict_do_nothing(), rows)
