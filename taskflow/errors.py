"""Exceptions raised by taskflow.

Every exception derives from :class:`TaskflowError`, so one ``except`` catches them all::

    TaskflowError
    ├── ConfigurationError        bad constructor or decorator arguments found at start
    ├── NotStarted                the TaskManager is used before ``startup()``
    ├── DatabaseError             the database failed or cannot be reached
    │   └── SchemaOutOfDate       the schema is not at the revision this code needs
    ├── TaskNotFound              no task with that id
    ├── DuplicateTaskName         a second function registered under a taken name
    ├── UnknownTaskFunction       a stored task names a function that is not registered
    ├── TaskArgumentError         an argument or result cannot be stored faithfully
    ├── DecryptionError           a payload cannot be decrypted with the configured keys
    ├── TaskTimeout               a task ran longer than its ``timeout``
    └── ScheduleError             a schedule cannot be created, changed or removed
        ├── ScheduleNotFound      no schedule (or task group, or function) by that name
        ├── DuplicateScheduleName a schedule with that name exists already
        └── StaticScheduleError   static schedules come from code and cannot be deleted

``ValueError`` is still raised for invalid decorator arguments, as fastapi-taskflow does,
and ``ScheduleError`` is a ``RuntimeError``, as fastapi-task-manager raises, so code
written against them keeps working.
"""

from __future__ import annotations


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


class TaskNotFound(TaskflowError, LookupError):
    """No task with the given id exists."""


class DuplicateTaskName(TaskflowError, ValueError):
    """A different function is already registered under this task name."""


class UnknownTaskFunction(TaskflowError, LookupError):
    """A stored task refers to a function that is not registered in this process."""


class TaskArgumentError(TaskflowError, TypeError):
    """An argument (or a result) cannot be stored without losing its type or value."""


class DecryptionError(TaskflowError):
    """An encrypted payload cannot be decrypted with any configured key."""


class TaskTimeout(TaskflowError, TimeoutError):
    """A task attempt ran longer than its ``timeout``."""


class ScheduleError(TaskflowError, RuntimeError):
    """A schedule cannot be created, changed or removed."""


class ScheduleNotFound(ScheduleError, LookupError):
    """No schedule, task group or registered function has that name."""


class DuplicateScheduleName(ScheduleError):
    """A schedule with that name exists already."""


class StaticScheduleError(ScheduleError):
    """Static schedules are declared in code; only dynamic ones can be deleted."""
