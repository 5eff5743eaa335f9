"""fastapi-taskflow's ``fastapi_taskflow.periodic`` import path: :class:`ScheduledEntry`,
:data:`DEFAULT_HORIZON` and :data:`DEFAULT_REFILL_INTERVAL`.

fastapi-taskflow kept its schedules in an in-memory heap of ``ScheduledEntry`` objects and
pulled one-off firings due within a "horizon" into it from its backend. taskflow keeps
both in the database: a recurring schedule is a row with its ``next_run_at``
(:meth:`TaskManager.list_schedules`), and a one-off firing is a pending task row that
becomes claimable at its time. :func:`scheduled_entries` presents the recurring schedules
as ``ScheduledEntry`` objects; the two constants have no effect (see each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskflow._schedules.triggers import Trigger

if TYPE_CHECKING:
    from taskflow._engine.registry import TaskConfig
    from taskflow.manager import TaskManager
    from taskflow.records import ScheduledOnce, ScheduledTask

__all__ = ["DEFAULT_HORIZON", "DEFAULT_REFILL_INTERVAL", "ScheduledEntry", "scheduled_entries"]

#: fastapi-taskflow's look-ahead window (seconds) of one-off firings held in memory.
#: Unused by taskflow: one-off firings are pending task rows, claimed from the database
#: when due, so none are held in memory and there is no window to size. Kept importable
#: with fastapi-taskflow's value.
DEFAULT_HORIZON = 300.0

#: fastapi-taskflow's interval (seconds) between refills of that window. Unused by
#: taskflow for the same reason; the scheduler looks for due rows at least every
#: second. Kept importable with fastapi-taskflow's value.
DEFAULT_REFILL_INTERVAL = 150.0


@dataclass
class ScheduledEntry:
    """One recurring schedule, with fastapi-taskflow's fields.

    taskflow does not schedule from these objects (its schedules are database rows);
    :func:`scheduled_entries` builds them from the stored schedules so code that reads
    ``ScheduledEntry`` fields keeps working.

    Attributes:
        func: the task function.
        config: its :class:`~taskflow._engine.registry.TaskConfig`.
        every: interval in seconds, or None for a cron schedule.
        cron: five-field cron expression, or None for an interval.
        run_on_startup: whether the schedule also runs at startup (known for schedules
            declared in this process; False otherwise).
        timezone: IANA timezone of ``cron``.
        next_run: UTC time of the next firing (the stored ``next_run_at``).
        once: always None here (one-off firings are task rows; see
            :meth:`TaskManager.list_scheduled`).
        cancelled: whether the schedule is paused.
    """

    func: Callable[..., Any]
    config: TaskConfig
    every: float | None
    cron: str | None
    run_on_startup: bool
    timezone: str = "UTC"
    next_run: datetime = field(default_factory=lambda: datetime.now(UTC))
    once: ScheduledOnce | None = None
    cancelled: bool = False

    @property
    def recurring(self) -> bool:
        """True for interval and cron entries, False for a one-off."""
        return self.once is None

    def compute_next(self, from_time: datetime) -> datetime:
        """The first firing time after ``from_time`` (UTC).

        Raises:
            ValueError: the entry is a one-off, which has no next run.
        """
        if self.once is not None:
            raise ValueError("compute_next() is not meaningful for a one-off entry.")
        trigger = Trigger(every=self.every, cron=self.cron, timezone=self.timezone)
        return trigger.first_after(from_time)

    def __lt__(self, other: ScheduledEntry) -> bool:
        """Order by ``next_run``."""
        return self.next_run < other.next_run

    @classmethod
    def from_schedule(
        cls, schedule: ScheduledTask, config: TaskConfig, *, run_on_startup: bool = False
    ) -> ScheduledEntry:
        """The entry for a stored schedule whose function has ``config``.

        Raises:
            ValueError: ``config`` has no function (a hand-made ``TaskConfig``).
        """
        if config.func is None:
            raise ValueError(f"TaskConfig {config.name!r} has no function")
        return cls(
            func=config.func,
            config=config,
            every=schedule.every,
            cron=schedule.cron_expression,
            run_on_startup=run_on_startup,
            timezone=schedule.timezone,
            next_run=schedule.next_run_at or datetime.now(UTC),
            cancelled=not schedule.enabled,
        )


async def scheduled_entries(task_manager: TaskManager) -> list[ScheduledEntry]:
    """Every stored recurring schedule whose function is registered in this process,
    as :class:`ScheduledEntry` objects ordered by ``next_run``.

    Raises:
        NotStarted: the manager is not running.
    """
    entries = []
    for schedule in await task_manager.list_schedules():
        name = schedule.function_name
        if schedule.task_group_name:
            name = f"{schedule.task_group_name}.{name}"
        config = task_manager.registry.get(name)
        if config is None or config.func is None:
            continue
        spec = task_manager.scheduler.specs.get(schedule.name)
        startup = spec.run_on_startup if spec is not None else False
        entries.append(ScheduledEntry.from_schedule(schedule, config, run_on_startup=startup))
    return sorted(entries)
