"""Static schedules (spec 003): persisted, exactly once per slot, never a dead loop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import TaskManager
from taskflow._schedules.triggers import make_trigger
from taskflow.errors import ScheduleNotFound
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio


async def wait_for_tasks(manager: TaskManager, count: int, *, timeout: float = 10.0, **filters):
    deadline = time.monotonic() + timeout
    while True:
        records = await manager.list_tasks(limit=1000, **filters)
        if len(records) >= count:
            return records
        assert time.monotonic() < deadline, f"{len(records)} of {count} tasks"
        await asyncio.sleep(0.02)


async def execute(url: str, statement: str, **params) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), params)
    finally:
        await engine.dispose()


async def test_interval_schedule_fires_and_function_stays_callable(manager_factory):
    manager = manager_factory()

    @manager.schedule(every=0.2)
    async def heartbeat() -> str:
        return "beat"

    await manager.startup()
    scheduled = await wait_for_tasks(manager, 3, func_name="heartbeat")
    assert {r.source for r in scheduled} == {"scheduled"}
    assert len({r.schedule_slot for r in scheduled}) == len(scheduled)
    manual = await manager.enqueue(heartbeat)
    assert (await wait_for_status(manager, manual)).source == "manual"
    assert await heartbeat() == "beat"  # the function is returned unchanged


async def test_next_run_keeps_its_phase_across_restarts(manager_factory):
    def declare(manager: TaskManager) -> None:
        @manager.schedule(every=86400)
        async def daily() -> None:
            return None

    first = manager_factory()
    declare(first)
    await first.startup()
    [schedule] = await first.list_schedules()
    await first.shutdown()
    second = manager_factory()
    declare(second)
    await second.startup()
    [again] = await second.list_schedules()
    assert again.next_run_at == schedule.next_run_at


async def test_changed_trigger_is_recomputed(manager_factory):
    first = manager_factory()
    first.schedule(every=86400, name="report")(_noop)
    await first.startup()
    [before] = await first.list_schedules()
    await first.shutdown()
    second = manager_factory()
    second.schedule(cron="0 9 * * *", timezone="Europe/Paris", name="report")(_noop)
    await second.startup()
    [after] = await second.list_schedules()
    assert after.cron_expression == "0 9 * * *" and after.every is None
    assert after.next_run_at != before.next_run_at
    assert after.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 9


async def _noop() -> None:
    return None


async def test_each_slot_fires_once_across_three_managers(manager_factory):
    managers = [manager_factory() for _ in range(3)]
    for manager in managers:
        manager.schedule(every=0.1, name="shared")(_noop)
    for manager in managers:
        await manager.startup()
    records = await wait_for_tasks(managers[0], 15, func_name="shared")
    slots = [r.schedule_slot for r in records]
    assert len(slots) == len(set(slots))
    owners = {r.owner for r in records}
    assert owners <= {m.instance_id for m in managers}


async def test_manual_trigger_does_not_move_the_next_slot(manager_factory):
    manager = manager_factory()
    manager.schedule(every=3600, name="hourly")(_noop)
    await manager.startup()
    [before] = await manager.list_schedules()
    task_id = await manager.trigger_schedule("hourly")
    record = await wait_for_status(manager, task_id)
    assert (record.status, record.source) == ("success", "manual")
    [after] = await manager.list_schedules()
    assert after.next_run_at == before.next_run_at
    with pytest.raises(ScheduleNotFound):
        await manager.trigger_schedule("nope")


async def test_missed_slot_within_grace_fires_once(manager_factory, db_url):
    manager = manager_factory()
    manager.schedule(every=60, name="minutely", misfire_grace=3600)(_noop)
    await manager.startup()
    past = datetime.now(UTC) - timedelta(minutes=30)
    await execute(
        db_url, "UPDATE taskflow_schedules SET next_run_at = :t", t=_db_time(db_url, past)
    )
    [record] = await wait_for_tasks(manager, 1, func_name="minutely")
    [schedule] = await manager.list_schedules()
    assert schedule.next_run_at > datetime.now(UTC)
    # the phase is kept: the next slot is the missed one plus whole minutes
    assert (schedule.next_run_at - record.schedule_slot).total_seconds() % 60 == 0


async def test_missed_slot_beyond_grace_is_skipped(manager_factory, db_url):
    manager = manager_factory()
    manager.schedule(every=60, name="strict", misfire_grace=10)(_noop)
    await manager.startup()
    past = datetime.now(UTC) - timedelta(minutes=30)
    await execute(
        db_url, "UPDATE taskflow_schedules SET next_run_at = :t", t=_db_time(db_url, past)
    )
    deadline = time.monotonic() + 10
    while (await manager.list_schedules())[0].next_run_at < datetime.now(UTC):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert await manager.list_tasks(func_name="strict") == []


async def test_a_broken_schedule_does_not_stop_the_others(manager_factory, db_url):
    manager = manager_factory()
    manager.schedule(every=0.1, name="healthy")(_noop)
    await manager.startup()
    now = datetime.now(UTC)
    await execute(
        db_url,
        "INSERT INTO taskflow_schedules (id, name, func_name, kind, every, timezone, payload,"
        " options, tags, enabled, next_run_at, created_at, updated_at) VALUES ('b1', 'broken',"
        " 'gone', 'dynamic', 0.1, 'UTC', '{}', '{}', '[]', :yes, :t, :t, :t)",
        t=_db_time(db_url, now),
        yes=True,
    )
    await wait_for_tasks(manager, 5, func_name="healthy")
    broken = next(s for s in await manager.list_schedules() if s.name == "broken")
    assert broken.next_run_at > now  # advanced, not re-fired on every poll


def _db_time(url: str, moment: datetime):
    return moment.replace(tzinfo=None) if url.startswith("sqlite") else moment


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"every": 5, "cron": "* * * * *"}, "exactly one"),
        ({"cron": "61 * * * *"}, "'61 \\* \\* \\* \\*'"),
        ({"cron": "* * *"}, "five fields"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"every": -1}, "positive"),
    ],
)
def test_invalid_schedules_fail_at_decoration(kwargs, message):
    manager = TaskManager()
    with pytest.raises(ValueError, match=message):
        manager.schedule(**kwargs)(_noop)


# -- triggers --------------------------------------------------------------------------


def test_cron_in_timezone_across_daylight_saving():
    trigger = make_trigger(every=None, cron="30 2 * * *", timezone="America/New_York")
    # 2026-03-08: 02:00 jumps to 03:00; the skipped 02:30 runs at 03:00 local.
    before = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    skipped = trigger.first_after(before)
    assert skipped == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    repeated = make_trigger(every=None, cron="30 1 * * *", timezone="America/New_York")
    first = repeated.first_after(datetime(2026, 10, 31, 16, 0, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = repeated.next_after(first, first)
    assert second == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # not 01:30 EST again


def test_interval_next_keeps_phase():
    trigger = make_trigger(every=10, cron=None)
    slot = datetime(2026, 1, 1, tzinfo=UTC)
    assert trigger.next_after(slot, slot) == slot + timedelta(seconds=10)
    assert trigger.next_after(slot, slot + timedelta(seconds=35)) == slot + timedelta(seconds=40)
