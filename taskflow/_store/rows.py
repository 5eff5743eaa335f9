"""The typed records that cross the store's interface.

Everything the engine, the schedules and the dashboard read from the store arrives as
one of these records, and everything they write leaves as one: no column name is spelt
as a string outside the store. Fields are named after their columns. Read records are
frozen; :class:`NewTask` is the one record the engine fills in before writing it.

Values are stored forms: ``payload`` and ``result`` are the codec's text (encrypted
when ``encrypted``), timestamps are timezone-aware UTC, ``tags`` and ``info`` are JSON
objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from sqlalchemy.engine import RowMapping


class _FromColumns:
    """Builds a record from a row mapping that holds (at least) its columns."""

    __slots__ = ()

    @classmethod
    def of(cls, row: RowMapping | Mapping[str, Any]) -> Self:
        """The record of ``row``; extra keys are ignored, missing ones are an error."""
        return cls(**{name: row[name] for name in _columns(cls)})


def _columns(cls: type) -> tuple[str, ...]:
    names: tuple[str, ...] | None = _COLUMN_CACHE.get(cls)
    if names is None:
        names = _COLUMN_CACHE[cls] = tuple(f.name for f in fields(cls))
    return names


_COLUMN_CACHE: dict[type, tuple[str, ...]] = {}


@dataclass(slots=True)
class NewTask:
    """A task about to be inserted (``status`` pending, no attempt yet).

    ``promised`` is not a column: it says the id went back to the caller before the
    commit, so if another process wins the idempotency key meanwhile the store records
    this id as an alias of the winner instead of dropping it. ``rejection`` set means the
    task is recorded as ``rejected`` (final, never run) with that error: see
    :meth:`rejected`.
    """

    id: str
    func_name: str
    func_path: str
    payload: str
    encrypted: bool
    max_retries: int
    priority: int
    queue: str
    tags: dict[str, str]
    idempotency_key: str | None
    source: str
    owner: str | None
    requeue_on_interrupt: bool
    created_at: datetime
    next_attempt_at: datetime
    schedule_id: str | None = None
    schedule_slot: datetime | None = None
    retry_delay: float | None = None
    retry_max_delay: float | None = None
    run_key: str | None = None
    trace_context: str | None = None  # W3C trace context of the enqueueing code, as JSON
    unique_key: str | None = None  # digest a unique_for enqueue is matched by
    workflow_id: str | None = None
    on_dependency_failure: str | None = None  # set only on a task with dependencies
    limit_key: str | None = None  # the concurrency or rate limit it counts against
    blocked: bool = False  # stored ``blocked``: it waits for its dependencies
    promised: bool = False
    rejection: str | None = None

    def rejected(self, error: str) -> NewTask:
        """The record of this task refused with ``error``. It keeps no idempotency key,
        so the key stays free for a later attempt."""
        return replace(self, rejection=error, idempotency_key=None, promised=False)

    def columns(self) -> dict[str, object]:
        """The ``taskflow_tasks`` values to insert."""
        rejected = self.rejection is not None
        return {
            "id": self.id,
            "func_name": self.func_name,
            "func_path": self.func_path,
            "status": "rejected" if rejected else "blocked" if self.blocked else "pending",
            "error": self.rejection,
            "finished_at": self.created_at if rejected else None,
            "payload": self.payload,
            "encrypted": self.encrypted,
            "attempts": 0,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "queue": self.queue,
            "tags": self.tags,
            "idempotency_key": self.idempotency_key,
            "source": self.source,
            "schedule_id": self.schedule_id,
            "schedule_slot": self.schedule_slot,
            "run_key": self.run_key,
            "owner": self.owner,
            "requeue_on_interrupt": self.requeue_on_interrupt,
            "cancel_requested": False,
            "created_at": self.created_at,
            "next_attempt_at": self.next_attempt_at,
            "retry_delay": self.retry_delay,
            "retry_max_delay": self.retry_max_delay,
            "trace_context": self.trace_context,
            "unique_key": self.unique_key,
            "workflow_id": self.workflow_id,
            "on_dependency_failure": self.on_dependency_failure,
            "limit_key": self.limit_key,
        }


@dataclass(frozen=True, slots=True)
class TaskRow(_FromColumns):
    """A stored task, every column."""

    id: str
    func_name: str
    func_path: str
    status: str
    payload: str
    encrypted: bool
    result: str | None
    error: str | None
    traceback: str | None
    attempts: int
    max_retries: int
    retry_delay: float | None
    retry_max_delay: float | None
    priority: int
    queue: str
    tags: dict[str, str]
    idempotency_key: str | None
    source: str
    schedule_id: str | None
    schedule_slot: datetime | None
    run_key: str | None
    owner: str | None
    requeue_on_interrupt: bool
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime
    trace_context: str | None = None
    progress: str | None = None  # the last task_progress() report, as JSON text
    unique_key: str | None = None  # digest matched by unique_for (see NewTask)
    workflow_id: str | None = None
    on_dependency_failure: str | None = None  # set only on a task with dependencies
    limit_key: str | None = None  # the concurrency or rate limit it counts against
    resolution: str | None = None  # ``retried`` or ``discarded`` (see RESOLUTIONS)


@dataclass(frozen=True, slots=True)
class TaskSummary(_FromColumns):
    """A task as a list shows it: never its payload, result or traceback."""

    id: str
    func_name: str
    status: str
    queue: str
    source: str
    tags: dict[str, str]
    priority: int
    attempts: int
    max_retries: int
    error: str | None
    owner: str | None
    schedule_id: str | None
    idempotency_key: str | None
    encrypted: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retry_of: str | None
    resolution: str | None
    resolved_at: datetime | None
    progress: str | None  # the last task_progress() report, as JSON text


@dataclass(frozen=True, slots=True)
class TaskLink(_FromColumns):
    """A task another task's page links to: its id, status and creation time."""

    id: str
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RetryLinks:
    """How a task is tied to its retries.

    Attributes:
        retry_of: the id of the task this one runs again (None: not a retry copy).
        original: that task, None when it was deleted (or for no ``retry_of``).
        resolution: ``retried`` or ``discarded`` (None: unresolved).
        resolved_at: when it was resolved.
        retried_as: the tasks that run this one again, oldest first.
    """

    retry_of: str | None
    original: TaskLink | None
    resolution: str | None
    resolved_at: datetime | None
    retried_as: list[TaskLink]


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow about to be inserted with its tasks."""

    id: str
    name: str
    kind: str  # ``chain``, ``group`` or ``tasks`` (linked by depends_on)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dependency:
    """An edge of a new task: ``task_id`` waits for ``depends_on``, its ``position``-th
    dependency."""

    task_id: str
    depends_on: str
    position: int


@dataclass(frozen=True, slots=True)
class DependencyLink(_FromColumns):
    """A task linked to another by a dependency, as the task page lists it: ``None``
    status and function for a dependency that was deleted."""

    id: str
    func_name: str | None
    status: str | None
    position: int


@dataclass(frozen=True, slots=True)
class WorkflowRow(_FromColumns):
    """A stored workflow, with how many of its tasks are in each status."""

    id: str
    name: str
    kind: str
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # without tasks run again


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt: final, or ``pending`` again for a retry at
    ``next_attempt_at``. Applied only while ``owner`` still runs the task."""

    id: str
    owner: str
    attempt: int
    status: str
    finished_at: datetime
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogRow(_FromColumns):
    """One stored log line of a task (``id`` orders the lines of a task)."""

    id: int
    task_id: str
    at: datetime
    level: str
    message: str
    extra: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class NewLogLine:
    """A log line about to be written."""

    task_id: str
    at: datetime
    level: str
    message: str
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow(_FromColumns):
    """One attempt of a task."""

    task_id: str
    attempt: int
    instance: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None
    traceback: str | None


def attempt_history(task: TaskRow, ended: Sequence[AttemptRow]) -> list[AttemptRow]:
    """Every attempt of ``task``, first first: the stored rows of attempts that ended
    before another began (a retry, a requeue after an interruption) or that were settled,
    and the latest attempt read from the task row itself.

    The store writes an attempt row only for those: a task that succeeds or fails on its
    first run costs no attempt write at all, and its history is the same.
    """
    history = sorted(ended, key=lambda attempt: attempt.attempt)
    latest = task.attempts
    if (
        latest == 0
        or task.started_at is None
        or task.status == "pending"
        or any(attempt.attempt == latest for attempt in history)
    ):
        return history
    final = task.status != "running"
    history.append(
        AttemptRow(
            task_id=task.id,
            attempt=latest,
            instance=task.owner,
            started_at=task.started_at,
            finished_at=task.finished_at if final else None,
            status=task.status,
            error=task.error if final else None,
            traceback=task.traceback if final else None,
        )
    )
    return history


@dataclass(frozen=True, slots=True)
class RunTimes(_FromColumns):
    """When a finished run of a schedule started and ended."""

    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleRow(_FromColumns):
    """A stored schedule (``kind`` is ``static`` or ``dynamic``; ``payload`` the stored
    call; ``options`` the task options a dynamic schedule sets)."""

    id: str
    name: str
    group_name: str | None
    func_name: str
    kind: str
    cron: str | None
    every: float | None
    timezone: str
    payload: str
    options: dict[str, Any]
    description: str | None
    tags: list[str]
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: str | None
    created_at: datetime
    updated_at: datetime

    def columns(self) -> dict[str, object]:
        """The ``taskflow_schedules`` values to insert."""
        return {name: getattr(self, name) for name in _columns(type(self))}


@dataclass(frozen=True, slots=True)
class InstanceRow(_FromColumns):
    """A running (or dead, not yet rescued) taskflow process."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    started_at: datetime
    heartbeat_at: datetime
    info: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, object]:
        """The ``taskflow_instances`` values to insert."""
        return {name: getattr(self, name) for name in _columns(type(self))}


def repeats_start(
    status: str, owner: str | None, started_at: datetime | None, *, instance: str, now: datetime
) -> bool:
    """A task row (its ``status``, ``owner``, ``started_at``) is running from the start
    ``instance`` asks for at ``now``: that start happened already (its commit landed,
    its reply was lost) and asking again must answer its attempt, not drop the task.
    The SQL of the group-committed starts says the same (``hot_sql.SQLITE_START``)."""
    return status == "running" and owner == instance and started_at == now


# The notification (PostgreSQL) that a queue was paused or resumed: listening processes
# read the paused queues again at once instead of at their next poll_interval.
PAUSES_CHANGED = "taskflow:paused-queues"

# The notification (PostgreSQL) that tasks ended (a final status): sent once per commit
# of finishes, with their ids while they fit in one payload (PostgreSQL allows under 8000
# bytes), else bare: whoever waits on a task reads it again.
TASKS_ENDED = "taskflow:ended"
_ENDED_PAYLOAD_CHARS = 7000


def ended_notification(task_ids: Sequence[str]) -> str:
    """The :data:`TASKS_ENDED` payload naming ``task_ids`` (bare when too many)."""
    payload = f"{TASKS_ENDED}:{','.join(task_ids)}"
    return payload if len(payload) <= _ENDED_PAYLOAD_CHARS else TASKS_ENDED


def ended_ids(payload: str) -> list[str] | None:
    """The task ids a :data:`TASKS_ENDED` payload names (empty: any task may have ended),
    or None when ``payload`` is another notification."""
    if payload == TASKS_ENDED:
        return []
    if not payload.startswith(TASKS_ENDED + ":"):
        return None
    return [task_id for task_id in payload[len(TASKS_ENDED) + 1 :].split(",") if task_id]


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """The latest ``task_progress`` report of a running task, as JSON text."""

    task_id: str
    report: str


@dataclass(frozen=True, slots=True)
class QueuePause(_FromColumns):
    """A paused queue: no process starts its tasks until it is resumed."""

    queue: str
    paused_at: datetime
    paused_by: str


@dataclass(frozen=True, slots=True)
class TaskSummaryWithPayload(TaskSummary):
    """A task as a list that shows arguments and results reads it: the summary, plus
    the stored ``payload`` and ``result`` (only such a list reads them)."""

    payload: str
    result: str | None


@dataclass(frozen=True, slots=True)
class LogSearchRow(LogRow):
    """A log line found by a log search, with the function of its task."""

    func_name: str


@dataclass(frozen=True, slots=True)
class FinishedRun(_FromColumns):
    """A finished task as duration statistics read it (``started_at`` is None for a
    task that never started: cancelled while pending, or rejected)."""

    func_name: str
    status: str
    started_at: datetime | None
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow(_FromColumns):
    """One recorded dashboard action (``id`` orders the entries)."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    ip: str | None


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """A dashboard action about to be recorded (``ip``: where the request came from)."""

    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    ip: str | None = None

    def columns(self) -> dict[str, object]:
        """The ``taskflow_admin_audit`` values to insert."""
        return {name: getattr(self, name) for name in _columns(type(self))}


@dataclass(frozen=True, slots=True)
class SessionRow(_FromColumns):
    """A dashboard login session; ``id`` is the hash of the token its cookie holds."""

    id: str
    username: str
    read_only: bool
    created_at: datetime
    expires_at: datetime

    def columns(self) -> dict[str, object]:
        """The ``taskflow_admin_sessions`` values to insert."""
        return {name: getattr(self, name) for name in _columns(type(self))}


@dataclass(frozen=True, slots=True)
class Limit:
    """A concurrency and rate limit, as a start checks it: at most ``concurrency`` tasks
    with ``key`` running, at most ``rate`` starts in any ``period`` seconds (None: no
    such bound)."""

    key: str
    concurrency: int | None = None
    rate: int | None = None
    period: float | None = None


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """How much of a limit is in use: tasks running, starts since the window opened,
    and the oldest of those starts (None when there is none)."""

    running: int
    starts: int
    oldest_start: datetime | None


@dataclass(frozen=True, slots=True)
class LimitHold:
    """Why a limited task did not start: ``reason`` is ``"concurrency"`` (``count``
    tasks run) or ``"rate"`` (``count`` starts in the window, the next one allowed at
    ``retry_at``)."""

    reason: str
    count: int
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The database's clock read from this host: ``offset`` is how far it is ahead of
    this host's clock (negative: behind), known to within half of ``round_trip``
    (seconds)."""

    offset: timedelta
    round_trip: float
