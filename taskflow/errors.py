"""Exceptions raised by taskflow.

Every exception derives from :class:`TaskflowError`, so one ``except`` catches them all::

    TaskflowError
    ├── ConfigurationError        bad constructor or decorator arguments found at start
    ├── NotStarted                the TaskManager is used before ``startup()``
    ├── DatabaseError             the database failed or cannot be reached
    │   ├── SchemaOutOfDate       the schema is not at the revision this code needs
    │   ├── DatabaseUnavailable   locked past the busy timeout, down or unreachable: retry
    │   ├── DatabaseFull          no disk space left for the database
    │   └── DatabaseReadOnly      the database file, directory or server refuses writes
    ├── TaskNotFound              no task with that id
    ├── DuplicateTaskName         a second function registered under a taken name
    ├── UnknownTaskFunction       a stored task names a function that is not registered
    ├── TaskArgumentError         an argument or result cannot be stored faithfully
    ├── DecryptionError           a payload cannot be decrypted with the configured keys
    ├── TaskTimeout               a task ran longer than its ``timeout``
    ├── TaskNotRerunnable         its function or arguments lived only in one process's memory
    ├── FastAPITasksError         fastapi-tasks' base error
    │   └── FastAPITasksUninitializedAppError  ``Tasks`` without ``add_tasks(app)``
    │                                           (also a ``NotStarted``)
    ├── QueueFullError            a queue is at its ``max_size``: the task was rejected
    ├── UnknownQueue              no queue by that name is configured
    └── ScheduleError             a schedule cannot be created, changed or removed
        ├── ScheduleNotFound      no schedule (or task group, or function) by that name
        ├── DuplicateScheduleName a schedule with that name exists already
        └── StaticScheduleError   static schedules come from code and cannot be deleted

``ValueError`` is still raised for invalid decorator arguments, as fastapi-taskflow does,
and ``ScheduleError`` is a ``RuntimeError``, as fastapi-task-manager raises, so code
written against them keeps working.
"""

from __future__ import annotations

import asyncio


class TaskflowError(Exception):
    """Root of every taskflow exception."""


class ConfigurationError(TaskflowError, ValueError):
    """A constructor or decorator argument is invalid; ``field`` names it when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotStarted(TaskflowError, RuntimeError):
    """The TaskManager was used before ``startup()`` (or after ``shutdown()``)."""


class DatabaseError(TaskflowError):
    """The database failed or could not be reached; the message masks any password."""


class SchemaOutOfDate(DatabaseError):
    """The database schema is older (or newer) than this version of taskflow needs."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot take the operation now: a SQLite file locked by another
    process for longer than the busy timeout, or a PostgreSQL server that is down,
    restarting or unreachable. Nothing was written; the same call can be retried.
    The HTTP integration answers 503 with ``Retry-After``."""


class DatabaseFull(DatabaseError):
    """No disk space is left for the database (``SQLITE_FULL``, PostgreSQL 53100).
    Nothing was written and nothing already stored is damaged; writes succeed again
    once space is freed. The HTTP integration answers 503."""


class DatabaseReadOnly(DatabaseError):
    """The database refuses writes: a read-only file, directory or file system for
    SQLite, a standby or read-only transaction for PostgreSQL. ``startup()`` raises it
    before anything starts; the message says what to make writable."""


class TaskNotFound(TaskflowError, LookupError):
    """No task with the given id exists."""


class DuplicateTaskName(TaskflowError, ValueError):
    """A different function is already registered under this task name."""


class UnknownTaskFunction(TaskflowError, LookupError):
    """A stored task refers to a function that is not registered in this process."""


class TaskArgumentError(TaskflowError, TypeError):
    """An argument (or a result) cannot be stored without losing its type or value."""


class TaskNotRerunnable(TaskflowError):
    """The task's function or arguments lived only in the memory of the process that
    scheduled it, so it cannot be retried or run anywhere else."""


class DecryptionError(TaskflowError):
    """An encrypted payload cannot be decrypted with any configured key."""


class TaskTimeout(TaskflowError, TimeoutError):
    """A task attempt ran longer than its ``timeout``."""


class QueueFullError(TaskflowError, RuntimeError):
    """A queue holds ``max_size`` waiting tasks already, so a new task was refused.

    The refused task is stored with status ``rejected`` (visible in the dashboard and
    retryable). Attributes: ``queue``, ``size`` (tasks waiting), ``limit`` (its
    ``max_size``) and ``task_id`` (the rejected record, or None). A ``RuntimeError``,
    as fastapi-taskflow raises.
    """

    def __init__(
        self, message: str, *, queue: str, size: int, limit: int, task_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.queue = queue
        self.size = size
        self.limit = limit
        self.task_id = task_id
        # The pending write of the rejected record (internal).
        self.record_write: asyncio.Future[str] | None = None


class UnknownQueue(TaskflowError, KeyError):
    """No queue by that name is configured on this TaskManager (a ``KeyError``, as
    fastapi-taskflow's ``update_queue_config`` raises)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ScheduleError(TaskflowError, RuntimeError):
    """A schedule cannot be created, changed or removed."""


class ScheduleNotFound(ScheduleError, LookupError):
    """No schedule, task group or registered function has that name."""


class DuplicateScheduleName(ScheduleError):
    """A schedule with that name exists already."""


class StaticScheduleError(ScheduleError):
    """Static schedules are declared in code; only dynamic ones can be deleted."""


class FastAPITasksError(TaskflowError):
    """Base of fastapi-tasks' errors (``from taskflow.errors import FastAPITasksError``)."""


class FastAPITasksUninitializedAppError(FastAPITasksError, NotStarted):
    """``Tasks`` was used in an app on which ``add_tasks(app)`` was never called."""
