"""What a running task can ask about itself: :func:`get_task_context` and :func:`task_log`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger("taskflow")

# level, message, extra: the structured fields a task passed to task_log(), whatever they are.
LogSink = Callable[[str, str, dict[str, Any]], None]


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
    """

    task_id: str
    func_name: str
    attempt: int
    max_retries: int
    tags: dict[str, str]
    source: str
    _sink: LogSink = field(repr=False, compare=False)
    _cancelled: CancelFlag = field(repr=False, compare=False)

    def is_cancelled(self) -> bool:
        """True once the task was cancelled or timed out; long sync loops should check it."""
        return bool(self._cancelled.is_set())

    def log(self, message: str, *, level: str = "info", **extra: Any) -> None:
        """Same as :func:`task_log` for this task."""
        self._sink(level, str(message), extra)


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
