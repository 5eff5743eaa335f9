"""The scheduler: turns due schedule rows into tasks, exactly once per slot.

Every process runs this loop; there is no leader. Firing a slot is one transaction that
moves the schedule's ``next_run_at`` forward only if it still equals the slot, and
inserts the slot's task. Whichever process commits first fires; the others match no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from taskflow._engine.guard import StepGuard
from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.registry import TaskConfig, TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.submission import build_row, job_from_row, new_task_id
from taskflow._engine.throttle import is_limited, limit_name
from taskflow._payloads.payloads import Payloads
from taskflow._schedules.triggers import Trigger
from taskflow._store.ids import new_hex_id
from taskflow._store.rows import NewTask, ScheduleRow

logger = logging.getLogger("taskflow._schedules.scheduler")

MAX_SLEEP = 1.0  # look for schedules created by other processes at least this often
DEFAULT_MISFIRE_GRACE = 3600.0
HIGH_PRIORITY = 10


@dataclass(slots=True)
class ScheduleOptions:
    """How a schedule's runs behave (stored as the row's ``options``).

    Attributes:
        misfire_grace: a slot missed by at most this many seconds still fires once;
            None: always fire once; older missed slots are skipped.
        overlap: start a run even while the previous run is pending or running.
        priority: priority of each run's task.
        retries, retry_delay, retry_max_delay: override the function's retry settings.
    """

    misfire_grace: float | None = DEFAULT_MISFIRE_GRACE
    overlap: bool = True
    priority: int | None = None
    retries: int | None = None
    retry_delay: float | None = None
    retry_max_delay: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ScheduleOptions:
        """Options from a stored row (unknown keys are ignored)."""
        data = data or {}
        return cls(**{name: data[name] for name in cls.__slots__ if name in data})


@dataclass(slots=True)
class ScheduleSpec:
    """A schedule declared in code (``@task_manager.schedule``, ``@group.add_task``)."""

    name: str
    task_name: str
    trigger: Trigger
    run_on_startup: bool = False
    group_name: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    options: ScheduleOptions = field(default_factory=ScheduleOptions)
    kwargs: dict[str, Any] = field(default_factory=dict)


def schedule_row(
    *,
    name: str,
    task_name: str,
    trigger: Trigger,
    kind: str,
    payload: str,
    now: datetime,
    group_name: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
    options: ScheduleOptions | None = None,
    start_now: bool = False,
) -> ScheduleRow:
    """A new schedule."""
    return ScheduleRow(
        id=new_hex_id(),
        name=name,
        group_name=group_name,
        func_name=task_name,
        kind=kind,
        cron=trigger.cron,
        every=trigger.every,
        timezone=trigger.timezone,
        payload=payload,
        options=(options or ScheduleOptions()).to_json(),
        description=description,
        tags=list(tags or []),
        enabled=True,
        next_run_at=now if start_now else trigger.first_after(now),
        last_run_at=None,
        last_task_id=None,
        created_at=now,
        updated_at=now,
    )


def trigger_of(schedule: ScheduleRow) -> Trigger:
    """The trigger stored on a schedule."""
    return Trigger(every=schedule.every, cron=schedule.cron, timezone=schedule.timezone)


class GroupStore(Protocol):
    """A task group, as far as the scheduler sees it."""

    async def store_pending(self) -> None:
        """Store the dynamic schedules defined before startup."""


class Scheduler:
    """Fires due schedules.

    Args:
        runtime: the manager's running state.
        payloads: encodes the arguments of static schedules.
        registry: the functions schedules run.
        intake: owner of new rows, and starts the ones this process runs.
        admit: a slot's task, or its ``rejected`` record when its queue is full.
        groups: task groups whose schedules are stored at startup.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        payloads: Payloads,
        registry: TaskRegistry,
        intake: Intake,
        admit: Callable[[NewTask], Awaitable[NewTask]],
        groups: Iterable[GroupStore],
    ) -> None:
        self._runtime = runtime
        self._payloads = payloads
        self._registry = registry
        self._intake = intake
        self._admit = admit
        self._groups = groups
        self.specs: dict[str, ScheduleSpec] = {}
        self._wake = asyncio.Event()
        self._warned: set[str] = set()
        self._guard = StepGuard("scheduler")

    def add(self, spec: ScheduleSpec) -> None:
        """Declare a static schedule (stored at startup)."""
        self.specs[spec.name] = spec

    def _warn_once(self, name: str, message: str) -> None:
        """Log ``message`` the first time schedule ``name`` hits it in this process."""
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s", message)

    def wake(self) -> None:
        """Look for due schedules now (after one was created or resumed)."""
        self._wake.set()

    async def sync_static(self) -> None:
        """Store every declared schedule (and task groups' dynamic schedules defined
        before startup); fire ``run_on_startup`` ones once; warn about
        stored schedules whose function is not registered in this process."""
        now = utcnow()
        for spec in self.specs.values():
            row = await self._runtime.db.upsert_static_schedule(self._static_row(spec, now))
            if spec.run_on_startup:
                await self._run_now(row, source="scheduled")
        for group in self._groups:
            await group.store_pending()
        for row in await self._runtime.db.list_schedules():
            if self._config(row) is None:
                logger.warning(
                    "schedule %s runs %r, which is not registered here; its slots "
                    "are skipped until it is",
                    row.name,
                    row.func_name,
                )

    def _static_row(self, spec: ScheduleSpec, now: datetime) -> ScheduleRow:
        return schedule_row(
            name=spec.name,
            task_name=spec.task_name,
            trigger=spec.trigger,
            kind="static",
            payload=self._payloads.encode_call((), spec.kwargs),
            now=now,
            group_name=spec.group_name,
            description=spec.description,
            tags=spec.tags,
            options=spec.options,
        )

    async def run(self) -> None:
        """Fire due schedules until cancelled; sleeps until the next one is due."""
        while True:
            await self._guard("tick", self.tick)
            await self._sleep()

    async def tick(self) -> int:
        """Fire every schedule that is due now; returns how many runs this process started."""
        fired = 0
        for row in await self._runtime.db.due_schedules(now=utcnow()):
            fire = functools.partial(self._fire, row)
            fired += await self._guard(f"slot of {row.name!r}", fire) or 0
        return fired

    async def _sleep(self) -> None:
        due = await self._guard("next slot", self._runtime.db.next_schedule_due)
        pause = MAX_SLEEP
        if isinstance(due, datetime):
            pause = min(max((due - utcnow()).total_seconds(), 0.0), MAX_SLEEP)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._wake.wait()
        self._wake.clear()

    async def _fire(self, row: ScheduleRow) -> int:
        now = utcnow()
        slot = row.next_run_at
        assert slot is not None  # due schedules have a next run
        options = ScheduleOptions.from_json(row.options)
        task_row = self._slot_task(row, options, slot, now)
        if task_row is not None:
            task_row = await self._admit(task_row)
        _, inserted = await self._runtime.db.fire_schedule(
            schedule_id=row.id,
            slot=slot,
            next_run_at=trigger_of(row).next_after(slot, now),
            now=now,
            task=task_row,
            skip_if_active=not options.overlap,
        )
        if task_row is None or not inserted:
            return int(inserted)
        if task_row.rejection is None and task_row.owner is not None:
            self._intake.hold_and_release(job_from_row(task_row, self._config(row)))
        return int(inserted)

    def _slot_task(
        self, row: ScheduleRow, options: ScheduleOptions, slot: datetime, now: datetime
    ) -> NewTask | None:
        grace = options.misfire_grace
        if grace is not None and now - slot > timedelta(seconds=grace):
            logger.warning(
                "schedule %s missed its %s slot by more than %ss; skipping it",
                row.name,
                slot.isoformat(),
                grace,
            )
            return None
        config = self._config(row)
        if config is None:
            self._warn_once(
                row.name,
                f"schedule {row.name} names task {row.func_name!r}, which is not "
                "registered here; skipping its slots until it is",
            )
            return None
        return self._task_row(row, config, options, source="scheduled", slot=slot, now=now)

    def _task_row(
        self,
        row: ScheduleRow,
        config: TaskConfig,
        options: ScheduleOptions,
        *,
        source: str,
        slot: datetime | None,
        now: datetime,
    ) -> NewTask:
        tags = {"schedule": row.name}
        if row.group_name:
            tags["group"] = row.group_name
        retries = options.retries if options.retries is not None else config.retries
        task = build_row(
            config,
            task_id=new_task_id(),
            payload=row.payload,
            encrypted=self._payloads.encrypted,
            tags=tags,
            priority=options.priority,
            idempotency_key=None,
            source=source,
            now=now,
            max_retries=retries,
            owner=self._intake.owner_for(config),
            schedule_id=row.id,
            schedule_slot=slot,
            retry_delay=options.retry_delay,
            retry_max_delay=options.retry_max_delay,
        )
        if is_limited(config):
            task.limit_key = self._limit_name(row, config)
        return task

    def _limit_name(self, row: ScheduleRow, config: TaskConfig) -> str | None:
        """The limit a firing counts against; when the function's ``limit_key`` cannot
        be computed from the schedule's arguments, the function's limit as a whole
        (stricter, never looser)."""
        try:
            args: tuple[Any, ...] = ()
            kwargs: dict[str, Any] = {}
            if config.limit_key is not None:
                encrypted = self._payloads.encrypted
                args, kwargs = self._payloads.decode_call(row.payload, encrypted=encrypted)
            return limit_name(config, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - a bad key must not stop the scheduler
            logger.warning(
                "schedule %s: limit_key failed (%s); using the limit of %s as a whole",
                row.name,
                exc,
                row.func_name,
            )
            return limit_name(replace(config, limit_key=None), (), {})

    def _config(self, row: ScheduleRow) -> TaskConfig | None:
        return self._registry.get(row.func_name)

    async def _run_now(self, row: ScheduleRow, *, source: str) -> str | None:
        config = self._config(row)
        if config is None:
            return None
        options = ScheduleOptions.from_json(row.options)
        task_row = self._task_row(row, config, options, source=source, slot=None, now=utcnow())
        await self._runtime.db.insert_task(task_row)
        if task_row.owner is not None:
            self._intake.hold_and_release(job_from_row(task_row, config))
        return str(task_row.id)

    async def trigger(self, name: str) -> str | None:
        """Run schedule ``name`` now (``source="manual"``) without moving its next slot.
        Returns the task id, or None if there is no such schedule or its function is not
        registered here."""
        row = await self._runtime.db.get_schedule(name)
        return None if row is None else await self._run_now(row, source="manual")
