"""The charts' per-minute rollups, on SQLite and PostgreSQL: closed minutes rolled up
count what the task rows count, survive the deletion of the tasks, are counted once by
fillers running at once, and are pruned with the retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from taskflow._store import stats_minutes as stats_minutes_module
from taskflow._store.dashboard import DashboardStore
from taskflow._store.schema import meta, stats_minutes, tasks
from taskflow._store.series import Series
from taskflow._store.sql import SQLStore
from taskflow._store.stats_minutes import ROLLED_FROM, ROLLED_UNTIL
from tests.test_admin_charts import END, ROWS, START, at, row

# Every minute of the last-hour window (11:01 … 12:00) is closed 3 minutes after it.
LATER = END + timedelta(minutes=3)
DAY_START = datetime(2024, 12, 31, 13, 0, tzinfo=END.tzinfo)
WINDOWS = {"1h": (START, 60, 60), "24h": (DAY_START, 3600, 24)}
FILTERS = [
    (None, None),
    ("parked", None),
    (None, "admin_fail"),
    ("default", "admin_ok"),
    ("other", None),
    ("default", None),
]

pytestmark = pytest.mark.anyio

Opener = Callable[[], Awaitable[SQLStore]]


@pytest.fixture
async def open_store(db_url: str) -> AsyncIterator[Opener]:
    """Open stores on the test database (each its own engine, as another process)."""
    opened: list[SQLStore] = []

    async def open_one() -> SQLStore:
        store = SQLStore(db_url)
        await store.open(auto_upgrade=False)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def seeded(open_store: Opener) -> SQLStore:
    store = await open_store()
    async with store.write() as conn:
        await conn.execute(tasks.insert(), [dict(values) for values in ROWS.values()])
    return store


async def series(
    queries: DashboardStore,
    window: str,
    queue: str | None = None,
    func: str | None = None,
    now: datetime | None = None,
) -> Series:
    start, size, count = WINDOWS[window]
    return await queries.task_series(
        start=start, size=size, count=count, queue=queue, func_name=func, now=now
    )


def counts(found: Series) -> dict[str, Any]:
    return {
        "enqueued": found.enqueued,
        "started": found.started,
        "processed": found.processed,
        "ended": found.ended,
        "ended_unstarted": found.ended_unstarted,
        "waits": [waits.count for waits in found.waits],
    }


def assert_same_waits(rolled: Series, raw: Series) -> None:
    """Percentiles from the rollups: within the documented 4.5 % of the exact ones."""
    for mine, exact in zip(rolled.waits, raw.waits, strict=True):
        for fraction in (0.5, 0.95):
            expected = exact.percentile(fraction)
            if expected is None:
                assert mine.percentile(fraction) is None
            else:
                assert mine.percentile(fraction) == pytest.approx(expected, rel=0.045)


async def rollup_rows(store: SQLStore) -> list[tuple[datetime, int]]:
    """(minute, enqueued) of the rows counting every queue and function."""
    async with store.read() as conn:
        result = await conn.execute(
            sa.select(stats_minutes.c.minute, stats_minutes.c.enqueued)
            .where(stats_minutes.c.queue == "", stats_minutes.c.func_name == "")
            .order_by(stats_minutes.c.minute)
        )
        return [(minute, int(number)) for minute, number in result]


async def test_rolled_up_minutes_count_as_the_task_rows(open_store: Opener) -> None:
    store = await seeded(open_store)
    queries = DashboardStore(store)
    for window in WINDOWS:
        for queue, func in FILTERS:
            raw = await series(queries, window, queue, func)
            rolled = await series(queries, window, queue, func, now=LATER)
            assert counts(rolled) == counts(raw), (window, queue, func)
            assert rolled.waiting_at_end == raw.waiting_at_end
            assert_same_waits(rolled, raw)
    # Minutes 11:01 … 12:00 are closed and rolled up: the counts stay once the task rows
    # are gone (except H, created at 12:05, still read from the rows).
    raw_hour = await series(queries, "1h", now=None)
    async with store.write() as conn:
        await conn.execute(tasks.delete())
    kept = await series(queries, "1h", now=LATER)
    assert kept.enqueued == raw_hour.enqueued
    assert kept.processed == raw_hour.processed
    assert sum(enqueued for _, enqueued in await rollup_rows(store)) == 10  # all but H


async def test_open_minutes_come_from_the_task_rows(open_store: Opener) -> None:
    store = await seeded(open_store)
    queries = DashboardStore(store)
    now = at("11:58:40")  # minutes before 11:56 are closed
    raw = await series(queries, "1h")
    partly = await series(queries, "1h", now=now)
    assert counts(partly) == counts(raw)
    assert_same_waits(partly, raw)
    assert [minute for minute, _ in await rollup_rows(store)][-1] == at("11:30:00")
    # A task that ends within the grace, written after the earlier minutes were rolled
    # up, is counted once: from the rows now, from the rollup once its minute closes.
    late = row("11:57:40", "11:57:50", "11:58:20", "failed", func_name="admin_fail")
    async with store.write() as conn:
        await conn.execute(tasks.insert(), [late])
    raw = await series(queries, "1h")
    assert counts(await series(queries, "1h", now=now)) == counts(raw)
    rolled = await series(queries, "1h", now=LATER)
    assert counts(rolled) == counts(raw)
    assert rolled.ended["failed"][57] == 2


async def test_two_fillers_at_once_count_each_minute_once(open_store: Opener) -> None:
    first = DashboardStore(await seeded(open_store))
    second = DashboardStore(await open_store())
    raw = await series(first, "24h")
    found = await asyncio.gather(series(first, "24h", now=LATER), series(second, "24h", now=LATER))
    for rolled in found:
        assert counts(rolled) == counts(raw)
    store = await open_store()
    assert sum(enqueued for _, enqueued in await rollup_rows(store)) == 10
    async with store.read() as conn:
        marks = dict(
            (
                await conn.execute(
                    sa.select(meta.c.key, meta.c.value).where(
                        meta.c.key.in_((ROLLED_FROM, ROLLED_UNTIL))
                    )
                )
            ).all()
        )
    assert datetime.fromisoformat(marks[ROLLED_FROM]) == DAY_START
    assert datetime.fromisoformat(marks[ROLLED_UNTIL]) == at("12:01:00")


async def test_retention_prunes_old_rollups(open_store: Opener) -> None:
    store = await seeded(open_store)
    await series(DashboardStore(store), "1h", now=LATER)
    minutes = ("11:02:00", "11:30:00", "11:57:00", "11:58:00", "11:59:00")
    assert [minute for minute, _ in await rollup_rows(store)] == [at(text) for text in minutes]
    # Half a day of task retention: the rollups before 11:33 go as the charts move on.
    now = at("11:33:00") + timedelta(hours=12)
    kept = DashboardStore(store, retention_days=lambda: 0.5)
    await kept.task_series(start=now - timedelta(minutes=13), size=60, count=1, now=now)
    assert [minute for minute, _ in await rollup_rows(store)] == [at(text) for text in minutes[2:]]
    # Without retention they are kept eight days.
    now = at("12:00:00") + timedelta(days=8, hours=1)
    plain = DashboardStore(store)
    await plain.task_series(start=now - timedelta(minutes=10), size=60, count=1, now=now)
    assert await rollup_rows(store) == []


async def test_an_sqlite_without_math_functions_rolls_up_the_same(
    open_store: Opener, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL always has ln()")
    store = await seeded(open_store)
    queries = DashboardStore(store)
    raw = await series(queries, "1h")
    monkeypatch.setattr(
        stats_minutes_module, "_wait_bucket_sql", lambda seconds, dialect: sa.func.log2_missing()
    )
    rolled = await series(queries, "1h", now=LATER)
    assert counts(rolled) == counts(raw)
    assert_same_waits(rolled, raw)
