"""The store in memory: :class:`MemoryStore`.

It is for tests, and for the contract check that runs the same store tests on SQLite,
PostgreSQL and this store. It is not durable, and only the process (and event loop)
holding it sees its data. It keeps every contract of
:class:`~taskflow._store.protocol.Store` and answers every call as the SQL store does:
the same records, the same orderings, the same refusals (a broken unique or foreign key
constraint raises :class:`~taskflow.errors.DatabaseError`, and a write that fails
changes nothing).

Tables are dicts of rows; a row is a dict of column values that is replaced, never
changed in place, so a write can be undone by restoring the tables' dicts. Values cross
the interface as copies: JSON columns are stored as their JSON round trip and every
record read is built from a deep copy, so no caller can change what is stored.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from taskflow._payloads.payloads import MEMORY_ONLY, MEMORY_ONLY_LOST
from taskflow._store.dependencies import RETRIED_STATUSES, SWEEP_BATCH, dependency_verdict
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import (
    AttemptRow,
    ClockReading,
    Dependency,
    DependencyLink,
    InstanceRow,
    Limit,
    LimitHold,
    LimitUsage,
    LogRow,
    NewLogLine,
    NewTask,
    NewWorkflow,
    Outcome,
    ProgressUpdate,
    QueuePause,
    RunTimes,
    ScheduleRow,
    TaskRow,
    WorkflowRow,
    attempt_history,
    repeats_start,
)
from taskflow._store.schema import FAILED_STATUSES, TERMINAL_STATUSES
from taskflow.errors import DatabaseError, NotStarted, TaskNotFound

if TYPE_CHECKING:
    from taskflow._store.protocol import KeyReader, Store

__all__ = ["MemoryStore"]

T = TypeVar("T")
Row = dict[str, Any]
R = TypeVar("R", TaskRow, LogRow, AttemptRow, ScheduleRow, InstanceRow, QueuePause)

DISPLAY_URL = "memory://"

# Timestamp and JSON columns of each table: converted to UTC, and copied, on the way in.
_TASK_TIMES = ("created_at", "started_at", "finished_at", "next_attempt_at", "schedule_slot")
_SCHEDULE_TIMES = ("next_run_at", "last_run_at", "created_at", "updated_at")
_INSTANCE_TIMES = ("started_at", "heartbeat_at")


@dataclass(slots=True)
class _Tables:
    """Every table, keyed by primary key, in insertion order."""

    tasks: dict[str, Row] = field(default_factory=dict)
    logs: dict[int, Row] = field(default_factory=dict)
    attempts: dict[tuple[str, int], Row] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias → task id
    schedules: dict[str, Row] = field(default_factory=dict)
    instances: dict[str, Row] = field(default_factory=dict)
    meta: dict[str, Row] = field(default_factory=dict)
    queue_pauses: dict[str, Row] = field(default_factory=dict)
    deps: dict[tuple[str, str], Row] = field(default_factory=dict)  # (task, dependency)
    workflows: dict[str, Row] = field(default_factory=dict)
    last_log_id: int = 0

    def snapshot(self) -> _Tables:
        """A copy of every table's dict (rows are shared: they are never changed)."""
        return _Tables(
            tasks=dict(self.tasks),
            logs=dict(self.logs),
            attempts=dict(self.attempts),
            aliases=dict(self.aliases),
            schedules=dict(self.schedules),
            instances=dict(self.instances),
            meta=dict(self.meta),
            queue_pauses=dict(self.queue_pauses),
            deps=dict(self.deps),
            workflows=dict(self.workflows),
            last_log_id=self.last_log_id,
        )


class MemoryStore:
    """Taskflow's :class:`~taskflow._store.protocol.Store` in memory (not durable, one
    process). Open it before use, like the SQL store; closing keeps the data, so the
    store may be opened again."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._open = False

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """Where the store is: ``memory://``."""
        return DISPLAY_URL

    async def open(self, *, auto_upgrade: bool) -> None:
        """Start serving (there is no schema to check or upgrade)."""
        self._open = True

    async def close(self) -> None:
        """Stop serving; later calls are refused until the store is opened again."""
        self._open = False

    async def listen(self, on_notify: Callable[[str], None]) -> None:
        """None: the memory store sends no notifications, callers poll (as on SQLite)."""
        return None

    def _require_open(self) -> _Tables:
        if not self._open:
            raise DatabaseError("the task store is closed")
        return self._tables

    @contextmanager
    def _write(self) -> Iterator[_Tables]:
        """The tables, for one write: all of its changes stay, or (on an error) none."""
        tables = self._require_open()
        before = tables.snapshot()
        try:
            yield tables
        except BaseException:
            self._tables = before
            raise

    def _committed(self, write: Callable[[], T]) -> asyncio.Future[T]:
        """Apply a group-committed write now; its future, resolved on the calling loop.
        A failure resolves the future with a :class:`DatabaseError`, as group commit
        does."""
        if not self._open:
            raise NotStarted("the task store is not open; start the TaskManager first")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(write())
        except DatabaseError as exc:
            future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, like group commit
            wrapped = DatabaseError(f"could not write to the task database: {exc}")
            wrapped.__cause__ = exc
            future.set_exception(wrapped)
        return future

    # -- tasks: group-committed writes ------------------------------------------------

    def insert_task(self, task: NewTask) -> asyncio.Future[str]:
        """Queue a new task; resolves to the id stored (the key holder's on a clash)."""
        return self._committed(lambda: self._insert_now(task))

    def start_task(
        self, task_id: str, *, instance: str, now: datetime
    ) -> asyncio.Future[int | None]:
        """pending → running; resolves to the attempt number, or None if not pending."""
        return self._committed(lambda: self._start(task_id, instance, now))

    def finish_task(self, outcome: Outcome) -> asyncio.Future[None]:
        """End an attempt (applied to the task only while its owner still runs it)."""
        return self._committed(lambda: self._finish(outcome))

    def append_log(self, line: NewLogLine) -> asyncio.Future[None]:
        """Store one log line."""
        return self._committed(lambda: self._log(line))

    def set_progress(self, update: ProgressUpdate) -> asyncio.Future[None]:
        """Store a task's latest progress report (a task that is gone: nothing)."""
        return self._committed(lambda: self._progress(update))

    def _insert_now(self, task: NewTask) -> str:
        with self._write() as tables:
            return _insert(tables, task)

    def _start(self, task_id: str, instance: str, now: datetime) -> int | None:
        with self._write() as tables:
            row = tables.tasks.get(task_id)
            started = _utc(now)
            if row is not None and _started_by(row, instance, started):
                return int(row["attempts"])  # a repeated start (its reply was lost)
            if row is None or row["status"] != "pending":
                return None
            attempt: int = row["attempts"] + 1
            _set(
                tables.tasks,
                task_id,
                status="running",
                owner=instance,
                started_at=started,
                finished_at=None,
                attempts=attempt,
            )
            return attempt

    def _finish(self, outcome: Outcome) -> None:
        finished = _utc(outcome.finished_at)
        retry = outcome.status == "pending"
        with self._write() as tables:
            row = tables.tasks.get(outcome.id)
            if row is None or row["status"] != "running" or row["owner"] != outcome.owner:
                return  # a late report from a settled instance changes nothing
            if retry:  # the task row will describe the next attempt: keep this one
                _end_attempt(tables, row, "failed", finished, outcome.error, outcome.traceback)
            _set(
                tables.tasks,
                outcome.id,
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                traceback=outcome.traceback,
                finished_at=None if retry else finished,
                next_attempt_at=_utc(outcome.next_attempt_at or finished),
            )

    def _progress(self, update: ProgressUpdate) -> None:
        with self._write() as tables:
            if update.task_id in tables.tasks:
                _set(tables.tasks, update.task_id, progress=update.report)

    def _log(self, line: NewLogLine) -> None:
        with self._write() as tables:
            _referenced(tables, line.task_id, "taskflow_task_logs")
            tables.last_log_id += 1
            tables.logs[tables.last_log_id] = {
                "id": tables.last_log_id,
                "task_id": line.task_id,
                "at": _utc(line.at),
                "level": line.level,
                "message": line.message,
                "extra": _json(line.extra),
            }

    # -- tasks: reads -------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRow | None:
        """The task with this id, in either shape (or the task it is an alias of)."""
        tables = self._require_open()
        forms = task_id_forms(task_id)
        row = _first_task(tables, forms)
        if row is None:
            target = next((tables.aliases[f] for f in forms if f in tables.aliases), None)
            row = None if target is None else tables.tasks.get(target)
        return None if row is None else _record(TaskRow, row)

    async def get_logs(self, task_id: str, *, limit: int = 1000) -> list[LogRow]:
        """The first ``limit`` log lines of a task, oldest first."""
        tables = self._require_open()
        lines = [row for row in tables.logs.values() if row["task_id"] == task_id]
        return [_record(LogRow, row) for row in lines[: max(limit, 0)]]

    async def get_attempts(self, task_id: str) -> list[AttemptRow]:
        """Every attempt of a task, first first (see :func:`attempt_history`)."""
        tables = self._require_open()
        task = tables.tasks.get(task_id)
        if task is None:
            return []
        rows = [row for (owner, _), row in tables.attempts.items() if owner == task_id]
        ended = [_record(AttemptRow, row) for row in rows]
        return attempt_history(_record(TaskRow, task), ended)

    async def find_live_by_key(self, key: str) -> str | None:
        """Id of the live task holding an idempotency key."""
        return _key_holder(self._require_open(), key)

    def key_reader(self) -> KeyReader | None:
        """The lookup of :meth:`find_live_by_key`, blocking (it never waits)."""
        return lambda key: _key_holder(self._require_open(), key)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        func_name: str | None = None,
        limit: int | None = 100,
        created_since: datetime | None = None,
    ) -> list[TaskRow]:
        """Newest tasks first (ties by id), filtered (``limit`` None: all)."""
        tables = self._require_open()
        since = None if created_since is None else _utc(created_since)
        rows = [
            row
            for row in tables.tasks.values()
            if (status is None or row["status"] == status)
            and (func_name is None or row["func_name"] == func_name)
            and (since is None or row["created_at"] >= since)
        ]
        rows.sort(key=lambda r: r["id"])
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return [_record(TaskRow, row) for row in _limited(rows, limit)]

    async def count_by_status(self) -> dict[str, int]:
        """Number of tasks in each status."""
        counts: dict[str, int] = {}
        for row in self._require_open().tasks.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    async def count_waiting(self, queue: str, *, now: datetime) -> int:
        """Pending tasks of ``queue`` due by ``now``."""
        due = _utc(now)
        return sum(
            1
            for row in self._require_open().tasks.values()
            if row["status"] == "pending"
            and row["queue"] == queue
            and row["next_attempt_at"] <= due
        )

    async def queue_counts(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """Tasks in each status, per queue."""
        counts: dict[str, dict[str, int]] = {name: {} for name in queues}
        for row in self._require_open().tasks.values():
            per_status = counts.get(row["queue"])
            if per_status is not None:
                per_status[row["status"]] = per_status.get(row["status"], 0) + 1
        return counts

    async def owned_since(self, *, owner: str, before: datetime) -> list[str]:
        """Ids of tasks ``owner`` holds that were due or started before ``before``."""
        limit = _utc(before)
        return [
            row["id"]
            for row in self._require_open().tasks.values()
            if row["owner"] == owner
            and (
                (row["status"] == "pending" and row["next_attempt_at"] < limit)
                or (
                    row["status"] == "running"
                    and row["started_at"] is not None
                    and row["started_at"] < limit
                )
            )
        ]

    async def cancel_requests(self, *, owner: str) -> list[str]:
        """Ids of running tasks of ``owner`` whose cancellation was requested."""
        return [
            row["id"]
            for row in self._require_open().tasks.values()
            if row["owner"] == owner and row["status"] == "running" and row["cancel_requested"]
        ]

    # -- tasks: direct writes ----------------------------------------------------------

    async def insert_task_now(self, task: NewTask) -> str:
        """Insert one task now; the id stored."""
        return self._insert_now(task)

    async def insert_unique_task(
        self, task: NewTask, *, window: timedelta, states: Sequence[str]
    ) -> str:
        """Insert ``task`` unless a task with its ``unique_key`` created in the window is
        in one of ``states``; the id stored, or that task's id (a ``promised`` id then
        becomes an alias of it)."""
        assert task.unique_key is not None
        with self._write() as tables:
            since = _utc(task.created_at) - window
            holder = _unique_holder(tables, task.unique_key, since=since, states=states)
            if holder is None:
                return _insert(tables, task)
            if task.promised:
                _unique(tables.aliases, task.id, "taskflow_task_aliases")
                tables.aliases[task.id] = holder
            return holder

    async def find_unique_task(
        self, unique_key: str, *, since: datetime, states: Sequence[str]
    ) -> str | None:
        """Id of a task with ``unique_key`` created at or after ``since`` whose status
        is one of ``states``, or None."""
        tables = self._require_open()
        return _unique_holder(tables, unique_key, since=_utc(since), states=states)

    async def start_limited(
        self, task_id: str, *, instance: str, limit: Limit, now: datetime
    ) -> int | LimitHold | None:
        """pending → running if ``limit`` allows one more start now: the attempt number;
        why not (the task stays pending); or None if the task is not pending."""
        tables = self._require_open()
        row = tables.tasks.get(task_id)
        moment = _utc(now)
        if row is not None and _started_by(row, instance, moment):
            return int(row["attempts"])  # a repeated start (its reply was lost)
        if row is None or row["status"] != "pending":
            return None
        if limit.concurrency is not None:
            running = _limit_running(tables, limit.key)
            if running >= limit.concurrency:
                return LimitHold(reason="concurrency", count=running)
        if limit.rate is not None and limit.period is not None:
            period = timedelta(seconds=limit.period)
            starts = _limit_starts(tables, limit.key, since=moment - period)
            if len(starts) >= limit.rate:
                return LimitHold(reason="rate", count=len(starts), retry_at=starts[0] + period)
        return self._start(task_id, instance, now)

    async def limit_usage(self, limit_key: str, *, since: datetime | None) -> LimitUsage:
        """Tasks with ``limit_key`` running and (``since`` given) their starts since."""
        tables = self._require_open()
        running = _limit_running(tables, limit_key)
        starts = [] if since is None else _limit_starts(tables, limit_key, since=_utc(since))
        return LimitUsage(
            running=running, starts=len(starts), oldest_start=min(starts, default=None)
        )

    async def cancel_task(
        self, task_id: str, *, now: datetime, reason: str | None = None
    ) -> str | None:
        """Cancel a pending task, or flag a running one; the status it had."""
        with self._write() as tables:
            row = _first_task(tables, task_id_forms(task_id))
            if row is None:
                return None
            status: str = row["status"]
            if status in ("pending", "blocked"):
                _set(
                    tables.tasks,
                    row["id"],
                    status="cancelled",
                    finished_at=_utc(now),
                    error=reason or "cancelled before start",
                )
            elif status == "running":
                _set(tables.tasks, row["id"], cancel_requested=True)
            return status

    async def claim_tasks(
        self, *, instance: str, queues: Sequence[str], limit: int, now: datetime
    ) -> list[TaskRow]:
        """Take ownership of up to ``limit`` due, unowned pending tasks: best priority
        first, then earliest due."""
        due = _utc(now)
        with self._write() as tables:
            candidates = [
                row
                for row in tables.tasks.values()
                if row["status"] == "pending"
                and row["owner"] is None
                and row["queue"] in queues
                and row["next_attempt_at"] <= due
            ]
            candidates.sort(key=lambda r: (-r["priority"], r["next_attempt_at"]))
            claimed = [
                _set(tables.tasks, row["id"], owner=instance) for row in _limited(candidates, limit)
            ]
            return [_record(TaskRow, row) for row in claimed]

    async def copy_task(self, task_id: str, *, task: NewTask) -> str | None:
        """Insert ``task`` unless ``task_id`` is gone; the id stored, or None."""
        with self._write() as tables:
            source = _first_task(tables, task_id_forms(task_id))
            if source is None:
                return None
            stored = _insert(tables, task)
            if stored == task.id:
                _set(tables.tasks, stored, retry_of=source["id"])
                resolved = _utc(task.created_at)
                _set(tables.tasks, source["id"], resolution="retried", resolved_at=resolved)
            return stored

    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished task with its logs and attempts."""
        with self._write() as tables:
            ids = [
                form
                for form in task_id_forms(task_id)
                if form in tables.tasks and tables.tasks[form]["status"] in TERMINAL_STATUSES
            ]
            _delete_tasks(tables, ids)
            return len(ids) == 1

    async def prune_finished(self, *, before: datetime, batch_size: int = 500) -> int:
        """Delete up to ``batch_size`` final tasks that finished before ``before``."""
        limit = _utc(before)
        with self._write() as tables:
            ids = [
                row["id"]
                for row in tables.tasks.values()
                if row["status"] in TERMINAL_STATUSES
                and row["finished_at"] is not None
                and row["finished_at"] < limit
            ]
            ids = _limited(ids, batch_size)
            _delete_tasks(tables, ids)
            return len(ids)

    # -- one-off firings ---------------------------------------------------------------

    async def replace_once(self, task: NewTask, *, now: datetime) -> str:
        """Store the firing of ``task.run_key``, replacing the pending one."""
        assert task.run_key is not None
        with self._write() as tables:
            _delete_tasks(tables, _pending_once_ids(tables, task.run_key))
            return _insert(tables, task)

    async def cancel_once(self, run_key: str) -> bool:
        """Delete the pending firing of ``run_key``."""
        with self._write() as tables:
            ids = _pending_once_ids(tables, run_key)
            _delete_tasks(tables, ids)
            return bool(ids)

    async def pending_once(self, *, before: datetime | None = None) -> list[TaskRow]:
        """Pending firings due at or before ``before`` (every one when None), soonest
        first."""
        limit = None if before is None else _utc(before)
        rows = [
            row
            for row in self._require_open().tasks.values()
            if _is_pending_once(row) and (limit is None or row["next_attempt_at"] <= limit)
        ]
        rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
        return [_record(TaskRow, row) for row in rows]

    # -- schedules ---------------------------------------------------------------------

    async def upsert_static_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        """Create a schedule declared in code, or refresh the stored one: it keeps its
        ``next_run_at`` unless the trigger changed, and its ``enabled``."""
        with self._write() as tables:
            existing = _schedule_named(tables, schedule.name)
            if existing is None:
                _add_schedule(tables, schedule)
                return _record(ScheduleRow, tables.schedules[schedule.id])
            row = _set(tables.schedules, existing["id"], **_refreshed(existing, schedule))
            return _record(ScheduleRow, row)

    async def create_schedule(self, schedule: ScheduleRow) -> bool:
        """Insert a schedule; False when its name is taken."""
        with self._write() as tables:
            if _schedule_named(tables, schedule.name) is not None:
                return False
            _add_schedule(tables, schedule)
            return True

    async def delete_schedule(self, name: str) -> ScheduleRow | None:
        """Delete a dynamic schedule; the schedule as it was (static: kept)."""
        with self._write() as tables:
            row = _schedule_named(tables, name)
            if row is None:
                return None
            if row["kind"] == "dynamic":
                del tables.schedules[row["id"]]
            return _record(ScheduleRow, row)

    async def set_schedule_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime | None, now: datetime
    ) -> bool:
        """Pause or resume a schedule (resuming sets a fresh ``next_run_at``)."""
        changes: dict[str, object] = {"enabled": enabled, "updated_at": _utc(now)}
        if next_run_at is not None:
            changes["next_run_at"] = _utc(next_run_at)
        with self._write() as tables:
            row = _schedule_named(tables, name)
            if row is None:
                return False
            _set(tables.schedules, row["id"], **changes)
            return True

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``."""
        row = _schedule_named(self._require_open(), name)
        return None if row is None else _record(ScheduleRow, row)

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        rows = sorted(self._require_open().schedules.values(), key=lambda r: r["name"])
        return [_record(ScheduleRow, row) for row in rows]

    async def due_schedules(self, *, now: datetime, limit: int = 100) -> list[ScheduleRow]:
        """Enabled schedules whose next run is due, earliest first."""
        due = _utc(now)
        rows = [
            row
            for row in self._require_open().schedules.values()
            if row["enabled"] and row["next_run_at"] is not None and row["next_run_at"] <= due
        ]
        rows.sort(key=lambda r: r["next_run_at"])
        return [_record(ScheduleRow, row) for row in _limited(rows, limit)]

    async def next_schedule_due(self) -> datetime | None:
        """The earliest next run of any enabled schedule."""
        times = [
            row["next_run_at"]
            for row in self._require_open().schedules.values()
            if row["enabled"] and row["next_run_at"] is not None
        ]
        return min(times, default=None)

    async def fire_schedule(
        self,
        *,
        schedule_id: str,
        slot: datetime,
        next_run_at: datetime,
        now: datetime,
        task: NewTask | None,
        skip_if_active: bool = False,
    ) -> tuple[bool, bool]:
        """Advance a schedule from ``slot`` (only while its next run is ``slot``) and
        insert the slot's task, atomically; ``(advanced, inserted)``."""
        at = _utc(now)
        with self._write() as tables:
            row = tables.schedules.get(schedule_id)
            if row is None or row["next_run_at"] != _utc(slot):
                return False, False
            _set(tables.schedules, schedule_id, next_run_at=_utc(next_run_at), updated_at=at)
            if task is None or (skip_if_active and _has_active_run(tables, schedule_id)):
                return True, False
            _add_task(tables, task)
            _set(tables.schedules, schedule_id, last_run_at=at, last_task_id=task.id)
            return True, True

    async def running_schedule_ids(self) -> set[str]:
        """Ids of the schedules with a run in status ``running``."""
        return {
            row["schedule_id"]
            for row in self._require_open().tasks.values()
            if row["schedule_id"] is not None and row["status"] == "running"
        }

    async def schedule_runs(self, schedule_id: str, *, limit: int) -> list[RunTimes]:
        """Times of the newest ``limit`` finished runs of a schedule, oldest first."""
        rows = [
            row
            for row in self._require_open().tasks.values()
            if row["schedule_id"] == schedule_id
            and row["status"] in TERMINAL_STATUSES
            and row["started_at"] is not None
            and row["finished_at"] is not None
        ]
        rows.sort(key=lambda r: r["id"])
        rows.sort(key=lambda r: r["finished_at"], reverse=True)
        newest_first = [
            RunTimes(started_at=row["started_at"], finished_at=row["finished_at"])
            for row in _limited(rows, limit)
        ]
        return newest_first[::-1]

    async def clear_schedule_runs(self, schedule_id: str) -> int:
        """Delete the finished runs of a schedule (with their logs and attempts)."""
        with self._write() as tables:
            ids = [
                row["id"]
                for row in tables.tasks.values()
                if row["schedule_id"] == schedule_id and row["status"] in TERMINAL_STATUSES
            ]
            _delete_tasks(tables, ids)
            return len(ids)

    # -- instances ---------------------------------------------------------------------

    async def register_instance(self, instance: InstanceRow) -> None:
        """Insert this process's instance row."""
        with self._write() as tables:
            _unique(tables.instances, instance.id, "taskflow_instances")
            tables.instances[instance.id] = _stored(
                instance.columns(), times=_INSTANCE_TIMES, json_columns=("queues", "info")
            )

    async def heartbeat(self, instance: str, *, now: datetime, info: Mapping[str, object]) -> bool:
        """Refresh a heartbeat; False if the instance row is gone (it was rescued)."""
        with self._write() as tables:
            if instance not in tables.instances:
                return False
            _set(tables.instances, instance, heartbeat_at=_utc(now), info=_json(dict(info)))
            return True

    async def read_clock(self) -> ClockReading | None:
        """None: the store is in this process, on this host's clock."""
        return None

    async def list_instances(self) -> list[InstanceRow]:
        """Every registered instance, newest heartbeat first."""
        rows = sorted(
            self._require_open().instances.values(), key=lambda r: r["heartbeat_at"], reverse=True
        )
        return [_record(InstanceRow, row) for row in rows]

    async def dead_instances(
        self, *, me: str, stale_before: datetime, hostname: str, dead_pids: Sequence[int]
    ) -> list[str]:
        """Instances with a stale heartbeat, or a dead pid on this host."""
        stale = _utc(stale_before)
        return [
            row["id"]
            for row in self._require_open().instances.values()
            if row["id"] != me
            and (
                row["heartbeat_at"] < stale
                or (row["hostname"] == hostname and row["pid"] in dead_pids)
            )
        ]

    async def host_pids(self, *, hostname: str, me: str) -> dict[str, int]:
        """Other instances of this host, by id, with their pids."""
        return {
            row["id"]: row["pid"]
            for row in self._require_open().instances.values()
            if row["hostname"] == hostname and row["id"] != me
        }

    async def settle_instance(
        self,
        instance: str,
        *,
        now: datetime,
        reason: str,
        remove: bool = True,
        only: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Settle the tasks of a stopped instance: memory-only ones are lost (ended
        ``interrupted``), running ones end ``interrupted`` or (``requeue_on_interrupt``)
        go back to pending, pending ones are released. ``only`` limits this to some task
        ids and keeps the instance row. Counts by outcome."""
        at = _utc(now)
        if only is not None:
            remove = False
        with self._write() as tables:
            settle = _Settling(tables, instance, only, at)
            lost = settle.lose_memory_only(f"{reason}; {MEMORY_ONLY_LOST}")
            interrupted = settle.running(requeue=False, reason=reason)
            requeued = settle.running(requeue=True, reason=reason)
            released = settle.release()
            if remove:
                tables.instances.pop(instance, None)
        return {
            "interrupted": interrupted,
            "requeued": requeued,
            "released": released,
            "lost": lost,
        }

    # -- meta --------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A stored value, or None."""
        row = self._require_open().meta.get(key)
        return None if row is None else str(row["value"])

    async def set_meta(self, key: str, value: str, *, now: datetime) -> None:
        """Insert or replace a value."""
        with self._write() as tables:
            tables.meta[key] = {"key": key, "value": value, "updated_at": _utc(now)}

    # -- paused queues -------------------------------------------------------------------

    async def pause_queue(self, queue: str, *, by: str, now: datetime) -> QueuePause:
        """Pause ``queue`` (a paused queue keeps who paused it and when)."""
        with self._write() as tables:
            row = tables.queue_pauses.setdefault(
                queue, {"queue": queue, "paused_at": _utc(now), "paused_by": by}
            )
        return _record(QueuePause, row)

    async def resume_queue(self, queue: str) -> bool:
        """Resume ``queue``; False when it was not paused."""
        with self._write() as tables:
            return tables.queue_pauses.pop(queue, None) is not None

    async def paused_queues(self) -> list[QueuePause]:
        """Every paused queue, by name."""
        rows = self._require_open().queue_pauses
        return [_record(QueuePause, rows[name]) for name in sorted(rows)]

    # -- dependencies and workflows ------------------------------------------------------

    async def insert_dependent(
        self,
        new: Sequence[NewTask],
        edges: Sequence[Dependency],
        *,
        workflow: NewWorkflow | None,
        instance: str,
        queues: Sequence[str],
        now: datetime,
        retried: Mapping[str, str] | None = None,
    ) -> list[TaskRow]:
        """Insert tasks, their dependencies and their workflow at once, then release the
        blocked ones whose dependencies have ended; the released tasks owned by
        ``instance``. ``retried``: copy → original, linked and resolved as a retry.
        Raises TaskNotFound (writing nothing) for an unknown dependency."""
        with self._write() as tables:
            inside = {task.id for task in new}
            resolved: list[Dependency] = []
            for edge in edges:
                target = edge.depends_on
                if target not in inside:
                    row = _first_task(tables, task_id_forms(target))
                    if row is None:
                        raise TaskNotFound(f"depends_on names no stored task: {target}")
                    target = row["id"]
                resolved.append(Dependency(edge.task_id, target, edge.position))
            if workflow is not None:
                _unique(tables.workflows, workflow.id, "taskflow_workflows")
                tables.workflows[workflow.id] = {
                    "id": workflow.id,
                    "name": workflow.name,
                    "kind": workflow.kind,
                    "created_at": _utc(workflow.created_at),
                }
            for task in new:
                _add_task(tables, task)
            for edge in resolved:
                key = (edge.task_id, edge.depends_on)
                _unique(tables.deps, key, "taskflow_task_deps")
                tables.deps[key] = {
                    "task_id": edge.task_id,
                    "depends_on": edge.depends_on,
                    "position": edge.position,
                }
            for copy, original in (retried or {}).items():
                _set(tables.tasks, copy, retry_of=original)
                row = tables.tasks.get(original)
                if row and not row.get("resolution") and row["status"] in RETRIED_STATUSES:
                    _set(tables.tasks, original, resolution="retried", resolved_at=_utc(now))
            blocked = [task.id for task in new if task.blocked]
            return _release(tables, blocked, instance=instance, queues=queues, now=_utc(now))

    async def release_dependents(
        self,
        ended: Sequence[str] | None,
        *,
        instance: str,
        queues: Sequence[str],
        now: datetime,
    ) -> list[TaskRow]:
        """Release the blocked dependents of ``ended`` (None: any blocked task whose
        dependencies have ended); the released tasks owned by ``instance``."""
        with self._write() as tables:
            if ended is None:
                candidates = [
                    row["id"]
                    for row in sorted(tables.tasks.values(), key=lambda row: row["created_at"])
                    if row["status"] == "blocked"
                    and _dependency_verdict(tables, row["id"]) is not None
                ][:SWEEP_BATCH]
            else:
                forms = [form for task_id in ended for form in task_id_forms(task_id)]
                candidates = _blocked_dependents(tables, forms)
            return _release(tables, candidates, instance=instance, queues=queues, now=_utc(now))

    async def dependency_results(self, task_id: str) -> list[tuple[str, str | None, bool]]:
        """Id, stored result and encryption of each dependency, in order."""
        tables = self._require_open()
        found: list[tuple[str, str | None, bool]] = []
        for row in _edges_of(tables, task_id_forms(task_id)):
            dep = tables.tasks.get(row["depends_on"])
            if dep is None:
                found.append((row["depends_on"], None, False))
            else:
                found.append((dep["id"], dep["result"], bool(dep["encrypted"])))
        return found

    async def dependency_links(
        self, task_id: str
    ) -> tuple[list[DependencyLink], list[DependencyLink]]:
        """What a task waits for, and what waits for it."""
        tables = self._require_open()
        forms = set(task_id_forms(task_id))
        upstream = []
        for row in _edges_of(tables, forms):
            dep = tables.tasks.get(row["depends_on"])
            upstream.append(
                DependencyLink(
                    id=row["depends_on"],
                    func_name=dep["func_name"] if dep else None,
                    status=dep["status"] if dep else None,
                    position=row["position"],
                )
            )
        down = [
            (tables.tasks[row["task_id"]], row["position"])
            for row in tables.deps.values()
            if row["depends_on"] in forms
        ]
        down.sort(key=lambda pair: (pair[0]["created_at"], pair[0]["id"]))
        downstream = [
            DependencyLink(
                id=task["id"], func_name=task["func_name"], status=task["status"], position=position
            )
            for task, position in down
        ]
        return upstream, downstream

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """A workflow with its task counts by status."""
        tables = self._require_open()
        row = tables.workflows.get(workflow_id)
        return None if row is None else _workflow(tables, row)

    async def list_workflows(
        self, *, limit: int = 50, before: datetime | None = None
    ) -> list[WorkflowRow]:
        """Workflows, newest first."""
        tables = self._require_open()
        rows = sorted(tables.workflows.values(), key=lambda row: row["created_at"], reverse=True)
        if before is not None:
            rows = [row for row in rows if row["created_at"] < _utc(before)]
        return [_workflow(tables, row) for row in rows[:limit]]

    async def workflow_edges(self, workflow_id: str) -> list[Dependency]:
        """The dependencies of a workflow's tasks."""
        tables = self._require_open()
        edges = [
            Dependency(row["task_id"], row["depends_on"], row["position"])
            for row in tables.deps.values()
            if tables.tasks[row["task_id"]]["workflow_id"] == workflow_id
        ]
        return sorted(edges, key=lambda edge: (edge.task_id, edge.position))

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRow]:
        """A workflow's tasks, oldest first."""
        tables = self._require_open()
        rows = [row for row in tables.tasks.values() if row["workflow_id"] == workflow_id]
        rows.sort(key=lambda row: (row["created_at"], row["id"]))
        return [_record(TaskRow, row) for row in rows]


class _Settling:
    """The steps of :meth:`MemoryStore.settle_instance`, in the SQL store's order."""

    def __init__(
        self, tables: _Tables, instance: str, only: Sequence[str] | None, now: datetime
    ) -> None:
        self.tables = tables
        self.instance = instance
        self.only = None if only is None else set(only)
        self.now = now

    def _mine(self, status: str) -> list[Row]:
        return [
            row
            for row in self.tables.tasks.values()
            if row["owner"] == self.instance
            and row["status"] == status
            and (self.only is None or row["id"] in self.only)
        ]

    def lose_memory_only(self, why: str) -> int:
        """End the memory-only tasks, running or pending: nothing stored can run them."""
        ended = 0
        for status in ("running", "pending"):
            for row in self._mine(status):
                if not row["payload"].startswith(MEMORY_ONLY):
                    continue
                self._interrupt(row, why)
                if status == "running":
                    self._interrupt_attempt(row, why)
                ended += 1
        return ended

    def running(self, *, requeue: bool, reason: str) -> int:
        """End (or, with ``requeue``, requeue) the running tasks; how many."""
        rows = [row for row in self._mine("running") if row["requeue_on_interrupt"] == requeue]
        for row in rows:
            if requeue:
                changes = {"status": "pending", "next_attempt_at": self.now, "error": reason}
                _set(self.tables.tasks, row["id"], owner=None, **changes)
            else:
                self._interrupt(row, reason)
            self._interrupt_attempt(row, reason)
        return len(rows)

    def release(self) -> int:
        """Give up the pending tasks (claimable again); how many."""
        rows = self._mine("pending")
        for row in rows:
            _set(self.tables.tasks, row["id"], owner=None)
        return len(rows)

    def _interrupt(self, row: Row, why: str) -> None:
        _set(
            self.tables.tasks,
            row["id"],
            status="interrupted",
            finished_at=self.now,
            error=why,
            owner=None,
        )

    def _interrupt_attempt(self, row: Row, why: str) -> None:
        """Record the running attempt of ``row`` as interrupted on the settled instance."""
        ended = {**row, "owner": self.instance}
        _end_attempt(self.tables, ended, "interrupted", self.now, why, None)


# -- rows --------------------------------------------------------------------------------


def _end_attempt(
    tables: _Tables,
    task: Row,
    status: str,
    finished: datetime,
    error: str | None,
    traceback: str | None,
) -> None:
    """Store the attempt ``task`` is running as ended (an attempt row written by an
    earlier version keeps who ran it and when it started)."""
    key = (task["id"], task["attempts"])
    stored = tables.attempts.get(key)
    tables.attempts[key] = {
        "task_id": task["id"],
        "attempt": task["attempts"],
        "instance": task["owner"] if stored is None else stored["instance"],
        "started_at": task["started_at"] if stored is None else stored["started_at"],
        "finished_at": finished,
        "status": status,
        "error": error,
        "traceback": traceback,
    }


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive timestamp is refused, as the SQL store refuses it."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DatabaseError(
            f"database error on {DISPLAY_URL}: ValueError: taskflow timestamps must be "
            "timezone-aware"
        )
    return moment.astimezone(UTC)


def _json(value: T) -> T:
    """``value`` as a JSON column gives it back: a copy, with JSON's types."""
    result: T = json.loads(json.dumps(value))
    return result


def _stored(
    columns: Mapping[str, object], *, times: Iterable[str], json_columns: Iterable[str]
) -> Row:
    """A row to store: timestamps in UTC, JSON values copied through JSON."""
    row: Row = dict(columns)
    for name in times:
        moment = row[name]
        row[name] = None if moment is None else _utc(moment)
    for name in json_columns:
        row[name] = _json(row[name])
    return row


def _record(kind: type[R], row: Row) -> R:
    """The record of a stored row, on a copy of its values."""
    return kind.of(copy.deepcopy(row))


def _set(table: dict[Any, Row], key: object, **changes: object) -> Row:
    """Replace a row by a copy with ``changes``; the new row."""
    row = table[key] = {**table[key], **changes}
    return row


def _limited(rows: list[T], limit: int | None) -> list[T]:
    return rows if limit is None else rows[: max(limit, 0)]


def _unique(table: Mapping[Any, object], key: object, name: str) -> None:
    if key in table:
        raise DatabaseError(
            f"database error on {DISPLAY_URL}: IntegrityError: duplicate key {key!r} in {name}"
        )


def _referenced(tables: _Tables, task_id: str, name: str) -> None:
    if task_id not in tables.tasks:
        raise DatabaseError(
            f"database error on {DISPLAY_URL}: IntegrityError: {name} refers to no task {task_id!r}"
        )


# -- tasks -------------------------------------------------------------------------------


def _is_live(row: Row) -> bool:
    return row["status"] not in FAILED_STATUSES


def _is_pending_once(row: Row) -> bool:
    """The predicate of :data:`~taskflow._store.schema.ONCE_PENDING_WHERE`."""
    return (
        row["run_key"] is not None
        and row["status"] == "pending"
        and row["attempts"] == 0
        and row["source"] == "scheduled"
    )


def _first_task(tables: _Tables, forms: Iterable[str]) -> Row | None:
    return next((tables.tasks[form] for form in forms if form in tables.tasks), None)


def _unique_holder(
    tables: _Tables, key: str, *, since: datetime, states: Sequence[str]
) -> str | None:
    """The earliest task with ``unique_key`` ``key`` created at or after ``since`` and
    in one of ``states``."""
    found = [
        row
        for row in tables.tasks.values()
        if row["unique_key"] == key and row["created_at"] >= since and row["status"] in states
    ]
    return min(found, key=lambda row: row["created_at"])["id"] if found else None


def _key_holder(tables: _Tables, key: str) -> str | None:
    return next(
        (
            row["id"]
            for row in tables.tasks.values()
            if row["idempotency_key"] == key and _is_live(row)
        ),
        None,
    )


def _limit_running(tables: _Tables, key: str) -> int:
    rows = tables.tasks.values()
    return sum(1 for row in rows if row.get("limit_key") == key and row["status"] == "running")


def _limit_starts(tables: _Tables, key: str, *, since: datetime) -> list[datetime]:
    """The starts of ``key``'s tasks at or after ``since``, oldest first: each task's
    latest start and its earlier attempts (a retry counts as a new start)."""
    starts: list[datetime] = []
    for row in tables.tasks.values():
        latest = row["started_at"]
        if row.get("limit_key") != key or latest is None or latest < since:
            continue
        starts.append(latest)
        for attempt in range(1, row["attempts"] + 1):
            earlier = tables.attempts.get((row["id"], attempt))
            if earlier is not None and since <= earlier["started_at"] < latest:
                starts.append(earlier["started_at"])
    return sorted(starts)


def _insert(tables: _Tables, task: NewTask) -> str:
    """Insert ``task``; with an idempotency key a live task holds, nothing is inserted
    and the holder's id is returned (a ``promised`` id becomes an alias of it)."""
    if task.idempotency_key is not None:
        holder = _key_holder(tables, task.idempotency_key)
        if holder is not None:
            if task.promised:
                _unique(tables.aliases, task.id, "taskflow_task_aliases")
                tables.aliases[task.id] = holder
            return holder
    _add_task(tables, task)
    return task.id


def _add_task(tables: _Tables, task: NewTask) -> None:
    """Insert ``task`` as given; a broken unique index raises."""
    columns = {
        **task.columns(),
        "result": None,
        "traceback": None,
        "started_at": None,
        "progress": None,
        "resolution": None,
    }
    row = _stored(columns, times=_TASK_TIMES, json_columns=("tags",))
    _unique(tables.tasks, row["id"], "taskflow_tasks")
    for other in tables.tasks.values():
        index = _clash(row, other)
        if index is not None:
            raise DatabaseError(
                f"database error on {DISPLAY_URL}: IntegrityError: {index} violated by "
                f"task {row['id']!r}"
            )
    tables.tasks[row["id"]] = row


def _clash(row: Row, other: Row) -> str | None:
    """The partial unique index of the tasks table that ``row`` and ``other`` would
    both hold the same entry of, if any."""
    key = row["idempotency_key"]
    if key is not None and key == other["idempotency_key"] and _is_live(row) and _is_live(other):
        return "uq_taskflow_tasks_idempotency"
    slot = _scheduled_slot(row)
    if slot is not None and slot == _scheduled_slot(other):
        return "uq_taskflow_tasks_schedule_slot"
    if _is_pending_once(row) and _is_pending_once(other) and row["run_key"] == other["run_key"]:
        return "uq_taskflow_tasks_run_key"
    return None


def _scheduled_slot(row: Row) -> tuple[str, datetime] | None:
    """A scheduled run's entry in the (schedule, slot) index; None has no entry (NULLs
    are distinct in a unique index)."""
    if row["schedule_id"] is None or row["source"] != "scheduled" or row["schedule_slot"] is None:
        return None
    return row["schedule_id"], row["schedule_slot"]


def _delete_tasks(tables: _Tables, ids: Iterable[str]) -> None:
    """Delete tasks with their log lines, attempts and aliases."""
    gone = set(ids)
    if not gone:
        return
    for task_id in gone:
        del tables.tasks[task_id]
    tables.logs = {key: row for key, row in tables.logs.items() if row["task_id"] not in gone}
    tables.attempts = {key: row for key, row in tables.attempts.items() if key[0] not in gone}
    tables.aliases = {alias: task for alias, task in tables.aliases.items() if task not in gone}
    tables.deps = {key: row for key, row in tables.deps.items() if key[0] not in gone}


def _pending_once_ids(tables: _Tables, run_key: str) -> list[str]:
    return [
        row["id"]
        for row in tables.tasks.values()
        if row["run_key"] == run_key and _is_pending_once(row)
    ]


# -- schedules ---------------------------------------------------------------------------


def _schedule_named(tables: _Tables, name: str) -> Row | None:
    return next((row for row in tables.schedules.values() if row["name"] == name), None)


def _add_schedule(tables: _Tables, schedule: ScheduleRow) -> None:
    _unique(tables.schedules, schedule.id, "taskflow_schedules")
    tables.schedules[schedule.id] = _stored(
        schedule.columns(), times=_SCHEDULE_TIMES, json_columns=("options", "tags")
    )


def _refreshed(existing: Row, declared: ScheduleRow) -> dict[str, object]:
    """Columns to update when code re-declares an existing schedule."""
    values: dict[str, object] = {
        "func_name": declared.func_name,
        "kind": declared.kind,
        "payload": declared.payload,
        "options": _json(declared.options),
        "description": declared.description,
        "tags": _json(declared.tags),
        "group_name": declared.group_name,
        "updated_at": _utc(declared.updated_at),
        "cron": declared.cron,
        "every": declared.every,
        "timezone": declared.timezone,
    }
    trigger = (declared.cron, declared.every, declared.timezone)
    if trigger != (existing["cron"], existing["every"], existing["timezone"]) or (
        existing["next_run_at"] is None
    ):
        moment = declared.next_run_at
        values["next_run_at"] = None if moment is None else _utc(moment)
    return values


def _has_active_run(tables: _Tables, schedule_id: str) -> bool:
    return any(
        row["schedule_id"] == schedule_id
        and row["source"] == "scheduled"
        and row["status"] in ("pending", "running")
        for row in tables.tasks.values()
    )


if TYPE_CHECKING:  # the type checker holds the memory store to the whole protocol
    _STORE: Store = MemoryStore()


# -- dependencies ------------------------------------------------------------------------


def _edges_of(tables: _Tables, forms: Iterable[str]) -> list[Row]:
    wanted = set(forms)
    edges = [row for row in tables.deps.values() if row["task_id"] in wanted]
    return sorted(edges, key=lambda row: row["position"])


def _dependency_verdict(tables: _Tables, task_id: str) -> str | None:
    """As :func:`~taskflow._store.workflow_sql.dependency_verdict`, for a stored task."""
    statuses = []
    for row in _edges_of(tables, [task_id]):
        dep = tables.tasks.get(row["depends_on"])
        statuses.append((row["depends_on"], dep["status"] if dep else None))
    return dependency_verdict(statuses, tables.tasks[task_id]["on_dependency_failure"])


def _blocked_dependents(tables: _Tables, ids: Iterable[str]) -> list[str]:
    ended = set(ids)
    found = {
        row["task_id"]
        for row in tables.deps.values()
        if row["depends_on"] in ended and tables.tasks[row["task_id"]]["status"] == "blocked"
    }
    return sorted(found)


def _release(
    tables: _Tables,
    candidates: Sequence[str],
    *,
    instance: str,
    queues: Sequence[str],
    now: datetime,
) -> list[TaskRow]:
    """Release what can be released among ``candidates`` (and the dependents of those
    cancelled); the released tasks owned by ``instance``."""
    mine: list[TaskRow] = []
    while candidates:
        cancelled = []
        for task_id in candidates:
            if tables.tasks[task_id]["status"] != "blocked":
                continue
            verdict = _dependency_verdict(tables, task_id)
            if verdict == "":
                row = tables.tasks[task_id]
                owner = instance if row["queue"] in queues else None
                row = _set(
                    tables.tasks, task_id, status="pending", next_attempt_at=now, owner=owner
                )
                if owner == instance:
                    mine.append(_record(TaskRow, row))
            elif verdict is not None:
                _set(tables.tasks, task_id, status="cancelled", finished_at=now, error=verdict)
                cancelled.append(task_id)
        candidates = _blocked_dependents(tables, cancelled)
    return mine


def _workflow(tables: _Tables, row: Row) -> WorkflowRow:
    counts: dict[str, int] = {}
    for task in tables.tasks.values():
        if task["workflow_id"] == row["id"] and task.get("resolution") != "retried":
            counts[task["status"]] = counts.get(task["status"], 0) + 1
    return WorkflowRow(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        created_at=row["created_at"],
        counts=counts,
    )


def _started_by(row: dict[str, Any], instance: str, started: datetime) -> bool:
    """:func:`repeats_start` for a stored row."""
    return repeats_start(
        row["status"], row["owner"], row["started_at"], instance=instance, now=started
    )
