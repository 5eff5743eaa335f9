"""Request timing modes (fastapi-tasks' API): start a task now, after the route returns,
or after the response is sent. Every task is still a durable taskflow task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from taskflow.records import TaskRecord

if TYPE_CHECKING:
    from taskflow._fastapi.host import ManagerHost

When = Literal["now", "after_route", "after_response"]
ErrorHandler = Callable[["Task", BaseException], Any]
TaskErrorHandler = ErrorHandler  # fastapi-tasks' name for it


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How tasks scheduled through ``Tasks`` behave in this process.

    Attributes:
        name: a label stored as the ``name`` tag (the task name stays the function's).
        shield: keep running through shutdown for up to the manager's
            ``shutdown_timeout``; unshielded tasks are stopped when shutdown begins and
            settled like interrupted tasks.
        on_error: called with ``(task, exception)`` when the task fails for good (after
            its retries), in this process; whatever it raises is logged and contained.
    """

    name: str | None = None
    shield: bool = False
    on_error: ErrorHandler | None = None

    @property
    def shielded(self) -> bool:
        """Same as ``shield`` (fastapi-tasks' ``TaskConfig.shielded``)."""
        return self.shield


@dataclass(slots=True, eq=False)
class Task:
    """A task scheduled through ``Tasks``.

    Attributes:
        task_id: the durable task's id.
        started: an ``anyio.Event`` set when the task starts running.
        config: its :class:`TaskOptions`.
        func, args, kwargs: what it calls.
    """

    task_id: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    config: TaskOptions
    started: Any
    manager: ManagerHost
    done: asyncio.Future[str] | None = None

    async def wait(self, timeout: float | None = None) -> TaskRecord:
        """Wait until the task ends (after its retries) and return its record.

        Raises:
            TimeoutError: it did not end within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = await self.manager.get_task(self.task_id)
            if record is not None and record.status.is_final:
                return record
            await self._pause(deadline)

    async def _pause(self, deadline: float | None) -> None:
        # The local future wakes us at once; the poll covers a task that another
        # process finished (after a takeover) or that never started here.
        step = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
        if step <= 0:
            raise TimeoutError(f"task {self.task_id} did not finish in time")
        if self.done is not None and not self.done.done():
            await asyncio.wait([self.done], timeout=step)
        else:
            await asyncio.sleep(step)


class Scheduling(Protocol):
    """Where timed tasks are stored (``ManagedBackgroundTasks``)."""

    def schedule_at(
        self,
        when: When,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> Task: ...

    def default_options(self) -> TaskOptions: ...


class TimingBatch:
    """``tasks.after_route`` / ``tasks.after_response``: schedule for one moment."""

    def __init__(self, owner: Scheduling, when: When, options: TaskOptions | None = None) -> None:
        self._owner = owner
        self._when = when
        self._options = options

    def schedule(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
        """Store a task calling ``func(*args, **kwargs)`` to start at this batch's moment."""
        return self._owner.schedule_at(self._when, func, args, kwargs, self._options)

    def task(
        self,
        *,
        name: str | None = None,
        shield: bool | None = None,
        on_error: ErrorHandler | None = None,
    ) -> TimingBatch:
        """This batch with other options."""
        options = merge(
            self._options or self._owner.default_options(),
            name=name,
            shield=shield,
            on_error=on_error,
        )
        return TimingBatch(self._owner, self._when, options)


class ConfiguredScheduler:
    """What ``tasks.task(...)`` returns: the three modes with fixed options."""

    def __init__(self, owner: Scheduling, options: TaskOptions) -> None:
        self.after_route = TimingBatch(owner, "after_route", options)
        self.after_response = TimingBatch(owner, "after_response", options)
        self._now = TimingBatch(owner, "now", options)

    def schedule(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
        """Start ``func(*args, **kwargs)`` now, concurrently with the endpoint."""
        return self._now.schedule(func, *args, **kwargs)


def merge(base: TaskOptions, **changes: Any) -> TaskOptions:
    """``base`` with the changes that are not None."""
    return replace(base, **{key: value for key, value in changes.items() if value is not None})
