"""What a task looks like to users: its status and its record."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class TaskStatus(enum.StrEnum):
    """Lifecycle states of a task.

    ``pending`` waits to run (first time or before a retry), ``running`` is executing,
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

    @property
    def is_final(self) -> bool:
        """True for statuses a task never leaves."""
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


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
    :class:`LogLine` objects (``to_dict()`` gives strings).
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

    def __post_init__(self) -> None:
        if self.retries_used is None:  # attempts made after the first one
            self.retries_used = max(self.attempts - 1, 0)

    @property
    def duration(self) -> float | None:
        """Seconds between start and end of the last attempt, when both are known."""
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def to_dict(self) -> dict[str, Any]:
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
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(value: Any) -> Any:
    """Best-effort JSON view of decoded values (for display only; storage uses the codec)."""
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return str(value)
