"""The ``fastapi_taskflow.exceptions`` import path fastapi-taskflow's production guide
uses, kept so that ``from taskflow.exceptions import QueueFullError`` works after
changing only the import. (fastapi-taskflow 0.12.1 itself ships no such module: its
guide's import fails there; here it works.) Every public exception of
:mod:`taskflow.errors` is re-exported; the hierarchy is drawn there.
"""

from taskflow.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseFull,
    DatabaseReadOnly,
    DatabaseUnavailable,
    DecryptionError,
    DuplicateScheduleName,
    DuplicateTaskName,
    FastAPITasksError,
    FastAPITasksUninitializedAppError,
    NotStarted,
    QueueFullError,
    ScheduleError,
    ScheduleNotFound,
    SchemaOutOfDate,
    StaticScheduleError,
    TaskArgumentError,
    TaskflowError,
    TaskNotFound,
    TaskNotRerunnable,
    TaskTimeout,
    UnknownQueue,
    UnknownTaskFunction,
)

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "DatabaseFull",
    "DatabaseReadOnly",
    "DatabaseUnavailable",
    "DecryptionError",
    "DuplicateScheduleName",
    "DuplicateTaskName",
    "FastAPITasksError",
    "FastAPITasksUninitializedAppError",
    "NotStarted",
    "QueueFullError",
    "ScheduleError",
    "ScheduleNotFound",
    "SchemaOutOfDate",
    "StaticScheduleError",
    "TaskArgumentError",
    "TaskNotFound",
    "TaskNotRerunnable",
    "TaskTimeout",
    "TaskflowError",
    "UnknownQueue",
    "UnknownTaskFunction",
]
