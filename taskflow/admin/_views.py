"""What each page shows, computed from the manager and the dashboard store.

Every function here reads a bounded amount: one page, one task, or a fixed-size sample
of recent runs. Statistics come from samples (the last few hundred or thousand finished
runs) and are cached for a few seconds, so a busy dashboard does not repeat them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from taskflow._engine.registry import TaskConfig
from taskflow._schedules.triggers import Trigger
from taskflow._store.dashboard import DashboardStore
from taskflow._store.rows import DependencyLink, FinishedRun, LogRow, LogSearchRow, RetryLinks
from taskflow._store.rows import InstanceRow as StoredInstance
from taskflow.admin._charts import Chart, throughput_chart
from taskflow.admin._queues import WaitReason, wait_reason
from taskflow.admin._redact import Redactor
from taskflow.admin._util import jsonable, percentile, pretty_json, seconds_between, utcnow
from taskflow.records import TaskRecord, TaskStatus, Workflow

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

T = TypeVar("T")
STATUSES = tuple(status.value for status in TaskStatus)
OK_STATUSES = ("success",)
BAD_STATUSES = ("failed", "interrupted")
FUNCTION_SAMPLE = 500
SLOWEST_SAMPLE = 2000
NEXT_FIRES = 3


class TTLCache:
    """A few computed values kept for ``ttl`` seconds (keys are a fixed, small set)."""

    def __init__(self, ttl: float, max_entries: int = 256) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._values: dict[str, tuple[float, Any]] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """The cached value of ``key``, or ``await compute()`` stored for ``ttl`` seconds."""
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        value = await compute()
        if len(self._values) >= self._max:
            self._values.clear()
        self._values[key] = (now + self.ttl, value)
        return value


# -- overview ----------------------------------------------------------------------------


@dataclass(slots=True)
class SlowFunction:
    """Duration statistics of one function in the recent-runs sample."""

    name: str
    runs: int
    p50: float | None
    p95: float | None
    slowest: float | None


@dataclass(slots=True)
class Overview:
    """The overview page's charts and statistics."""

    hour: Chart
    day: Chart
    slowest: list[SlowFunction]
    mean_duration: float | None = None


async def overview(queries: DashboardStore) -> Overview:
    """Hour and day throughput, and the slowest functions of the recent runs."""
    now = utcnow()
    hour = await _chart(queries, now=now, size=60, count=60, title="Last hour")
    day = await _chart(queries, now=now, size=3600, count=24, title="Last 24 hours")
    runs = await queries.recent_finished(statuses=OK_STATUSES, limit=SLOWEST_SAMPLE)
    durations = [
        seconds
        for run in runs
        if (seconds := seconds_between(run.started_at, run.finished_at)) is not None
    ]
    return Overview(
        hour=hour,
        day=day,
        slowest=slowest_functions(runs),
        mean_duration=sum(durations) / len(durations) if durations else None,
    )


async def _chart(
    queries: DashboardStore, *, now: datetime, size: int, count: int, title: str
) -> Chart:
    # Buckets are aligned to whole minutes/hours; the last one is the current one.
    end_bucket = int(now.timestamp()) // size
    start = datetime.fromtimestamp((end_bucket - count + 1) * size, tz=now.tzinfo)
    buckets = await queries.finished_buckets(
        start=start, size=size, count=count, statuses=OK_STATUSES + BAD_STATUSES
    )
    return throughput_chart(buckets, title=title, ok=OK_STATUSES, bad=BAD_STATUSES)


def slowest_functions(runs: list[FinishedRun], *, top: int = 8) -> list[SlowFunction]:
    """Functions of the sample by 95th-percentile duration, slowest first."""
    durations: dict[str, list[float]] = {}
    for run in runs:
        seconds = seconds_between(run.started_at, run.finished_at)
        if seconds is not None:
            durations.setdefault(run.func_name, []).append(seconds)
    stats = []
    for name, values in durations.items():
        values.sort()
        stats.append(
            SlowFunction(
                name=name,
                runs=len(values),
                p50=percentile(values, 0.5),
                p95=percentile(values, 0.95),
                slowest=values[-1],
            )
        )
    stats.sort(key=lambda item: item.p95 or 0.0, reverse=True)
    return stats[:top]


# -- task detail -------------------------------------------------------------------------


@dataclass(slots=True)
class TimelineEvent:
    """One step of a task's life."""

    at: datetime | None
    label: str
    status: str
    detail: str | None = None


@dataclass(slots=True)
class TaskDetail:
    """Everything the task page shows about one task."""

    record: TaskRecord
    args_visible: bool
    args_text: str | None
    result_text: str | None
    schedule_name: str | None
    owner: StoredInstance | None
    timeline: list[TimelineEvent] = field(default_factory=list)
    links: RetryLinks | None = None  # the task it retries, its retries, its resolution
    waiting: WaitReason | None = None  # why a pending task has not started
    upstream: list[DependencyLink] = field(default_factory=list)  # what it waits for
    downstream: list[DependencyLink] = field(default_factory=list)  # what waits for it
    workflow: Workflow | None = None  # the workflow it belongs to

    @property
    def live(self) -> bool:
        """True while the task can still change."""
        return not self.record.status.is_final

    @property
    def elapsed(self) -> float | None:
        """Seconds a running task has been running, else None."""
        record = self.record
        if record.status.value != "running" or record.end_time is not None:
            return None
        return seconds_between(record.start_time, utcnow())


async def task_detail(
    manager: TaskManager,
    queries: DashboardStore,
    task_id: str,
    *,
    display_args: bool,
    redactor: Redactor,
) -> TaskDetail | None:
    """The task page's data, or None when there is no such task."""
    record = await manager.get_task(task_id, logs=False)
    if record is None:
        return None
    names = await queries.schedule_names([record.schedule_id or ""])
    pending = record.status.value == "pending"
    found_instances = await queries.instances() if record.owner or pending else []
    owner = next((found for found in found_instances if found.id == record.owner), None)
    waiting = await wait_reason(
        record,
        store=manager.db,
        instances=found_instances,
        stale_after=manager.instance_timeout,
        config=manager.registry.get(record.func_name),
    )
    upstream, downstream = await manager.db.dependency_links(record.task_id)
    return TaskDetail(
        record=record,
        args_visible=display_args,
        args_text=_arguments_text(record, redactor) if display_args else None,
        result_text=_result_text(record, redactor, display_args),
        schedule_name=names.get(record.schedule_id or ""),
        owner=owner,
        timeline=timeline(record),
        links=await queries.retry_links(record.task_id),
        waiting=waiting,
        upstream=upstream,
        downstream=downstream,
        workflow=await manager.get_workflow(record.workflow_id) if record.workflow_id else None,
    )


def _arguments_text(record: TaskRecord, redactor: Redactor) -> str:
    if record.args is None and record.kwargs is None:
        return "(encrypted: the configured keys cannot decrypt the arguments)"
    shown = {
        "args": redactor.redact(jsonable(list(record.args or ()))),
        "kwargs": redactor.redact(jsonable(record.kwargs or {})),
    }
    return pretty_json(shown)


def _result_text(record: TaskRecord, redactor: Redactor, display_args: bool) -> str | None:
    if record.result is None:
        return None
    if record.encrypted and not display_args:
        # Encrypted at rest, so hidden here too unless arguments are shown.
        return "(encrypted: pass display_func_args=True to TaskAdmin to show the result)"
    return pretty_json(redactor.redact(jsonable(record.result)))


def timeline(record: TaskRecord) -> list[TimelineEvent]:
    """Creation, each attempt's start and end, and what comes next."""
    events = [TimelineEvent(record.created_at, f"created ({record.source})", "pending")]
    for attempt in record.history:
        where = f" on {attempt.instance[:8]}" if attempt.instance else ""
        events.append(
            TimelineEvent(
                attempt.started_at, f"attempt {attempt.attempt} started{where}", "running"
            )
        )
        if attempt.finished_at is not None:
            events.append(
                TimelineEvent(
                    attempt.finished_at,
                    f"attempt {attempt.attempt} {attempt.status}",
                    attempt.status,
                    attempt.error,
                )
            )
    if record.status.value == "pending" and record.attempts and record.next_attempt_at:
        events.append(TimelineEvent(record.next_attempt_at, "next attempt", "pending"))
    elif record.status.is_final and record.end_time is not None:
        last = record.history[-1] if record.history else None
        if last is None or last.status != record.status.value or last.finished_at is None:
            events.append(TimelineEvent(record.end_time, record.status.value, record.status.value))
    return events


def log_view(line: LogRow, redactor: Redactor) -> dict[str, Any]:
    """A log line for display, its structured fields redacted (with its task's function
    when a log search found it)."""
    extra = line.extra or {}
    return {
        "id": line.id,
        "task_id": line.task_id,
        "at": line.at,
        "level": line.level.lower(),
        "message": line.message,
        "extra": pretty_json(redactor.redact(extra)) if extra else None,
        "extra_inline": _inline(redactor.redact(extra)) if extra else "",
        "func_name": line.func_name if isinstance(line, LogSearchRow) else None,
    }


def _inline(extra: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in extra.items())


# -- schedules -----------------------------------------------------------------------------


@dataclass(slots=True)
class ScheduleRow:
    """A schedule with its next fire times and its last run's status."""

    name: str
    group: str | None
    function: str
    dynamic: bool
    trigger: str
    timezone: str
    enabled: bool
    next_fires: list[datetime]
    last_run_at: datetime | None
    last_task_id: str | None
    last_status: str | None
    description: str | None
    every: float | None = None

    @property
    def time_format(self) -> str:
        """``strftime`` format of the next fire times: with seconds when the trigger
        needs them (an interval that is not whole minutes, a slot off the minute)."""
        off_minute = self.every is not None and self.every % 60 != 0
        if off_minute or any(fire.second or fire.microsecond for fire in self.next_fires):
            return "%H:%M:%S"
        return "%H:%M"


async def schedule_rows(manager: TaskManager, queries: DashboardStore) -> list[ScheduleRow]:
    """Every schedule, static and dynamic, by name."""
    schedules = await manager.list_schedules()
    statuses = await queries.statuses_of([s.last_task_id or "" for s in schedules])
    rows = []
    for item in schedules:
        trigger = Trigger(every=item.every, cron=item.cron_expression, timezone=item.timezone)
        rows.append(
            ScheduleRow(
                name=item.name,
                group=item.task_group_name,
                function=item.function_name,
                dynamic=item.dynamic,
                trigger=_describe(trigger),
                timezone=item.timezone,
                enabled=item.enabled,
                next_fires=next_fires(trigger, item.next_run_at) if item.enabled else [],
                last_run_at=item.last_run_at,
                last_task_id=item.last_task_id,
                last_status=statuses.get(item.last_task_id or ""),
                description=item.description,
                every=item.every,
            )
        )
    return rows


def _describe(trigger: Trigger) -> str:
    if trigger.every is not None:
        return f"every {_seconds(trigger.every)}"
    return f"cron {trigger.cron}"


def _seconds(every: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if every >= size and every % size == 0:
            return f"{every / size:g} {unit}"
    return f"{every:g} s"


def next_fires(trigger: Trigger, first: datetime | None, count: int = NEXT_FIRES) -> list[datetime]:
    """``first`` and the fire times after it."""
    if first is None:
        return []
    fires = [first]
    while len(fires) < count:
        fires.append(trigger.next_after(fires[-1], fires[-1]))
    return fires


@dataclass(slots=True)
class GroupFunction:
    """A TaskGroup function that dynamic schedules can run, with its signature."""

    group: str
    name: str
    signature: str

    @property
    def key(self) -> str:
        """``"<group>.<function>"``."""
        return f"{self.group}.{self.name}"


def group_functions(manager: TaskManager) -> list[GroupFunction]:
    """Every function of every TaskGroup, for the create-schedule form."""
    found = []
    for group in manager.task_groups.values():
        for name, func in group.functions.items():
            found.append(GroupFunction(group=group.name, name=name, signature=signature_text(func)))
    return sorted(found, key=lambda item: item.key)


class _Shown:
    """An annotation written as text (``from __future__ import annotations``), shown as
    written instead of quoted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_text(func: Callable[..., Any]) -> str:
    """``"(team: str, weeks: int = 1) -> str"``: the signature as the source reads,
    annotations unquoted (they are never evaluated)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return "(...)"

    def shown(annotation: Any) -> Any:
        return _Shown(annotation) if isinstance(annotation, str) else annotation

    parameters = [
        parameter.replace(annotation=shown(parameter.annotation))
        for parameter in signature.parameters.values()
    ]
    plain = signature.replace(
        parameters=parameters, return_annotation=shown(signature.return_annotation)
    )
    return str(plain)


# -- functions -----------------------------------------------------------------------------


@dataclass(slots=True)
class FunctionRow:
    """A registered function, its settings and its recent success rate and durations."""

    config: TaskConfig
    sample: int
    success_rate: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    @property
    def backoff_text(self) -> str:
        """``"1 s × 2"`` (first delay and multiplier)."""
        text = f"{self.config.delay:g} s × {self.config.backoff:g}"
        if self.config.max_delay is not None:
            text += f" (max {self.config.max_delay:g} s)"
        return text


async def function_rows(manager: TaskManager, queries: DashboardStore) -> list[FunctionRow]:
    """Every registered function with statistics over its last runs."""
    rows = []
    for config in sorted(manager.registry, key=lambda item: item.name or ""):
        sample = await queries.recent_finished(
            statuses=("success", "failed", "interrupted", "cancelled"),
            limit=FUNCTION_SAMPLE,
            func_name=config.name,
        )
        rows.append(function_row(config, sample))
    return rows


def function_row(config: TaskConfig, sample: list[FinishedRun]) -> FunctionRow:
    """Statistics of one function from its recent finished runs."""
    succeeded = [run for run in sample if run.status == "success"]
    durations = sorted(
        seconds
        for run in succeeded
        if (seconds := seconds_between(run.started_at, run.finished_at)) is not None
    )
    return FunctionRow(
        config=config,
        sample=len(sample),
        success_rate=len(succeeded) / len(sample) if sample else None,
        p50=percentile(durations, 0.5),
        p95=percentile(durations, 0.95),
        p99=percentile(durations, 0.99),
    )


# -- instances -----------------------------------------------------------------------------

# Running tasks listed under each instance; the rest are a link to the Runs page.
RUNNING_SHOWN = 10


@dataclass(slots=True)
class InstanceRow:
    """A process running taskflow on this database."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    stale: bool
    info: dict[str, Any]
    owned_pending: int
    owned_running: int
    running: list[RunningTask]

    @property
    def more_running(self) -> int:
        """Running tasks of this instance beyond the ones listed."""
        return max(self.owned_running - len(self.running), 0)


@dataclass(slots=True)
class RunningTask:
    """A task an instance is running now, and for how many seconds it has run."""

    id: str
    func_name: str
    elapsed: float


async def instance_rows(
    queries: DashboardStore, *, stale_after: float, cap: int, running_shown: int = RUNNING_SHOWN
) -> list[InstanceRow]:
    """Every instance with its heartbeat age, the tasks it owns and the first
    ``running_shown`` tasks it is running (longest running first)."""
    now = utcnow()
    instances = await queries.instances()
    ids = [instance.id for instance in instances]
    owned = await queries.owned_counts(ids, cap=cap)
    running = await queries.running_tasks(ids, limit=running_shown)
    rows = []
    for instance in instances:
        age = (now - instance.heartbeat_at).total_seconds()
        rows.append(
            InstanceRow(
                id=instance.id,
                hostname=instance.hostname,
                pid=instance.pid,
                queues=list(instance.queues or []),
                started_at=instance.started_at,
                heartbeat_at=instance.heartbeat_at,
                heartbeat_age=max(age, 0.0),
                stale=age > stale_after,
                info=dict(instance.info or {}),
                owned_pending=owned.get((instance.id, "pending"), 0),
                owned_running=owned.get((instance.id, "running"), 0),
                running=[
                    RunningTask(
                        id=task.id,
                        func_name=task.func_name,
                        elapsed=seconds_between(task.started_at, now) or 0.0,
                    )
                    for task in running.get(instance.id, [])
                ],
            )
        )
    return rows
