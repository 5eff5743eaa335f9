"""Observers that receive task log lines and lifecycle transitions.

A :class:`TaskObserver` is told about every ``task_log()`` line (:class:`LogEvent`) and every
status change (:class:`LifecycleEvent`). Delivery goes through a :class:`LoggerChain`, which
queues events and hands them to observers from a background asyncio task, so an observer
that raises, hangs or is slow can never change a task's outcome or hold the task up.

:class:`FileLogger` is the built-in observer that appends one line per event to a file,
either rotating it by size or reopening it when an external tool (logrotate) moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import logging.handlers
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskflow.errors import ConfigurationError
from taskflow.records import TaskStatus

__all__ = [
    "FILE_LOG_MODES",
    "FileLogger",
    "LifecycleEvent",
    "LogEvent",
    "LoggerChain",
    "TaskObserver",
    "EVENTS_LOGGER",
    "build_chain",
    "log_lifecycle_event",
]

#: Values accepted for ``FileLogger(mode=...)`` and ``TaskManager(log_file_mode=...)``.
FILE_LOG_MODES: tuple[str, ...] = ("rotate", "watched")

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5

# Warn about dropped events on the first drop and then once per this many, so a flood of
# events cannot turn into a flood of warnings.
_DROP_WARNING_EVERY = 1000

_log = logging.getLogger("taskflow.observers")
_taskflow_log = logging.getLogger("taskflow")

# Lifecycle statuses that deserve more attention than INFO in a log file.
_LIFECYCLE_LEVELS: dict[str, int] = {
    "failed": logging.ERROR,
    "retrying": logging.WARNING,
    "interrupted": logging.WARNING,
    "cancelled": logging.WARNING,
}

# Ranks for ``min_level`` filtering (fastapi-taskflow's four names, plus "critical").
_LEVEL_RANKS: dict[str, int] = {
    "debug": 0,
    "info": 1,
    "warning": 2,
    "error": 3,
    "critical": 4,
}

_file_logger_ids = itertools.count(1)

_HOOKS = ("on_log", "on_lifecycle")


@dataclass(frozen=True, slots=True, init=False)
class LogEvent:
    """One line written by a task through ``task_log()``.

    The fields and their order are fastapi-taskflow's, so observers written for it work
    unchanged; ``at`` is kept as an alias of ``timestamp``.

    Attributes:
        task_id: Id of the task that logged the line.
        func_name: Registered name of the task function.
        message: The logged text.
        level: Level name such as ``"info"`` or ``"error"``.
        timestamp: When the line was logged (timezone-aware UTC).
        attempt: Zero-based retry index of the attempt that logged it (0 = first run).
        tags: The task's tags.
        extra: Structured fields passed to ``task_log()``.
    """

    task_id: str
    func_name: str
    message: str
    level: str
    timestamp: datetime
    attempt: int
    tags: dict[str, str]
    extra: dict[str, Any]

    def __init__(
        self,
        task_id: str,
        func_name: str,
        message: str,
        level: str = "info",
        timestamp: datetime | None = None,
        attempt: int = 0,
        tags: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """Build the event; ``at`` is accepted in place of ``timestamp``.

        Raises:
            TypeError: neither ``timestamp`` nor ``at`` is given.
        """
        _set_fields(
            self,
            task_id=task_id,
            func_name=func_name,
            message=message,
            level=level,
            timestamp=_when(timestamp, at),
            attempt=attempt,
            tags=dict(tags or {}),
            extra=dict(extra or {}),
        )

    @property
    def at(self) -> datetime:
        """Alias of :attr:`timestamp`."""
        return self.timestamp


@dataclass(frozen=True, slots=True, init=False)
class LifecycleEvent:
    """A task moved to a new status.

    The fields and their order are fastapi-taskflow's. ``status`` is a
    :class:`~taskflow.records.TaskStatus` (a ``str`` enum, so ``event.status == "failed"``
    and ``event.status.value`` both work). A failed attempt that will be retried is
    reported as ``PENDING`` with ``retrying=True`` (fastapi-taskflow reports nothing
    then); :attr:`label` gives ``"retrying"`` for it.

    Attributes:
        task_id: Id of the task.
        func_name: Registered name of the task function.
        status: The task's new status.
        timestamp: When the transition happened (timezone-aware UTC).
        attempt: Zero-based retry index of the attempt (0 = first run).
        retries_used: Retries consumed so far (equal to ``attempt``).
        duration: Seconds the attempt ran; ``None`` on ``RUNNING``.
        error: Error text for failing transitions, otherwise ``None``.
        stacktrace: Traceback of a failing attempt, otherwise ``None``.
        tags: The task's tags.
        retrying: True when the attempt failed and the task will run again.
        queue: Name of the task's queue.
    """

    task_id: str
    func_name: str
    status: TaskStatus
    timestamp: datetime
    attempt: int
    retries_used: int
    duration: float | None
    error: str | None
    stacktrace: str | None
    tags: dict[str, str]
    retrying: bool
    queue: str

    def __init__(
        self,
        task_id: str,
        func_name: str,
        status: TaskStatus | str,
        timestamp: datetime | None = None,
        attempt: int = 0,
        retries_used: int | None = None,
        duration: float | None = None,
        error: str | None = None,
        stacktrace: str | None = None,
        tags: dict[str, str] | None = None,
        *,
        retrying: bool = False,
        at: datetime | None = None,
        queue: str = "default",
    ) -> None:
        """Build the event; ``at`` is accepted in place of ``timestamp`` and the string
        ``"retrying"`` in place of ``status=PENDING, retrying=True``.

        Raises:
            TypeError: neither ``timestamp`` nor ``at`` is given.
            ValueError: ``status`` is not a task status.
        """
        if status == "retrying":
            status, retrying = TaskStatus.PENDING, True
        _set_fields(
            self,
            task_id=task_id,
            func_name=func_name,
            status=TaskStatus(status),
            timestamp=_when(timestamp, at),
            attempt=attempt,
            retries_used=attempt if retries_used is None else retries_used,
            duration=duration,
            error=error,
            stacktrace=stacktrace,
            tags=dict(tags or {}),
            retrying=retrying,
            queue=queue,
        )

    @property
    def at(self) -> datetime:
        """Alias of :attr:`timestamp`."""
        return self.timestamp

    @property
    def label(self) -> str:
        """The status as text, ``"retrying"`` for a failed attempt that will run again."""
        return "retrying" if self.retrying else self.status.value


def _when(timestamp: datetime | None, at: datetime | None) -> datetime:
    when = timestamp if timestamp is not None else at
    if when is None:
        raise TypeError("an event needs timestamp= (or at=)")
    return when


def _set_fields(event: object, **values: object) -> None:
    # The events are frozen; their __init__ is custom to accept both spellings.
    for name, value in values.items():
        object.__setattr__(event, name, value)


Event = LogEvent | LifecycleEvent


class TaskObserver:
    """Base class: override any of these. Default implementations do nothing.

    Methods are awaited from a :class:`LoggerChain` drain task, one event at a time, each
    bounded by the chain's ``observer_timeout``. Exceptions they raise are logged (logger
    ``taskflow.observers``, with the traceback) and otherwise ignored.

    As in fastapi-taskflow, ``min_level`` is stored for subclasses, which filter with
    :meth:`_should_log` / :meth:`_should_log_lifecycle`; the chain itself delivers every
    event.

    Args:
        min_level: ``"debug"``, ``"info"``, ``"warning"`` or ``"error"``.
    """

    _min_level: int = _LEVEL_RANKS["info"]

    def __init__(self, min_level: str = "info") -> None:
        self._min_level = _LEVEL_RANKS.get(str(min_level).lower(), _LEVEL_RANKS["info"])

    def _should_log(self, level: str) -> bool:
        """True when ``level`` is at least this observer's ``min_level``."""
        return _LEVEL_RANKS.get(str(level).lower(), _LEVEL_RANKS["info"]) >= self._min_level

    def _should_log_lifecycle(self, event: LifecycleEvent) -> bool:
        """True when the severity of ``event``'s status is at least ``min_level``."""
        level = logging.getLevelName(_LIFECYCLE_LEVELS.get(event.label, logging.INFO))
        return self._should_log(str(level))

    async def startup(self) -> None:
        """Prepare resources; awaited once before the first event is delivered."""

    async def on_log(self, event: LogEvent) -> None:
        """Receive one ``task_log()`` line.

        Args:
            event: The logged line.
        """

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Receive one status transition.

        Args:
            event: The transition.
        """

    async def close(self) -> None:
        """Release resources; called once when the owning chain closes."""


class FileLogger(TaskObserver):
    """Append one line per event to a file.

    Each line is ``<ISO-8601 UTC time> <LEVEL> <func_name> <task_id> <message>`` followed by
    ``key=value`` pairs for ``extra`` and then ``tags``. String values are written as they
    are; other values are JSON-encoded. Line breaks inside the message or values are escaped
    as ``\\n`` / ``\\r`` so every event stays on exactly one line.

    Writing goes through a private :class:`logging.Logger` that is not registered with the
    logging module and does not propagate, so the application's logging config is neither
    used nor disturbed. File I/O runs in a worker thread to keep the event loop free.

    Attributes:
        path: The file written to, as given.
    """

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        mode: str = "rotate",
        log_lifecycle: bool = False,
        min_level: str = "info",
    ) -> None:
        """Open the log file.

        Args:
            path: File to append to; its directory must exist.
            max_bytes: Size at which the file is rotated (``"rotate"`` mode only).
            backup_count: Number of rotated files kept (``"rotate"`` mode only).
            mode: ``"rotate"`` rotates by size; ``"watched"`` reopens the file when it is
                moved or deleted by an external tool, ignoring ``max_bytes``.
            log_lifecycle: Also write a line for each status transition.
            min_level: Lines below this level (``"debug"``, ``"info"``, ``"warning"``,
                ``"error"``) are not written; transitions are ranked by their severity.

        Raises:
            ConfigurationError: ``mode`` is not one of :data:`FILE_LOG_MODES` (this is a
                ``ValueError``).
            OSError: The file cannot be opened.
        """
        super().__init__(min_level)
        self.path = path
        self.mode = mode
        self.log_lifecycle = log_lifecycle
        self._handler = _open_handler(
            path, mode=mode, max_bytes=max_bytes, backup_count=backup_count
        )
        # Instantiated directly rather than via logging.getLogger so it is never registered
        # in the global logger tree (no leak per instance, nothing for dictConfig to touch).
        self._logger = logging.Logger(f"taskflow.file_logger.{next(_file_logger_ids)}")
        self._logger.propagate = False
        self._logger.addHandler(self._handler)
        # Serialises writes with close(): a write that outlived its observer timeout may
        # still be running in its thread, and a FileHandler reopens a closed stream on emit.
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"FileLogger({self.path!r}, mode={self.mode!r})"

    async def on_log(self, event: LogEvent) -> None:
        """Write the log line to the file.

        Args:
            event: The logged line.
        """
        if not self._should_log(event.level):
            return
        await asyncio.to_thread(self._write, _level_number(event.level), format_log_line(event))

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Write the transition to the file when ``log_lifecycle`` is enabled.

        Args:
            event: The transition.
        """
        if not self.log_lifecycle or not self._should_log_lifecycle(event):
            return
        level = _LIFECYCLE_LEVELS.get(event.label, logging.INFO)
        await asyncio.to_thread(self._write, level, format_lifecycle_line(event))

    async def close(self) -> None:
        """Close the file; later events are ignored."""
        await asyncio.to_thread(self._close_now)

    def _write(self, level: int, line: str) -> None:
        with self._lock:
            if self._closed:
                return
            record = self._logger.makeRecord(self._logger.name, level, self.path, 0, line, (), None)
            # handle() rather than log(): the file is explicit configuration, so it should
            # not be silenced by logger levels or a global logging.disable().
            self._logger.handle(record)

    def _close_now(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._logger.removeHandler(self._handler)
            self._handler.close()


def _open_handler(
    path: str, *, mode: str, max_bytes: int, backup_count: int
) -> logging.FileHandler:
    """Create the file handler for ``mode``.

    Raises:
        ConfigurationError: ``mode`` is unknown.
    """
    if mode == "rotate":
        handler: logging.FileHandler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
    elif mode == "watched":
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    else:
        allowed = ", ".join(repr(m) for m in FILE_LOG_MODES)
        raise ConfigurationError(f"log file mode must be one of {allowed}, got {mode!r}")
    # The line is fully formatted by us; the handler only adds the newline.
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def format_log_line(event: LogEvent) -> str:
    """Render a :class:`LogEvent` as one file line (without the trailing newline).

    Args:
        event: The logged line.

    Returns:
        The rendered line.
    """
    head = _line_head(event.at, event.level.upper(), event.func_name, event.task_id)
    extra = _format_fields(event.extra)
    return _join(head, _one_line(event.message), extra, _format_fields(event.tags))


def format_lifecycle_line(event: LifecycleEvent) -> str:
    """Render a :class:`LifecycleEvent` as one file line (without the trailing newline).

    Args:
        event: The transition.

    Returns:
        The rendered line.
    """
    level = logging.getLevelName(_LIFECYCLE_LEVELS.get(event.label, logging.INFO))
    head = _line_head(event.at, level, event.func_name, event.task_id)
    details: dict[str, object] = {"status": event.label, "attempt": event.attempt}
    if event.duration is not None:
        details["duration"] = round(event.duration, 6)
    if event.error is not None:
        details["error"] = event.error
    message = f"task {event.label}"
    return _join(head, message, _format_fields(details), _format_fields(event.tags))


def _line_head(at: datetime, level: str, func_name: str, task_id: str) -> str:
    return f"{_utc_iso(at)} {level} {_one_line(func_name)} {_one_line(task_id)}"


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _utc_iso(at: datetime) -> str:
    # Naive datetimes come from utcnow()-style code paths, so treat them as UTC.
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_fields(fields: Mapping[str, object]) -> str:
    return " ".join(
        f"{_one_line(str(key))}={_format_value(value)}" for key, value in fields.items()
    )


def _format_value(value: object) -> str:
    if isinstance(value, str):
        return _one_line(value)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        # Circular structures and the like: a best-effort rendering beats losing the line.
        return _one_line(str(value))


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    # getLevelName returns "Level X" for unknown names; custom levels still get written.
    return number if isinstance(number, int) else logging.INFO


class LoggerChain:
    """Fans events out to observers without ever blocking or failing the caller.

    :meth:`emit` only puts the event on a bounded queue; a background task started by
    :meth:`start` delivers queued events to each observer in order, bounding every call by
    ``observer_timeout`` and logging (never raising) whatever goes wrong.

    Attributes:
        observers: The observers, in delivery order.
        dropped: Events discarded because the queue was full.
    """

    def __init__(
        self,
        observers: Sequence[TaskObserver],
        *,
        queue_size: int = 10000,
        observer_timeout: float = 5.0,
    ) -> None:
        """Create the chain; events may be emitted before :meth:`start`.

        Args:
            observers: Observers to deliver to, in this order.
            queue_size: Maximum number of undelivered events kept; more are dropped.
            observer_timeout: Seconds one observer may spend on one event.

        Raises:
            ValueError: ``queue_size`` or ``observer_timeout`` is not positive.
        """
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size!r}")
        if observer_timeout <= 0:
            raise ValueError(f"observer_timeout must be positive, got {observer_timeout!r}")
        self.observers: list[TaskObserver] = list(observers)
        self.observer_timeout = observer_timeout
        self.dropped = 0
        # Since Python 3.10 a Queue binds to a loop on first wait, not on creation, so it can
        # be filled before start() runs on the loop.
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._drain_task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start the background drain task; idempotent.

        Raises:
            RuntimeError: Not called from a running event loop, or the chain is closed.
        """
        if self._closed:
            raise RuntimeError("LoggerChain is closed")
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(
                self._drain(), name="taskflow-observers"
            )

    async def open(self) -> None:
        """Await every observer's ``startup()`` (each bounded by ``observer_timeout``,
        failures logged), then :meth:`start` delivery.

        Raises:
            RuntimeError: The chain is closed.
        """
        if self._closed:
            raise RuntimeError("LoggerChain is closed")
        for observer in self.observers:
            await self._call(observer, "startup")
        self.start()

    def emit(self, event: Event) -> None:
        """Queue ``event`` for delivery without blocking; never raises.

        Must be called from the event loop's thread (or before the loop runs). When the
        queue is full the event is dropped and counted in :attr:`dropped`. Events emitted
        after :meth:`close` are ignored.

        Args:
            event: The event to deliver.
        """
        if self._closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._count_drop()

    def emit_threadsafe(self, loop: asyncio.AbstractEventLoop, event: Event) -> None:
        """Queue ``event`` from a thread other than the loop's; never raises.

        Args:
            loop: The loop the chain was started on.
            event: The event to deliver.
        """
        try:
            loop.call_soon_threadsafe(self.emit, event)
        except RuntimeError:
            # The loop is already closed (shutdown raced a worker thread); nothing can
            # deliver the event any more.
            self._count_drop()

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, stop the drain task and close every observer.

        Never raises for observer failures; they are logged. Idempotent.

        Args:
            timeout: Seconds to wait for queued events to be delivered; whatever is still
                queued afterwards is discarded.
        """
        if self._closed:
            return
        if self._drain_task is None:
            # Events queued before start() are still owed to the observers.
            self.start()
        self._closed = True
        await self._wait_for_drain(timeout)
        await self._stop_drain_task()
        for observer in self.observers:
            await self._call(observer, "close")

    async def _wait_for_drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            _log.warning(
                "taskflow observers: %d event(s) not delivered within %.1fs of shutdown",
                self._queue.qsize(),
                timeout,
            )

    async def _stop_drain_task(self) -> None:
        task = self._drain_task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped % _DROP_WARNING_EVERY == 1:
            _taskflow_log.warning(
                "taskflow observer queue is full; dropped %d event(s) so far", self.dropped
            )

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: Event) -> None:
        method = "on_log" if isinstance(event, LogEvent) else "on_lifecycle"
        for observer in self.observers:
            await self._call(observer, method, event)

    async def _call(self, observer: object, method: str, *args: object) -> None:
        """Run one observer method, containing every failure to a log record."""
        name = type(observer).__name__
        try:
            # Looked up here so a duck-typed observer missing a hook is skipped, not fatal.
            func = getattr(observer, method, None)
            if func is None:
                return
            result = func(*args)
            # Tolerate observers that override a hook with a plain (non-async) method.
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, self.observer_timeout)
        except TimeoutError:
            _log.warning(
                "taskflow observer %s.%s timed out after %.3gs",
                name,
                method,
                self.observer_timeout,
            )
        except asyncio.CancelledError:
            # Only our own cancellation (close()) may stop the drain; a CancelledError that
            # an observer raised by itself is just another observer failure.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            _log.warning("taskflow observer %s.%s was cancelled", name, method)
        except Exception:
            _log.exception("taskflow observer %s.%s raised", name, method)


def build_chain(
    *,
    loggers: Sequence[TaskObserver] | None = None,
    log_file: str | None = None,
    log_file_max_bytes: int = DEFAULT_MAX_BYTES,
    log_file_backup_count: int = DEFAULT_BACKUP_COUNT,
    log_file_mode: str = "rotate",
    log_lifecycle: bool = False,
) -> LoggerChain | None:
    """Build the observer chain from ``TaskManager`` arguments.

    ``log_file`` is shorthand for appending a :class:`FileLogger` for that path; it is
    ignored when ``loggers`` already holds a FileLogger for the same file.

    Args:
        loggers: Observers supplied by the application.
        log_file: Path of a log file to add, or ``None``.
        log_file_max_bytes: ``max_bytes`` for the added FileLogger.
        log_file_backup_count: ``backup_count`` for the added FileLogger.
        log_file_mode: ``mode`` for the added FileLogger.
        log_lifecycle: ``log_lifecycle`` for the added FileLogger.

    Returns:
        A chain (not yet started), or ``None`` when there are no observers at all.

    Raises:
        TypeError: An entry of ``loggers`` has neither ``on_log`` nor ``on_lifecycle``.
        ConfigurationError: ``log_file_mode`` is invalid.
        OSError: ``log_file`` cannot be opened.
    """
    observers = list(loggers or ())
    for observer in observers:
        # Duck typing is allowed (subclassing TaskObserver is not required), but an object
        # with neither hook is certainly a mistake worth reporting at startup.
        if not any(callable(getattr(observer, hook, None)) for hook in _HOOKS):
            raise TypeError(f"loggers entries must be TaskObserver instances, got {observer!r}")
    if log_file is not None and not _has_file_logger(observers, log_file):
        observers.append(
            FileLogger(
                log_file,
                max_bytes=log_file_max_bytes,
                backup_count=log_file_backup_count,
                mode=log_file_mode,
                log_lifecycle=log_lifecycle,
            )
        )
    return LoggerChain(observers) if observers else None


def _has_file_logger(observers: Sequence[TaskObserver], path: str) -> bool:
    target = os.path.abspath(path)
    return any(
        isinstance(observer, FileLogger) and os.path.abspath(observer.path) == target
        for observer in observers
    )


# -- lifecycle events as standard log records ----------------------------------------------

#: Name of the :mod:`logging` logger that receives every lifecycle transition.
EVENTS_LOGGER = "taskflow.events"

_events_log = logging.getLogger(EVENTS_LOGGER)

# Verbs of the readable message, by status label.
_EVENT_VERBS: dict[str, str] = {
    "running": "started",
    "success": "succeeded",
    "failed": "failed",
    "retrying": "failed, will retry",
    "cancelled": "was cancelled",
    "interrupted": "was interrupted",
}


def lifecycle_logging_enabled(label: str) -> bool:
    """True when :func:`log_lifecycle_event` would log a transition ``label`` (the
    ``taskflow.events`` logger is enabled for its level), so that callers can skip
    building the event."""
    return _events_log.isEnabledFor(logging.DEBUG if label == "running" else logging.INFO)


def log_lifecycle_event(event: LifecycleEvent) -> None:
    """Send ``event`` to the ``taskflow.events`` logger as one structured record.

    A start is logged at ``DEBUG`` and every end of an attempt (success, failure, retry,
    cancellation) at ``INFO``, so nothing new is printed by an app that has not
    configured logging (Python shows only warnings then). The record's ``extra``
    attributes are ``task_id``, ``func_name``, ``queue``, ``attempt`` (zero-based, as in
    :class:`LifecycleEvent`), ``status`` (its :attr:`~LifecycleEvent.label`),
    ``duration`` (seconds, ``None`` on a start) and ``error`` (``None`` unless it
    failed). Never raises: a broken handler is the logging module's to report.

    Args:
        event: The transition.
    """
    level = logging.DEBUG if event.status is TaskStatus.RUNNING else logging.INFO
    if not _events_log.isEnabledFor(level):
        return
    verb = _EVENT_VERBS.get(event.label, event.label)
    took = f" after {event.duration:.3f}s" if event.duration is not None else ""
    why = f": {_one_line(event.error)}" if event.error else ""
    fields = {
        "task_id": event.task_id,
        "func_name": event.func_name,
        "queue": event.queue,
        "attempt": event.attempt,
        "status": event.label,
        "duration": event.duration,
        "error": event.error,
    }
    with contextlib.suppress(Exception):
        _events_log.log(
            level,
            "task %s %s %s%s (queue %s, attempt %d)%s",
            event.func_name,
            event.task_id,
            verb,
            took,
            event.queue,
            event.attempt,
            why,
            extra=fields,
        )
