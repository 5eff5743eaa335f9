"""Schedules as the manager offers them: declaring, listing, creating, pausing,
resuming, deleting and triggering, for async and sync callers."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from taskflow._engine.bridge import SYNC_TIMEOUT, running_loop
from taskflow._engine.job import utcnow
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.settings import Settings
from taskflow._payloads.payloads import Payloads
from taskflow._schedules.groups import TaskGroup, TaskGroups, scheduled_task_from_row
from taskflow._schedules.scheduler import (
    DEFAULT_MISFIRE_GRACE,
    ScheduleOptions,
    Scheduler,
    ScheduleSpec,
    trigger_of,
)
from taskflow._schedules.triggers import MAX_EVERY, make_trigger
from taskflow._store.protocol import Store
from taskflow._store.rows import ScheduleRow
from taskflow.errors import (
    ConfigurationError,
    DuplicateScheduleName,
    ScheduleNotFound,
    StaticScheduleError,
    TaskflowError,
)
from taskflow.records import ScheduledTask

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("taskflow")
# What the schedules table holds: names and crons are VARCHAR(255), retries an INTEGER,
# and PostgreSQL text never contains NUL.
NAME_MAX = 255
RETRIES_MAX = 2**31 - 1


class Schedules:
    """The schedule methods behind the TaskManager's.

    Args:
        runtime: the manager's running state.
        settings: ``allow_parallel``, the default ``overlap`` of task groups.
        registry: where scheduled functions are registered.
        scheduler: fires the slots.
        payloads: decodes schedules' arguments.
        groups: the task groups added to the manager.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        settings: Settings,
        registry: TaskRegistry,
        scheduler: Scheduler,
        payloads: Payloads,
        groups: TaskGroups,
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self.registry = registry
        self.scheduler = scheduler
        self.payloads = payloads
        self.task_groups = groups

    @property
    def started(self) -> bool:
        """True while the manager runs."""
        return self._runtime.started

    @property
    def db(self) -> Store:
        """The store (raises NotStarted before the first start)."""
        return self._runtime.db

    @property
    def allow_parallel(self) -> bool:
        """fastapi-task-manager's default ``overlap`` of task groups."""
        return self._settings.allow_parallel

    def task(self, **options: Any) -> Callable[[F], F]:
        """Register a function with ``options`` (as ``TaskManager.task``)."""
        return self.registry.decorator(**options)

    def _require_loop(self) -> None:
        self._runtime.require_loop()

    def schedule(
        self,
        every: float | None = None,
        cron: str | None = None,
        retries: int | None = None,
        delay: float | None = None,
        backoff: float | None = None,
        name: str | None = None,
        run_on_startup: bool = False,
        timezone: str = "UTC",
        executor: str | None = None,
        *,
        timeout: float | None = None,
        misfire_grace: float | None = DEFAULT_MISFIRE_GRACE,
        overlap: bool = True,
        priority: int | None = None,
        queue: str = "default",
    ) -> Callable[[F], F]:
        """Register a function as a task and run it periodically.

        Exactly one of ``every`` (seconds) or ``cron`` (five fields, evaluated in
        ``timezone``) is required. Schedules are rows in the database: their next run
        time survives restarts, and with many processes each slot fires once.

        Args:
            every: interval in seconds; its phase is kept across restarts.
            cron: a five-field cron expression.
            retries, delay, backoff, name, executor, timeout, queue: as for :meth:`task`.
            run_on_startup: also run once each time the app starts.
            timezone: IANA timezone for ``cron`` (ignored for ``every``).
            misfire_grace: a slot missed while no process ran (a deploy, an outage) still
                fires once if it is at most this many seconds late; older missed slots
                are skipped. None: always fire once. Never more than one catch-up run.
            overlap: start a run even while the previous one is still pending or
                running (the default, as in fastapi-taskflow); False skips the slot.
            priority: priority of each run.

        Raises:
            ValueError: neither or both of ``every``/``cron``, an invalid cron
                expression, an unknown timezone or an incompatible executor.
        """
        trigger = make_trigger(every=every, cron=cron, timezone=timezone)
        if misfire_grace is not None and misfire_grace < 0:
            raise ConfigurationError(f"misfire_grace must be >= 0, got {misfire_grace}")
        register_task = self.registry.decorator(
            retries=retries,
            delay=delay,
            backoff=backoff,
            name=name,
            executor=executor,
            timeout=timeout,
            queue=queue,
        )

        def register(func: F) -> F:
            register_task(func)
            task_name = name or func.__name__
            self.scheduler.add(
                ScheduleSpec(
                    name=task_name,
                    task_name=task_name,
                    trigger=trigger,
                    run_on_startup=run_on_startup,
                    options=ScheduleOptions(
                        misfire_grace=misfire_grace, overlap=overlap, priority=priority
                    ),
                )
            )
            return func

        return register

    async def trigger_schedule(self, name: str) -> str:
        """Run schedule ``name`` now (``source="manual"``) without moving its next slot.

        Raises:
            ScheduleNotFound: there is no schedule with this name (or its function is not
                registered in this process).
        """
        self._require_loop()
        task_id = await self.scheduler.trigger(name) if storable_name(name) else None
        if task_id is None:
            raise ScheduleNotFound(f"no schedule named {name!r} whose function is registered here")
        return task_id

    async def list_schedules(self) -> list[ScheduledTask]:
        """Every stored schedule (static and dynamic) with its next run time."""
        self._require_loop()
        return [self.scheduled_task(row) for row in await self.db.list_schedules()]

    async def get_schedule(self, name: str) -> ScheduledTask | None:
        """The schedule called ``name``, or None."""
        self._require_loop()
        row = await self.db.get_schedule(name) if storable_name(name) else None
        return None if row is None else self.scheduled_task(row)

    def scheduled_task(self, row: ScheduleRow) -> ScheduledTask:
        """The :class:`ScheduledTask` view of a stored schedule row."""
        try:
            _, kwargs = self.payloads.decode_call(row.payload, encrypted=self.payloads.encrypted)
        except (TaskflowError, ValueError):
            kwargs = {}
        return scheduled_task_from_row(row, kwargs)

    def add_task_group(self, group: TaskGroup) -> None:
        """Add a :class:`TaskGroup`: its functions become tasks named ``"<group>.<fn>"``
        and its static schedules are stored at startup.

        Raises:
            ValueError: another group already has this name.
        """
        existing = self.task_groups.get(group.name)
        if existing is not None and existing is not group:
            raise ConfigurationError(f"a task group named {group.name!r} is already added")
        self.task_groups.add(group)
        group.attach(self)

    def group_schedules(self, group_name: str) -> list[ScheduledTask]:
        """The stored schedules of task group ``group_name``, read synchronously (from
        the loop's thread through the helper thread, else on the loop)."""
        rows = self._runtime.read(lambda store: store.list_schedules())
        return [self.scheduled_task(row) for row in rows if row.group_name == group_name]

    def run_schedule_coroutine(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` on the manager's loop: in the background from the loop's own
        thread, else waiting for it."""
        self._runtime.run_or_spawn(coro, what)

    async def create_schedule(self, row: ScheduleRow) -> ScheduledTask:
        """Store a dynamic schedule row built by :meth:`TaskGroup.build_schedule`.

        Raises:
            DuplicateScheduleName: the name is taken.
            ConfigurationError: a value the schedules table cannot hold (``field``
                names it).
        """
        self._require_loop()
        check_storable(row)
        if not await self.db.create_schedule(row):
            raise DuplicateScheduleName(_taken(row))
        self.scheduler.wake()
        return self.scheduled_task(row)

    async def delete_schedule(self, name: str, *, group_name: str | None = None) -> ScheduledTask:
        """Delete a dynamic schedule; returns it as it was.

        Raises:
            ScheduleNotFound: no schedule ``name`` (in ``group_name``, when given).
            StaticScheduleError: the schedule is static (declared in code).
        """
        self._require_loop()
        found = await self.db.get_schedule(name) if storable_name(name) else None
        _check_deletable(found, name, group_name)
        deleted = _check_deletable(await self.db.delete_schedule(name), name, group_name)
        return self.scheduled_task(deleted)

    async def pause_schedule(self, name: str) -> ScheduledTask:
        """Stop firing a schedule until :meth:`resume_schedule`.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        return await self._set_enabled(name, enabled=False)

    async def resume_schedule(self, name: str) -> ScheduledTask:
        """Fire a paused schedule again, from its next slot after now.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        return await self._set_enabled(name, enabled=True)

    async def _set_enabled(self, name: str, *, enabled: bool) -> ScheduledTask:
        self._require_loop()
        row = await self.db.get_schedule(name) if storable_name(name) else None
        if row is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        now = utcnow()
        next_run_at = trigger_of(row).first_after(now) if enabled else None
        await self.db.set_schedule_enabled(name, enabled=enabled, next_run_at=next_run_at, now=now)
        self.scheduler.wake()
        updated = await self.db.get_schedule(name)
        if updated is None:  # deleted meanwhile
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return self.scheduled_task(updated)

    def run_blocking_schedule_change(
        self,
        change: Callable[[], Coroutine[Any, Any, ScheduledTask]],
        *,
        create: Callable[[Any], ScheduleRow] | None = None,
        delete: tuple[str, str | None] | None = None,
    ) -> ScheduledTask:
        """Run a schedule change for sync callers.

        From another thread this waits for ``change()`` on the manager's loop. On the
        loop's own thread waiting is impossible: the change is validated here (reading
        through the helper thread), written by a background task, and the result
        returned at once.
        """
        runtime = self._runtime
        loop = runtime.require_loop()
        if running_loop() is not loop:
            result: ScheduledTask = asyncio.run_coroutine_threadsafe(change(), loop).result(
                SYNC_TIMEOUT
            )
            return result
        if create is not None:
            row = create(utcnow())
            check_storable(row)
            if runtime.read(lambda store: store.get_schedule(row.name)) is not None:
                raise DuplicateScheduleName(_taken(row))
            runtime.spawn(self.create_schedule(row), f"create schedule {row.name}")
            return self.scheduled_task(row)
        assert delete is not None
        name, group_name = delete
        found = (
            runtime.read(lambda store: store.get_schedule(name)) if storable_name(name) else None
        )
        deletable = _check_deletable(found, name, group_name)
        runtime.spawn(self.delete_schedule(name, group_name=group_name), f"delete schedule {name}")
        return self.scheduled_task(deletable)


def storable_name(name: Any) -> bool:
    """True for a name a stored schedule can have. Others (with NUL, too long) are not
    looked up: the database would refuse the text instead of finding nothing."""
    return isinstance(name, str) and "\x00" not in name and len(name) <= NAME_MAX


def check_storable(row: ScheduleRow) -> None:
    """Refuse a new schedule row with a value the schedules table cannot hold.

    Raises:
        ConfigurationError: the name is empty, too long or has NUL; the cron expression
            is too long; the description has NUL; retries or a retry delay is too big.
    """
    if not row.name or not storable_name(row.name):
        raise ConfigurationError(
            f"a schedule name has 1 to {NAME_MAX} characters and no NUL", field="name"
        )
    if row.cron is not None and len(row.cron) > NAME_MAX:
        raise ConfigurationError(
            f"a cron expression has at most {NAME_MAX} characters", field="cron"
        )
    if "\x00" in (row.description or ""):
        raise ConfigurationError("the description must not contain NUL", field="description")
    options = row.options or {}
    if (options.get("retries") or 0) > RETRIES_MAX:
        raise ConfigurationError(f"retries must be at most {RETRIES_MAX}", field="retries")
    for key, field_name in (
        ("retry_delay", "retry_backoff"),
        ("retry_max_delay", "retry_backoff_max"),
    ):
        delay = options.get(key)
        if delay is not None and not (math.isfinite(delay) and delay <= MAX_EVERY):
            raise ConfigurationError(
                f"{field_name} must be at most 100 years in seconds, got {delay!r}",
                field=field_name,
            )


def _taken(row: ScheduleRow) -> str:
    where = f" inside group {row.group_name!r}" if row.group_name else ""
    return (
        f"Task with name {row.name!r} already exists{where} "
        "(schedule names are unique across all groups)."
    )


def _check_deletable(row: ScheduleRow | None, name: str, group_name: str | None) -> ScheduleRow:
    """``row`` if it is a dynamic schedule (of ``group_name``, when given)."""
    if row is None or (group_name is not None and row.group_name != group_name):
        if group_name is not None:
            raise ScheduleNotFound(f"Task {name!r} not found in group {group_name!r}.")
        raise ScheduleNotFound(f"no schedule named {name!r}")
    if row.kind != "dynamic":
        where = f" in group {group_name!r}" if group_name is not None else ""
        raise StaticScheduleError(
            f"Task {name!r}{where} is static and cannot be removed at runtime "
            "(it is declared in code; pause it instead)."
        )
    return row
