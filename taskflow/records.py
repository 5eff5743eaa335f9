"""What users get back: a task's status and record, a schedule, a queue's config, a
pending one-off firing and an audit entry. Plain data, shared by every layer."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow._payloads.codec import JSONValue


class TaskStatus(enum.StrEnum):
    """Lifecycle states of a task.

    ``pending`` waits to run (first time or before a retry), ``blocked`` waits for the
    tasks it depends on to end (``depends_on``, workflows), ``running`` is executing,
    and the rest are final. ``interrupted`` means the process running it died or shut
    down and the function is not declared safe to re-run (``requeue_on_interrupt``).
    ``rejected`` means its queue was at its ``max_size`` when it was enqueued: it never
    ran (``QueueFullError`` was raised) and can be retried.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    REJECTED = "rejected"
    BLOCKED = "blocked"  # after fastapi-taskflow's own statuses, which keep their order

    @property
    def is_final(self) -> bool:
        """True for statuses a task never leaves."""
        return self not in (TaskStatus.PENDING, TaskStatus.BLOCKED, TaskStatus.RUNNING)


@dataclass(slots=True)
class LogLine:
    """One ``task_log()`` line as stored."""

    at: datetime
    level: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Attempt:
    """One execution attempt of a task, with its error if it failed."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None = None
    traceback: str | None = None
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """The latest ``task_progress()`` report of a task.

    Attributes:
        done: units done when it was reported.
        total: units in all (None: unknown).
        message: what the task said it was doing, or None.
        at: when it was reported (UTC).
    """

    done: float
    total: float | None
    message: str | None
    at: datetime

    @property
    def fraction(self) -> float | None:
        """``done / total`` capped at 1.0, or None when the total is unknown."""
        if self.total is None:
            return None
        return min(self.done / self.total, 1.0)

    @classmethod
    def from_json(cls, text: str | None) -> TaskProgress | None:
        """The report stored as JSON text, or None (nothing stored, or unreadable)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            done, total, message = data["done"], data.get("total"), data.get("message")
            if not isinstance(done, int | float) or not isinstance(total, int | float | None):
                return None
            return cls(
                done=done,
                total=total,
                message=message if isinstance(message, str) else None,
                at=datetime.fromisoformat(data["at"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-ready fields (``at`` as ISO 8601)."""
        return {
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "at": self.at.isoformat(),
        }


@dataclass(slots=True)
class TaskRecord:
    """A task as stored in the database.

    ``args``/``kwargs``/``result`` are decoded values; they are ``None`` when the
    payload is encrypted and the record was read without decrypting (dashboard lists).

    fastapi-taskflow's fields come first, in its order and with its defaults, so its
    positional and keyword construction works; taskflow's own follow. ``retries_used``
    is derived from ``attempts`` unless given; ``encrypted_payload`` holds the stored
    ciphertext of an encrypted task (never in :meth:`to_dict`); ``executor`` is the
    registered function's executor when this process knows it; ``logs`` holds
    :class:`LogLine` objects (``to_dict()`` gives strings); ``progress`` is the latest
    ``task_progress()`` report (None when the task never reported any);
    ``workflow_id`` the workflow the task belongs to (``TaskManager.chain``, ``group``).
    """

    task_id: str
    func_name: str
    status: TaskStatus
    args: tuple[Any, ...] | None = ()
    kwargs: dict[str, Any] | None = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    retries_used: int | None = None  # None: derived from ``attempts``
    error: str | None = None
    logs: list[LogLine] = field(default_factory=list)
    stacktrace: str | None = None
    idempotency_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    encrypted_payload: bytes | None = None
    source: str = "manual"
    priority: int | None = None
    executor: str | None = None
    queue: str = "default"
    # taskflow's own fields
    func_path: str = ""
    result: Any = None
    attempts: int = 0
    max_retries: int = 0
    schedule_id: str | None = None
    schedule_slot: datetime | None = None
    owner: str | None = None
    encrypted: bool = False
    next_attempt_at: datetime | None = None
    cancel_requested: bool = False
    history: list[Attempt] = field(default_factory=list)
    progress: TaskProgress | None = None
    workflow_id: str | None = None

    def __post_init__(self) -> None:
        if self.retries_used is None:  # attempts made after the first one
            self.retries_used = max(self.attempts - 1, 0)

    @property
    def duration(self) -> float | None:
        """Seconds between start and end of the last attempt, when both are known."""
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def to_dict(self) -> dict[str, JSONValue]:
        """A JSON-ready view, shaped like fastapi-taskflow's ``TaskRecord.to_dict()``."""
        return {
            "task_id": self.task_id,
            "func_name": self.func_name,
            "status": self.status.value,
            "args": _jsonable(list(self.args)) if self.args is not None else None,
            "kwargs": _jsonable(self.kwargs) if self.kwargs is not None else None,
            "result": _jsonable(self.result),
            "error": self.error,
            "stacktrace": self.stacktrace,
            "created_at": _iso(self.created_at),
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "duration": self.duration,
            "retries_used": self.retries_used,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "executor": self.executor,
            "queue": self.queue,
            "tags": dict(self.tags),
            "idempotency_key": self.idempotency_key,
            "source": self.source,
            "schedule_id": self.schedule_id,
            "encrypted": self.encrypted,
            "logs": [f"{line.at.isoformat()} [{line.level}] {line.message}" for line in self.logs],
            "progress": self.progress.to_dict() if self.progress is not None else None,
            "workflow_id": self.workflow_id,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(value: object) -> JSONValue:
    """Best-effort JSON view of decoded values (for display only; storage uses the codec)."""
    from fastapi.encoders import jsonable_encoder

    try:
        data: JSONValue = jsonable_encoder(value)
    except (TypeError, ValueError):
        return str(value)
    return data


@dataclass(slots=True)
class ScheduledTask:
    """A schedule as users see it: static (from code) or dynamic (created at runtime)."""

    name: str
    task_group_name: str | None
    function_name: str
    cron_expression: str | None
    every: float | None
    timezone: str
    kwargs: dict[str, Any]
    dynamic: bool
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    high_priority: bool = False
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    enabled: bool = True
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_task_id: str | None = None

    @property
    def expression(self) -> str | None:
        """The cron expression (fastapi-task-manager's name); None for an interval."""
        return self.cron_expression

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO 8601)."""
        data = asdict(self)
        for key in ("next_run_at", "last_run_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


class AuditSource(Protocol):
    """An audit entry of taskflow's API, as an object (``GET {path}/audit`` items)."""

    @property
    def id(self) -> object:
        """Id of the entry."""

    @property
    def action(self) -> str:
        """What was done."""

    @property
    def target(self) -> str:
        """The task (or schedule) acted on."""

    @property
    def actor(self) -> str:
        """Who did it."""

    @property
    def at(self) -> datetime:
        """When it happened."""

    @property
    def detail(self) -> Mapping[str, JSONValue] | None:
        """Action-specific data."""


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
    def from_audit(cls, entry: AuditSource | dict[str, Any]) -> AuditEntry:
        """Convert an audit entry of taskflow's API (``id``, ``at``, ``actor``,
        ``action``, ``target``, ``detail``), given as an object or a dict (whose values
        are taken as they are)."""

        def get(name: str) -> Any:
            return entry.get(name) if isinstance(entry, dict) else getattr(entry, name)

        return cls(
            entry_id=str(get("id")),
            action=get("action"),
            task_id=get("target"),
            actor=get("actor"),
            timestamp=get("at"),
            detail=dict(get("detail") or {}),
        )

    def to_dict(self) -> dict[str, JSONValue]:
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


def _check_limit(name: str, value: object) -> None:
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

    def to_dict(self) -> dict[str, JSONValue]:
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


_ENDED_STATUSES = ("success", "failed", "cancelled", "interrupted", "rejected")


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow: tasks stored together that wait for one another (a chain, or a group
    with its callback), as ``TaskManager.chain``, ``group`` and ``get_workflow``
    return it.

    Attributes:
        id: the workflow's id (each of its tasks carries it as ``workflow_id``).
        name: its name (the function of its first task when none was given).
        kind: ``chain`` or ``group``.
        created_at: when it was stored (UTC).
        task_ids: its tasks in the order they were given (a group's callback last).
        counts: how many of its tasks are in each status.
    """

    id: str
    name: str
    kind: str
    created_at: datetime
    task_ids: tuple[str, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def last_id(self) -> str:
        """The task that ends the workflow: a chain's last step, a group's callback."""
        return self.task_ids[-1]

    @property
    def total(self) -> int:
        """How many tasks it has."""
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        """How many of them have ended."""
        return sum(n for status, n in self.counts.items() if status in _ENDED_STATUSES)

    @property
    def status(self) -> str:
        """``running`` until every task has ended; then ``success`` when all succeeded,
        else ``failed``."""
        if self.ended < self.total:
            return "running"
        return "success" if self.counts.get("success", 0) == self.total else "failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "created_at": self.created_at.isoformat(),
            "task_ids": list(self.task_ids),
            "counts": dict(self.counts),
            "total": self.total,
            "ended": self.ended,
            "status": self.status,
        }
