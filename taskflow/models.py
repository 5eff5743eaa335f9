"""fastapi-taskflow's ``fastapi_taskflow.models`` import path, kept so that
``from taskflow.models import QueueConfig`` (or ``TaskRecord``, ``TaskStatus``,
``TaskConfig``, ``ScheduledOnce``, ``AuditEntry``, ``TaskContext``) works after changing
only the import.

New code should import these names from :mod:`taskflow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskflow.context import TaskContext
from taskflow.once import ScheduledOnce
from taskflow.queues import QueueConfig
from taskflow.records import TaskRecord, TaskStatus
from taskflow.registry import TaskConfig

__all__ = [
    "AuditEntry",
    "QueueConfig",
    "ScheduledOnce",
    "TaskConfig",
    "TaskContext",
    "TaskRecord",
    "TaskStatus",
]


@dataclass
class AuditEntry:
    """One audited dashboard action, with fastapi-taskflow's field names.

    taskflow keeps the audit log in the database (``GET {path}/audit``); use
    :meth:`from_audit` to turn one of its entries into this shape.

    Attributes:
        entry_id: id of the entry.
        action: what was done (``"retry"``, ``"cancel"``, ...).
        task_id: the task (or schedule) acted on.
        actor: the authenticated user, or ``"anonymous"``.
        timestamp: when it happened (UTC).
        detail: action-specific data (``{"new_task_id": ...}`` for a retry).
    """

    entry_id: str
    action: str
    task_id: str
    actor: str
    timestamp: datetime
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_audit(cls, entry: Any) -> AuditEntry:
        """Convert an audit entry of taskflow's API (``id``, ``at``, ``actor``,
        ``action``, ``target``, ``detail``), given as an object or a dict."""
        get = entry.get if isinstance(entry, dict) else lambda name: getattr(entry, name)
        return cls(
            entry_id=str(get("id")),
            action=get("action"),
            task_id=get("target"),
            actor=get("actor"),
            timestamp=get("at"),
            detail=dict(get("detail") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "entry_id": self.entry_id,
            "action": self.action,
            "task_id": self.task_id,
            "actor": self.actor,
            "timestamp": self.timestamp.isoformat(),
            "detail": dict(self.detail),
        }
