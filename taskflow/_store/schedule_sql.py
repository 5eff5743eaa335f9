"""The schedules aggregate: stored schedules and the firing of their slots."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.database import Database
from taskflow._store.rows import (
    NewTask,
    RunTimes,
    ScheduleRow,
)
from taskflow._store.schema import (
    TERMINAL_STATUSES,
    schedules,
    tasks,
)

_SCHEDULED_RUN = sa.text("source = 'scheduled'")


class ScheduleSQL(Database):
    """Schedules in SQL. Firing a slot advances the schedule and inserts the slot's task
    in one transaction, so among any number of processes exactly one fires each slot."""

    async def upsert_static_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        """Create a static schedule, or refresh an existing one from code.

        An existing schedule keeps its ``next_run_at`` (and so its phase) unless its
        trigger changed; ``enabled`` (paused or not) is left as the database has it.
        """
        async with self.write() as conn:
            # Several processes may start at once: insert-if-absent is one statement, so
            # the loser of the race updates the winner's row instead of failing.
            if await self._insert_schedule_if_absent(conn, schedule):
                query = sa.select(schedules).where(schedules.c.name == schedule.name)
                return ScheduleRow.of((await conn.execute(query)).mappings().one())
            query = sa.select(schedules).where(schedules.c.name == schedule.name).with_for_update()
            existing = ScheduleRow.of((await conn.execute(query)).mappings().one())
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == existing.id)
                .values(**_refreshed(existing, schedule))
            )
            return ScheduleRow.of((await conn.execute(query)).mappings().one())

    async def _insert_schedule_if_absent(
        self, conn: AsyncConnection, schedule: ScheduleRow
    ) -> bool:
        insert = self.upsert(schedules)
        result = await conn.execute(
            insert.values(**schedule.columns()).on_conflict_do_nothing(index_elements=["name"])
        )
        return result.rowcount == 1

    async def due_schedules(self, *, now: datetime, limit: int = 100) -> list[ScheduleRow]:
        """Enabled schedules whose next run is due, earliest first."""
        query = (
            sa.select(schedules)
            .where(schedules.c.enabled.is_(True), schedules.c.next_run_at <= now)
            .order_by(schedules.c.next_run_at)
            .limit(limit)
        )
        async with self.read() as conn:
            return [ScheduleRow.of(row) for row in (await conn.execute(query)).mappings()]

    async def next_schedule_due(self) -> datetime | None:
        """The earliest ``next_run_at`` of any enabled schedule."""
        query = sa.select(sa.func.min(schedules.c.next_run_at)).where(schedules.c.enabled.is_(True))
        async with self.read() as conn:
            due: datetime | None = await conn.scalar(query)
            return due

    async def fire_schedule(
        self,
        *,
        schedule_id: str,
        slot: datetime,
        next_run_at: datetime,
        now: datetime,
        task: NewTask | None,
        skip_if_active: bool = False,
    ) -> tuple[bool, bool]:
        """Advance a schedule from ``slot`` to ``next_run_at`` and insert the slot's task
        (None: the slot is skipped), in one transaction.

        The update only matches while ``next_run_at`` still equals ``slot``, so among
        any number of processes exactly one fires each slot. With ``skip_if_active`` the
        task is not inserted while an earlier run of the schedule is pending or running.
        Returns ``(advanced, inserted)``.
        """
        async with self.write() as conn:
            result = await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id, schedules.c.next_run_at == slot)
                .values(next_run_at=next_run_at, updated_at=now)
            )
            if result.rowcount != 1:
                return False, False
            if task is None or (skip_if_active and await _has_active_run(conn, schedule_id)):
                return True, False
            await conn.execute(tasks.insert(), [task.columns()])
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id)
                .values(last_run_at=now, last_task_id=task.id)
            )
        return True, True

    async def create_schedule(self, schedule: ScheduleRow) -> bool:
        """Insert a schedule; False when its name is taken."""
        async with self.write() as conn:
            return await self._insert_schedule_if_absent(conn, schedule)

    async def delete_schedule(self, name: str) -> ScheduleRow | None:
        """Delete the dynamic schedule ``name``; returns the row as it was (a static row
        is returned but not deleted), or None when there is no such schedule."""
        async with self.write() as conn:
            query = sa.select(schedules).where(schedules.c.name == name)
            found = (await conn.execute(query)).mappings().first()
            if found is None:
                return None
            schedule = ScheduleRow.of(found)
            if schedule.kind == "dynamic":
                await conn.execute(schedules.delete().where(schedules.c.id == schedule.id))
            return schedule

    async def set_schedule_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime | None, now: datetime
    ) -> bool:
        """Pause or resume a schedule (resuming sets a fresh ``next_run_at``)."""
        values: dict[str, object] = {"enabled": enabled, "updated_at": now}
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        async with self.write() as conn:
            result = await conn.execute(
                schedules.update().where(schedules.c.name == name).values(**values)
            )
            return result.rowcount == 1

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, or None."""
        async with self.read() as conn:
            query = sa.select(schedules).where(schedules.c.name == name)
            found = (await conn.execute(query)).mappings().first()
            return None if found is None else ScheduleRow.of(found)

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        async with self.read() as conn:
            query = sa.select(schedules).order_by(schedules.c.name)
            return [ScheduleRow.of(row) for row in (await conn.execute(query)).mappings()]

    async def running_schedule_ids(self) -> set[str]:
        """Ids of the schedules that have a run in status ``running``."""
        query = (
            sa.select(tasks.c.schedule_id)
            .where(tasks.c.schedule_id.is_not(None), tasks.c.status == "running")
            .distinct()
        )
        async with self.read() as conn:
            return set((await conn.scalars(query)).all())

    async def schedule_runs(self, schedule_id: str, *, limit: int) -> list[RunTimes]:
        """Start and finish times of the newest ``limit`` finished runs of a schedule,
        oldest first."""
        query = (
            sa.select(tasks.c.started_at, tasks.c.finished_at)
            .where(
                tasks.c.schedule_id == schedule_id,
                tasks.c.status.in_(TERMINAL_STATUSES),
                tasks.c.started_at.is_not(None),
                tasks.c.finished_at.is_not(None),
            )
            .order_by(tasks.c.finished_at.desc(), tasks.c.id)
            .limit(limit)
        )
        async with self.read() as conn:
            newest_first = [RunTimes.of(row) for row in (await conn.execute(query)).mappings()]
        return newest_first[::-1]

    async def clear_schedule_runs(self, schedule_id: str) -> int:
        """Delete the finished runs of a schedule (with their logs and attempts)."""
        async with self.write() as conn:
            result = await conn.execute(
                tasks.delete().where(
                    tasks.c.schedule_id == schedule_id, tasks.c.status.in_(TERMINAL_STATUSES)
                )
            )
            return result.rowcount


def _refreshed(existing: ScheduleRow, declared: ScheduleRow) -> dict[str, object]:
    """Columns to update when code re-declares an existing schedule."""
    values: dict[str, object] = {
        "func_name": declared.func_name,
        "kind": declared.kind,
        "payload": declared.payload,
        "options": declared.options,
        "description": declared.description,
        "tags": declared.tags,
        "group_name": declared.group_name,
        "updated_at": declared.updated_at,
        "cron": declared.cron,
        "every": declared.every,
        "timezone": declared.timezone,
    }
    trigger_changed = (existing.cron, existing.every, existing.timezone) != (
        declared.cron,
        declared.every,
        declared.timezone,
    )
    if trigger_changed or existing.next_run_at is None:
        values["next_run_at"] = declared.next_run_at
    return values


async def _has_active_run(conn: AsyncConnection, schedule_id: str) -> bool:
    active = await conn.scalar(
        sa.select(tasks.c.id)
        .where(
            tasks.c.schedule_id == schedule_id,
            # Literal SQL, not bound parameters: only then can the planner see that the
            # query implies the predicate of the partial (schedule, slot) index.
            _SCHEDULED_RUN,
            tasks.c.status.in_(("pending", "running")),
        )
        .limit(1)
    )
    return active is not None
