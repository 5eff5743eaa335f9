"""The scheduler: turns due schedule rows into tasks, exactly once per slot.

Every process runs this loop; there is no leader. Firing a slot is one transaction that
moves the schedule's ``next_run_at`` forward only if it still equals the slot, and
inserts the slot's task. Whichever process commits first fires; the others match no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from taskflow.registry import TaskConfig
from taskflow.runner import utcnow
from taskflow.submission import build_row, job_from_row, new_task_id
from taskflow.triggers import Trigger

if TYPE_CHECKING:
    from sqlalchemy.engine import RowMapping

    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow.scheduler")

MAX_SLEEP = 1.0  # look for schedules created by other processes at least this often
DEFAULT_MISFIRE_GRACE = 3600.0


@dataclass(slots=True)
class ScheduleSpec:
    """A schedule declared in code with ``@task_manager.schedule``."""

    name: str
    task_name: str
    trigger: Trigger
    run_on_startup: bool = False
    misfire_grace: float | None = DEFAULT_MISFIRE_GRACE
    options: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Fires due schedules for one :class:`~taskflow.manager.TaskManager`."""

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self.specs: dict[str, ScheduleSpec] = {}
        self._wake = asyncio.Event()

    def add(self, spec: ScheduleSpec) -> None:
        """Declare a static schedule (stored at startup)."""
        self.specs[spec.name] = spec

    async def sync_static(self) -> None:
        """Store every declared schedule; fire ``run_on_startup`` ones once."""
        now = utcnow()
        for spec in self.specs.values():
            row = await self.manager.db.upsert_static_schedule(self._static_row(spec, now))
            if spec.run_on_startup:
                await self._run_now(row, source="scheduled")

    def _static_row(self, spec: ScheduleSpec, now: datetime) -> dict[str, Any]:
        trigger = spec.trigger
        return {
            "id": new_task_id(),
            "name": spec.name,
            "group_name": None,
            "func_name": spec.task_name,
            "kind": "static",
            "cron": trigger.cron,
            "every": trigger.every,
            "timezone": trigger.timezone,
            "payload": self.manager.payloads.encode_call((), {}),
            "options": {"misfire_grace": spec.misfire_grace, **spec.options},
            "description": None,
            "tags": [],
            "enabled": True,
            "next_run_at": trigger.first_after(now),
            "last_run_at": None,
            "last_task_id": None,
            "created_at": now,
            "updated_at": now,
        }

    async def run(self) -> None:
        """Fire due schedules until cancelled; sleeps until the next one is due."""
        while True:
            await self._guarded(self.tick)
            await self._sleep()

    async def tick(self) -> int:
        """Fire every schedule that is due now; returns how many slots this process fired."""
        fired = 0
        for row in await self.manager.db.due_schedules(now=utcnow()):
            fired += await self._guarded(lambda row=row: self._fire(row)) or 0
        return fired

    async def _sleep(self) -> None:
        due = await self._guarded(self.manager.db.next_schedule_due)
        pause = MAX_SLEEP
        if isinstance(due, datetime):
            pause = min(max((due - utcnow()).total_seconds(), 0.0), MAX_SLEEP)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._wake.wait()
        self._wake.clear()

    async def _fire(self, row: RowMapping) -> int:
        now = utcnow()
        slot: datetime = row["next_run_at"]
        trigger = Trigger(every=row["every"], cron=row["cron"], timezone=row["timezone"])
        next_run_at = trigger.next_after(slot, now)
        task_row = self._slot_task(row, slot, now)
        fired = await self.manager.db.fire_schedule(
            schedule_id=row["id"],
            slot=slot,
            next_run_at=next_run_at,
            now=now,
            task_row=task_row,
        )
        if fired and task_row is not None:
            self.manager.hold_and_release(job_from_row(task_row, self._config(row)))
        return int(fired and task_row is not None)

    def _slot_task(self, row: RowMapping, slot: datetime, now: datetime) -> dict[str, Any] | None:
        grace = (row["options"] or {}).get("misfire_grace", DEFAULT_MISFIRE_GRACE)
        if grace is not None and now - slot > timedelta(seconds=grace):
            logger.warning(
                "schedule %s missed its %s slot by more than %ss; skipping it",
                row["name"],
                slot.isoformat(),
                grace,
            )
            return None
        config = self._config(row)
        if config is None:
            logger.warning(
                "schedule %s names unknown task %r; skipping its slot",
                row["name"],
                row["func_name"],
            )
            return None
        return self._task_row(row, config, source="scheduled", slot=slot, now=now)

    def _task_row(
        self,
        row: RowMapping,
        config: TaskConfig,
        *,
        source: str,
        slot: datetime | None,
        now: datetime,
    ) -> dict[str, Any]:
        return build_row(
            config,
            task_id=new_task_id(),
            payload=row["payload"],
            encrypted=self.manager.payloads.encrypted,
            tags={"schedule": row["name"]},
            priority=None,
            idempotency_key=None,
            source=source,
            now=now,
            max_retries=config.retries,
            owner=self.manager.instance_id,
            schedule_id=row["id"],
            schedule_slot=slot,
        )

    def _config(self, row: RowMapping) -> TaskConfig | None:
        return self.manager.registry.get(row["func_name"])

    async def _run_now(self, row: RowMapping, *, source: str) -> str | None:
        config = self._config(row)
        if config is None:
            return None
        task_row = self._task_row(row, config, source=source, slot=None, now=utcnow())
        await self.manager.db.insert_task(task_row)
        self.manager.hold_and_release(job_from_row(task_row, config))
        return str(task_row["id"])

    async def trigger(self, name: str) -> str | None:
        """Run schedule ``name`` now (``source="manual"``) without moving its next slot.
        Returns the task id, or None if there is no such schedule."""
        row = await self.manager.db.get_schedule(name)
        return None if row is None else await self._run_now(row, source="manual")

    async def _guarded(self, step: Any) -> Any:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad slot never stops the scheduler
            logger.exception("scheduler step failed; other schedules keep firing")
            return None
