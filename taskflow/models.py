"""fastapi-taskflow's ``fastapi_taskflow.models`` import path, kept so that
``from taskflow.models import QueueConfig`` (or ``TaskRecord``, ``TaskStatus``,
``TaskConfig``, ``ScheduledOnce``, ``AuditEntry``, ``TaskContext``) works after changing
only the import. New code should import these names from :mod:`taskflow`.
"""

from taskflow._engine.context import TaskContext
from taskflow._engine.registry import TaskConfig
from taskflow.records import AuditEntry, QueueConfig, ScheduledOnce, TaskRecord, TaskStatus

__all__ = [
    "AuditEntry",
    "QueueConfig",
    "ScheduledOnce",
    "TaskConfig",
    "TaskContext",
    "TaskRecord",
    "TaskStatus",
]
