"""Response and request models of the JSON API (they appear in the app's OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from taskflow._engine.reader import decode_values
from taskflow._payloads.payloads import Payloads
from taskflow._store.rows import AuditRow, RetryLinks, TaskSummary, TaskSummaryWithPayload
from taskflow.admin._redact import Redactor
from taskflow.admin._util import jsonable, seconds_between
from taskflow.records import TaskProgress, TaskRecord

if TYPE_CHECKING:
    from taskflow.admin._views import Overview, ScheduleRow


class ProgressOut(BaseModel):
    """The latest ``task_progress()`` report of a task (``at``: ISO 8601)."""

    done: float
    total: float | None = None
    message: str | None = None
    at: str


class TaskOut(BaseModel):  # type: ignore[no-redef]  # the mypy plugin's **kwargs (pydantic#3125)
    """A task, shaped like fastapi-taskflow's ``TaskRecord.to_dict()``.

    ``args``/``kwargs`` are null unless the dashboard was created with
    ``display_func_args=True``, and so is the ``result`` of an ``encrypted`` task;
    sensitive keys are masked in them and in ``result``. ``retry_of`` is the task this
    one runs again; ``resolution`` (``retried`` or ``discarded``) and ``resolved_at``
    say how and when a failure was dealt with; ``retried_as`` (one task only, not in
    lists) holds the ids of the tasks that run it again. ``progress`` is the latest
    ``task_progress()`` report (null when the task never reported any).
    """

    task_id: str
    func_name: str
    status: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    stacktrace: str | None = None
    created_at: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    duration: float | None = None
    retries_used: int = 0
    attempts: int = 0
    max_retries: int = 0
    priority: int = 0
    queue: str = "default"
    tags: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None
    source: str = "manual"
    schedule_id: str | None = None
    encrypted: bool = False
    logs: list[str] = Field(default_factory=list)
    retry_of: str | None = None
    resolution: str | None = None
    resolved_at: str | None = None
    retried_as: list[str] | None = None
    progress: ProgressOut | None = None


def task_out_from_record(
    record: TaskRecord, display_args: bool, redactor: Redactor, links: RetryLinks | None = None
) -> TaskOut:
    """A :class:`TaskOut` of a full record (with logs), and its retry ``links``."""
    data = record.to_dict()
    if links is not None:
        data["retry_of"] = links.retry_of
        data["resolution"] = links.resolution
        data["resolved_at"] = _iso(links.resolved_at)
        data["retried_as"] = [copy.id for copy in links.retried_as]
    if display_args:
        data["args"] = redactor.redact(data["args"]) if data["args"] is not None else None
        data["kwargs"] = redactor.redact(data["kwargs"]) if data["kwargs"] is not None else None
    else:
        data["args"] = data["kwargs"] = None
    # Encrypted at rest means hidden here too, unless arguments are shown.
    shown = display_args or not record.encrypted
    data["result"] = redactor.redact(data["result"]) if shown else None
    return TaskOut(**data)


def task_out_from_row(row: TaskSummary, payloads: Payloads | None, redactor: Redactor) -> TaskOut:
    """A :class:`TaskOut` of a list row; arguments and result are decoded only when
    ``payloads`` is given (``display_func_args``) and the row carries them."""
    args = kwargs = result = None
    if payloads is not None and isinstance(row, TaskSummaryWithPayload):
        args, kwargs, result = _decoded(row, payloads, redactor)
    attempts = row.attempts
    return TaskOut(
        task_id=row.id,
        func_name=row.func_name,
        status=row.status,
        args=args,
        kwargs=kwargs,
        result=result,
        error=row.error,
        created_at=_iso(row.created_at),
        start_time=_iso(row.started_at),
        end_time=_iso(row.finished_at),
        duration=seconds_between(row.started_at, row.finished_at),
        retries_used=max(attempts - 1, 0),
        attempts=attempts,
        max_retries=row.max_retries,
        priority=row.priority,
        queue=row.queue,
        tags=dict(row.tags or {}),
        idempotency_key=row.idempotency_key,
        source=row.source,
        schedule_id=row.schedule_id,
        encrypted=row.encrypted,
        retry_of=row.retry_of,
        resolution=row.resolution,
        resolved_at=_iso(row.resolved_at),
        progress=_progress(row.progress),
    )


def _progress(text: str | None) -> ProgressOut | None:
    progress = TaskProgress.from_json(text)
    return None if progress is None else ProgressOut(**progress.to_dict())


def _decoded(
    row: TaskSummaryWithPayload, payloads: Payloads, redactor: Redactor
) -> tuple[Any, Any, Any]:
    args, kwargs, result = decode_values(row, payloads)
    if args is None:
        return None, None, None
    return (
        redactor.redact(jsonable(list(args))),
        redactor.redact(jsonable(kwargs)),
        redactor.redact(jsonable(result)),
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class MetricsOut(BaseModel):
    """``GET {path}/metrics``: fastapi-taskflow's fields plus taskflow's.

    Counts are exact (one index range per status: about 50 ms for a million tasks).
    ``capped`` is always false and ``count_cap`` is the cap of the dashboard's lists;
    both are kept for clients of earlier versions, whose counts stopped at the cap.
    ``avg_duration_seconds`` is the average of the last (up to 2,000) successful runs.
    """

    total: int
    success: int
    failed: int
    running: int
    pending: int
    interrupted: int
    cancelled: int
    rejected: int
    success_rate: float
    avg_duration_seconds: float
    capped: bool
    count_cap: int
    finished_last_hour: int
    failed_last_hour: int
    finished_last_day: int
    failed_last_day: int

    @classmethod
    def build(cls, counts: dict[str, int], stats: Overview, *, cap: int) -> MetricsOut:
        """Metrics from exact status counts and the overview's statistics (``cap`` is
        reported as ``count_cap``)."""
        shown = dict(counts)
        total = sum(shown.values())
        average = stats.mean_duration or 0.0
        return cls(
            total=total,
            success=shown.get("success", 0),
            failed=shown.get("failed", 0),
            running=shown.get("running", 0),
            pending=shown.get("pending", 0),
            interrupted=shown.get("interrupted", 0),
            cancelled=shown.get("cancelled", 0),
            rejected=shown.get("rejected", 0),
            success_rate=shown.get("success", 0) / total if total else 0.0,
            avg_duration_seconds=round(average, 6),
            capped=False,
            count_cap=cap,
            finished_last_hour=stats.hour.finished,
            failed_last_hour=stats.hour.failed,
            finished_last_day=stats.day.finished,
            failed_last_day=stats.day.failed,
        )


class AuditOut(BaseModel):
    """One audited action."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = Field(default_factory=dict)
    ip: str | None = None


def audit_out(row: AuditRow) -> AuditOut:
    """The API view of an audit entry."""
    return AuditOut(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail=row.detail,
        ip=row.ip,
    )


class BulkRetryBody(BaseModel):
    """``POST {path}/bulk-retry``: the ids to retry (a bare JSON list works too)."""

    task_ids: list[str]


class ReplayOut(BaseModel):
    """Tasks retried (new id by original id) and tasks skipped."""

    dispatched: int
    skipped: int
    results: list[dict[str, str]]


class HistoryOut(BaseModel):
    """``DELETE {path}/history``: tasks deleted (``store`` is always 0: there is no
    in-memory store; kept for fastapi-taskflow clients)."""

    deleted: int
    store: int
    backend: int


class RetryOut(BaseModel):
    """The new task made by a retry."""

    task_id: str
    task: TaskOut


class CancelOut(BaseModel):
    """The cancelled task as it is now."""

    task_id: str
    task: TaskOut


class DeleteOut(BaseModel):
    """What was deleted."""

    name: str
    deleted: bool


class TriggerOut(BaseModel):
    """The task a schedule started now."""

    task_name: str
    task_id: str


class ScheduleOut(BaseModel):
    """A schedule with its next fire times and its last run."""

    name: str
    task_group_name: str | None
    function_name: str
    dynamic: bool
    trigger: str
    timezone: str
    enabled: bool
    next_fire_times: list[datetime]
    last_run_at: datetime | None
    last_task_id: str | None
    last_status: str | None
    description: str | None


def schedule_out(row: ScheduleRow) -> ScheduleOut:
    """The API view of a schedule row."""
    return ScheduleOut(
        name=row.name,
        task_group_name=row.group,
        function_name=row.function,
        dynamic=row.dynamic,
        trigger=row.trigger,
        timezone=row.timezone,
        enabled=row.enabled,
        next_fire_times=row.next_fires,
        last_run_at=row.last_run_at,
        last_task_id=row.last_task_id,
        last_status=row.last_status,
        description=row.description,
    )


class CreateScheduleBody(BaseModel):  # type: ignore[no-redef]  # as TaskOut
    """``POST {path}/schedules``: a dynamic schedule of a TaskGroup function."""

    task_group_name: str
    function_name: str
    cron_expression: str | None = Field(None, description="five-field cron expression")
    every: float | None = Field(None, description="interval in seconds (instead of cron)")
    timezone: str = "UTC"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
