"""taskflow: durable background tasks for FastAPI, stored in SQLite or PostgreSQL.

Everything a user needs is importable from here; other modules are internal.
"""

from taskflow.admin import TaskAdmin, TaskAuthBackend
from taskflow.background import ManagedBackgroundTasks
from taskflow.context import TaskContext, get_task_context, task_log
from taskflow.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseFull,
    DatabaseReadOnly,
    DatabaseUnavailable,
    DecryptionError,
    DuplicateScheduleName,
    DuplicateTaskName,
    NotStarted,
    ScheduleError,
    ScheduleNotFound,
    SchemaOutOfDate,
    StaticScheduleError,
    TaskArgumentError,
    TaskflowError,
    TaskNotFound,
    TaskTimeout,
    UnknownTaskFunction,
)
from taskflow.groups import ScheduledTask, TaskGroup
from taskflow.manager import TaskManager
from taskflow.observers import FileLogger, LifecycleEvent, LogEvent, LoggerChain, TaskObserver
from taskflow.records import Attempt, LogLine, TaskRecord, TaskStatus
from taskflow.registry import TaskConfig, TaskRegistry
from taskflow.tasks_api import Tasks, add_tasks
from taskflow.timing import Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseFull",
    "DatabaseReadOnly",
    "DatabaseUnavailable",
    "DecryptionError",
    "DuplicateScheduleName",
    "DuplicateTaskName",
    "FileLogger",
    "LifecycleEvent",
    "LogEvent",
    "LogLine",
    "LoggerChain",
    "ManagedBackgroundTasks",
    "NotStarted",
    "ScheduleError",
    "ScheduleNotFound",
    "ScheduledTask",
    "SchemaOutOfDate",
    "StaticScheduleError",
    "TaskArgumentError",
    "TaskConfig",
    "TaskContext",
    "TaskGroup",
    "TaskManager",
    "TaskNotFound",
    "TaskObserver",
    "TaskOptions",
    "TaskRecord",
    "TaskRegistry",
    "TaskStatus",
    "TaskTimeout",
    "TaskflowError",
    "Task",
    "TaskAdmin",
    "TaskAuthBackend",
    "Tasks",
    "UnknownTaskFunction",
    "__version__",
    "add_tasks",
    "get_task_context",
    "task_log",
]
