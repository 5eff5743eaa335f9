"""fastapi-taskflow's ``fastapi_taskflow.models`` import path, kept so that
``from taskflow.models import QueueConfig`` (or ``TaskRecord``, ``TaskStatus``,
``TaskConfig``, ``ScheduledOnce``, ``AuditEntry``, ``TaskContext``) works after changing
only the import.

The data classes of fastapi-taskflow's models that taskflow has no other home for are
defined here (``QueueConfig``, ``ScheduledOnce``, ``AuditEntry``); the rest are
re-exported. New code should import these names from :mod:`taskflow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from taskflow._engine.context import TaskContext
from taskflow._engine.registry import TaskConfig
from taskflow.errors import ConfigurationError
from taskflow.records import TaskRecord, TaskStatus

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


@dataclass(slots=True)
class QueueConfig:
    """The limits of one named queue.

    Args:
        concurrency: most tasks of this queue running at once in one process (None: no
            limit beyond the executor's own).
        max_size: most tasks of this queue waiting to run (pending, counted in the
            database across all processes); when reached, enqueueing raises
            :class:`~taskflow.errors.QueueFullError` and stores the task as
            ``rejected``. None: no limit.

    Raises:
        ConfigurationError: a limit is not a positive integer or None.
    """

    concurrency: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        _check_limit("concurrency", self.concurrency)
        _check_limit("max_size", self.max_size)

    def to_dict(self) -> dict[str, int | None]:
        """``{"concurrency": ..., "max_size": ...}``."""
        return {"concurrency": self.concurrency, "max_size": self.max_size}


def _check_limit(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"QueueConfig.{name} must be an int >= 1 or None, got {value!r}")


@dataclass
class ScheduledOnce:
    """One pending one-off firing, as ``TaskManager.list_scheduled`` returns it.

    Attributes:
        run_key: identity of the pending firing; scheduling it again replaces it.
        func_name: name of the registered function to run.
        fire_at: UTC time at which the task runs.
        args, kwargs: the call's arguments (empty when ``encrypted_payload`` is set).
        encrypted_payload: the encrypted arguments when ``encrypt_args_key`` is set.
        queue: queue the firing runs on.
        priority: priority of the firing.
        idempotency_key: the firing's idempotency key (held from the moment it is
            scheduled, see the scheduling guide).
        tags: labels of the task.
        created_at: when the firing was scheduled (UTC).
        task_id: id of the pending task row (a taskflow addition; a replaced firing
            gets a new id).
    """

    run_key: str
    func_name: str
    fire_at: datetime
    args: tuple[Any, ...] = field(default_factory=tuple)
    kwargs: dict[str, Any] = field(default_factory=dict)
    encrypted_payload: bytes | None = None
    queue: str = "default"
    priority: int | None = None
    idempotency_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (without the arguments), like fastapi-taskflow's."""
        return {
            "run_key": self.run_key,
            "func_name": self.func_name,
            "fire_at": self.fire_at.isoformat(),
            "queue": self.queue,
            "priority": self.priority,
            "tags": dict(self.tags),
            "created_at": self.created_at.isoformat(),
            "task_id": self.task_id,
        }
