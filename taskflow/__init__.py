"""taskflow: durable background tasks for FastAPI, stored in SQLite or PostgreSQL.

Everything a user needs is importable from here. The layout (docs/architecture.md):

- ``manager.py``: :class:`TaskManager`, the facade over the parts below;
- ``_engine/``: how tasks get in, wait, run and are shared between processes;
- ``_schedules/``: triggers, the scheduler, task groups, one-off firings;
- ``_fastapi/``: ``ManagedBackgroundTasks``, the durability middleware, timing modes;
- ``_store/``: every SQL statement, the schema and its migrations;
- ``_payloads/``: argument encoding, encryption, size limits;
- ``admin/``: the ``TaskAdmin`` dashboard;
- ``records.py``, ``errors.py``, ``observers.py``: what users get back, catch and hear;
- ``models``, ``exceptions``, ``periodic``, ``tasks``, ``executor``, ``backends``,
  ``loggers``, ``schema``: the import paths of fastapi-taskflow, fastapi-task-manager
  and fastapi-tasks; ``_compat/`` holds what exists only for them.
"""

from taskflow._compat.config import Config
from taskflow._engine.context import TaskContext, get_task_context, task_log, task_progress
from taskflow._engine.registry import TaskConfig, TaskRegistry
from taskflow._engine.workflows import Step, step
from taskflow._fastapi.background import ManagedBackgroundTasks
from taskflow._fastapi.tasks_api import Tasks
from taskflow._fastapi.timing import Task, TaskErrorHandler, TaskOptions
from taskflow._schedules.groups import TaskGroup
from taskflow.admin import TaskAdmin, TaskAuthBackend
from taskflow.backends import (
    MySQLBackend,
    PostgresBackend,
    RedisBackend,
    SnapshotBackend,
    SqliteBackend,
)
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
from taskflow.loggers import InMemoryLogger, StdoutLogger
from taskflow.manager import TaskManager
from taskflow.observers import FileLogger, LifecycleEvent, LogEvent, LoggerChain, TaskObserver
from taskflow.records import (
    Attempt,
    LogLine,
    QueueConfig,
    ScheduledOnce,
    ScheduledTask,
    TaskProgress,
    TaskRecord,
    TaskStatus,
    Workflow,
)
from taskflow.schema.health import HealthResponse
from taskflow.tasks import add_tasks

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Config",
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
    "FileLogger",
    "HealthResponse",
    "InMemoryLogger",
    "LifecycleEvent",
    "LogEvent",
    "LogLine",
    "LoggerChain",
    "ManagedBackgroundTasks",
    "MySQLBackend",
    "NotStarted",
    "PostgresBackend",
    "QueueConfig",
    "QueueFullError",
    "RedisBackend",
    "ScheduleError",
    "ScheduleNotFound",
    "ScheduledOnce",
    "ScheduledTask",
    "SchemaOutOfDate",
    "SnapshotBackend",
    "SqliteBackend",
    "StaticScheduleError",
    "StdoutLogger",
    "Step",
    "Task",
    "TaskAdmin",
    "TaskArgumentError",
    "TaskAuthBackend",
    "TaskConfig",
    "TaskContext",
    "TaskErrorHandler",
    "TaskGroup",
    "TaskManager",
    "TaskNotFound",
    "TaskNotRerunnable",
    "TaskObserver",
    "TaskOptions",
    "TaskProgress",
    "TaskRecord",
    "TaskRegistry",
    "TaskStatus",
    "TaskTimeout",
    "TaskflowError",
    "Tasks",
    "UnknownQueue",
    "UnknownTaskFunction",
    "Workflow",
    "add_tasks",
    "get_task_context",
    "step",
    "task_log",
    "task_progress",
    "__version__",
]
