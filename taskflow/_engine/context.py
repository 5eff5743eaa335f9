"""What a running task can ask about itself and report: :func:`get_task_context`,
:func:`task_log` and :func:`task_progress`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

logger = logging.getLogger("taskflow")

# level, message, extra: the structured fields a task passed to task_log(), whatever they are.
LogSink = Callable[[str, str, dict[str, Any]], None]
# A validated task_progress() report: done, total, message and at (ISO time).
ProgressReport = dict[str, Any]
ProgressSink = Callable[[ProgressReport], None]

MAX_PROGRESS_MESSAGE = 500  # characters of a progress message kept; longer ones end in "…"


class CancelFlag(Protocol):
    """What tells a task it was cancelled: a :class:`LocalFlag`, or in a worker process
    a view of the parent's shared flags."""

    def is_set(self) -> bool:
        """True once the task was cancelled or timed out."""

    def set(self) -> None:
        """Mark the task cancelled."""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task being executed in the current async task, thread or process.

    Attributes:
        task_id: the task's id.
        func_name: the registered name of its function.
        attempt: 0 for the first run, 1 for the first retry, ... (fastapi-taskflow's
            numbering; the dashboard and ``TaskRecord.attempts`` count runs from 1).
        max_retries: retries allowed after the first attempt.
        tags: the labels given to ``add_task(tags=...)``.
        source: ``manual``, ``scheduled``, ``api``, ``retry`` or ``requeue``.
        dependency_results: the results of the tasks this one depended on
            (``depends_on``, a chain's previous step, a group's members), by task id in
            ``depends_on`` order; None for a dependency that returned nothing or was
            deleted. Empty for a task without dependencies.
    """

    task_id: str
    func_name: str
    attempt: int
    max_retries: int
    tags: dict[str, str]
    source: str
    _sink: LogSink = field(repr=False, compare=False)
    _cancelled: CancelFlag = field(repr=False, compare=False)
    _progress: ProgressSink | None = field(default=None, repr=False, compare=False)
    dependency_results: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def is_cancelled(self) -> bool:
        """True once the task was cancelled or timed out; long sync loops should check it."""
        return bool(self._cancelled.is_set())

    def log(self, message: str, *, level: str = "info", **extra: Any) -> None:
        """Same as :func:`task_log` for this task."""
        self._sink(level, str(message), extra)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Same as :func:`task_progress` for this task.

        Raises:
            TypeError: ``done`` or ``total`` is not a number, or ``message`` not a string.
            ValueError: ``done`` is negative or not finite, or ``total`` is not above 0.
        """
        report = progress_report(done, total, message)
        if self._progress is not None:
            self._progress(report)


_current: ContextVar[TaskContext | None] = ContextVar("taskflow_task_context", default=None)


def get_task_context() -> TaskContext | None:
    """The :class:`TaskContext` of the task running here, or None outside a task."""
    return _current.get()


def task_log(message: str, *, level: str = "info", **extra: Any) -> None:
    """Record a log line on the current task; it is stored at once and visible while the
    task runs. Extra keyword arguments are stored as structured fields.

    Outside a task the line goes to the ``taskflow`` logger at debug level.
    """
    context = _current.get()
    if context is None:
        logger.debug("task_log outside a task: %s %s", message, extra)
        return
    context.log(message, level=level, **extra)


def task_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report how far the current task has got: ``done`` units of ``total`` (None: the
    total is unknown), with an optional ``message``. The latest report is stored on the
    task (``TaskRecord.progress``, the JSON API and the dashboard show it); calling it
    often is cheap, as reports are written at most about twice a second per task, plus
    the last one before the task's end. It works in async, thread and process tasks.

    Outside a task the report goes to the ``taskflow`` logger at debug level.

    Args:
        done: units done so far, a number >= 0 (it may exceed ``total``).
        total: units in all, a number > 0, or None.
        message: what the task is doing now; longer than
            :data:`MAX_PROGRESS_MESSAGE` characters is truncated.

    Raises:
        TypeError: ``done`` or ``total`` is not a number, or ``message`` not a string.
        ValueError: ``done`` is negative or not finite, or ``total`` is not above 0.
    """
    context = _current.get()
    if context is None:
        progress_report(done, total, message)  # bad input fails the same everywhere
        logger.debug("task_progress outside a task: %s/%s %s", done, total, message)
        return
    context.progress(done, total, message)


def progress_report(done: object, total: object, message: object) -> ProgressReport:
    """The report :func:`task_progress` stores, validated, stamped with the time now.

    Raises:
        TypeError: ``done`` or ``total`` is not a number, or ``message`` not a string.
        ValueError: ``done`` is negative or not finite, or ``total`` is not above 0.
    """
    done_value = _number("done", done)
    if done_value < 0:
        raise ValueError(f"task_progress(done=...) must be 0 or more, got {done!r}")
    total_value = None if total is None else _number("total", total)
    if total_value is not None and total_value <= 0:
        raise ValueError(f"task_progress(total=...) must be above 0 or None, got {total!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(
            f"task_progress(message=...) must be a string or None, got {type(message).__name__}"
        )
    if message is not None and len(message) > MAX_PROGRESS_MESSAGE:
        message = message[: MAX_PROGRESS_MESSAGE - 1] + "…"
    return {
        "done": done_value,
        "total": total_value,
        "message": message,
        "at": datetime.now(UTC).isoformat(),
    }


def _number(name: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"task_progress({name}=...) must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"task_progress({name}=...) must be finite, got {value!r}")
    return value


def bind(context: TaskContext) -> Token[TaskContext | None]:
    """Make ``context`` current; returns the token for :func:`unbind`."""
    return _current.set(context)


def unbind(token: Token[TaskContext | None]) -> None:
    """Undo :func:`bind`."""
    _current.reset(token)


class LocalFlag:
    """The cancel flag of a task run in this process: set on the event loop, read by the
    task (in its thread) through :meth:`TaskContext.is_cancelled`. A plain attribute is
    enough, as reading and writing one is atomic, and it costs a fraction of a
    ``threading.Event`` (made for every task, and nobody waits on it)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        """True once the task was cancelled or timed out."""
        return self._set

    def set(self) -> None:
        """Mark the task cancelled."""
        self._set = True
