"""The store's interface: what the engine, the schedules and the FastAPI integration may
ask of a store, by aggregate, in typed records (:mod:`taskflow._store.rows`).

:class:`~taskflow._store.sql.SQLStore` implements it on SQLite and PostgreSQL;
:class:`~taskflow._store.memory.MemoryStore` implements it in memory, and the same store
tests run on all three. A part of the engine names the narrowest protocol it uses
(:class:`TaskStore`, :class:`ScheduleStore`, ...); :class:`Store` is all of them.

Contracts every implementation keeps (the store tests check each one):

* a task id may be given in either stored shape (UUID string or 32 hex digits);
* an idempotency key is held by at most one live task (not failed, cancelled or
  interrupted): inserting another task with the key returns the holder's id;
* a unique key is held by at most one task per window: of concurrent
  :meth:`TaskStore.insert_unique_task` calls for one key, one inserts and the others
  return its id;
* a claimed task is owned by one instance only, and claims take the best priority, then
  the earliest due task;
* a schedule slot fires once, whoever asks: :meth:`ScheduleStore.fire_schedule` advances
  only from the slot it is given;
* timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

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
)

#: ``reader(key)``: the id of the live task holding idempotency key ``key``, or None.
KeyReader = Callable[[str], "str | None"]


class Listening(Protocol):
    """A running subscription to the store's notifications."""

    async def close(self) -> None: ...


class TaskStore(Protocol):
    """Tasks, their attempts and log lines."""

    # Group-committed writes: each returns a future resolved at the commit.

    def insert_task(self, task: NewTask) -> asyncio.Future[str]:
        """Queue a new task; resolves to the id stored (the key holder's on a clash)."""
        ...

    def start_task(
        self, task_id: str, *, instance: str, now: datetime
    ) -> asyncio.Future[int | None]:
        """Queue pending → running; resolves to the attempt number, or None if the task
        was not pending. The same start asked again (same instance and ``now``, the
        task still running from it) resolves to the same attempt and changes nothing:
        a start whose commit landed but whose reply was lost is retried safely."""
        ...

    def finish_task(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queue the end of an attempt (applied only while its owner still runs it)."""
        ...

    def append_log(self, line: NewLogLine) -> asyncio.Future[None]:
        """Queue one log line."""
        ...

    def set_progress(self, update: ProgressUpdate) -> asyncio.Future[None]:
        """Queue a task's latest progress report (committed before a finish queued
        after it)."""
        ...

    # Reads.

    async def get_task(self, task_id: str) -> TaskRow | None:
        """The task with this id (or the task it is an alias of)."""
        ...

    async def get_logs(self, task_id: str, *, limit: int = 1000) -> list[LogRow]:
        """The first ``limit`` log lines of a task, oldest first."""
        ...

    async def get_attempts(self, task_id: str) -> list[AttemptRow]:
        """Every attempt of a task, first first."""
        ...

    async def find_live_by_key(self, key: str) -> str | None:
        """Id of the live task holding an idempotency key."""
        ...

    def key_reader(self) -> KeyReader | None:
        """A blocking version of :meth:`find_live_by_key` that is quick enough to call
        on the event loop's own thread (microseconds, never waiting for a writer), or
        None when this store has none (callers then use a helper thread)."""
        ...

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        func_name: str | None = None,
        limit: int | None = 100,
        created_since: datetime | None = None,
    ) -> list[TaskRow]:
        """Newest tasks first, filtered (``limit`` None: all)."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """Number of tasks in each status."""
        ...

    async def count_waiting(self, queue: str, *, now: datetime) -> int:
        """Pending tasks of ``queue`` due by ``now``."""
        ...

    async def queue_counts(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """Tasks in each status, per queue."""
        ...

    async def owned_since(self, *, owner: str, before: datetime) -> list[str]:
        """Ids of tasks ``owner`` holds that were due or started before ``before``."""
        ...

    async def cancel_requests(self, *, owner: str) -> list[str]:
        """Ids of running tasks of ``owner`` whose cancellation was requested."""
        ...

    # Direct writes, each in its own transaction.

    async def insert_task_now(self, task: NewTask) -> str:
        """Insert one task now (bypassing group commit); the id stored."""
        ...

    async def insert_unique_task(
        self, task: NewTask, *, window: timedelta, states: Sequence[str]
    ) -> str:
        """Insert ``task`` (which has a ``unique_key``) unless a task with that key,
        created at or after ``task.created_at - window``, is in one of ``states``; the
        id stored, or that task's id. Concurrent calls for one key, from any process,
        insert at most one task."""
        ...

    async def find_unique_task(
        self, unique_key: str, *, since: datetime, states: Sequence[str]
    ) -> str | None:
        """Id of a task with ``unique_key`` created at or after ``since`` whose status
        is one of ``states``, or None."""
        ...

    async def start_limited(
        self, task_id: str, *, instance: str, limit: Limit, now: datetime
    ) -> int | LimitHold | None:
        """pending → running if ``limit`` allows one more start now, counted against
        every process: the attempt number; why not (the task stays pending); or None
        if the task is not pending. The same start asked again resolves to the same
        attempt, as for :meth:`start_task`."""
        ...

    async def limit_usage(self, limit_key: str, *, since: datetime | None) -> LimitUsage:
        """Tasks with ``limit_key`` running and (``since`` given) their starts since."""
        ...

    async def cancel_task(
        self, task_id: str, *, now: datetime, reason: str | None = None
    ) -> str | None:
        """Cancel a pending task, or flag a running one; the status it had."""
        ...

    async def claim_tasks(
        self, *, instance: str, queues: Sequence[str], limit: int, now: datetime
    ) -> list[TaskRow]:
        """Take ownership of up to ``limit`` due, unowned pending tasks."""
        ...

    async def copy_task(self, task_id: str, *, task: NewTask) -> str | None:
        """Insert ``task`` unless ``task_id`` is gone; the id stored, or None. A new
        copy links back to ``task_id`` (``retry_of``), which is resolved as
        ``retried``, in the same transaction."""
        ...

    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished task with its logs and attempts."""
        ...

    async def prune_finished(self, *, before: datetime, batch_size: int = 500) -> int:
        """Delete up to ``batch_size`` final tasks that finished before ``before``."""
        ...


class OnceStore(Protocol):
    """Pending one-off firings (``schedule_once``): tasks with a ``run_key``."""

    async def replace_once(self, task: NewTask, *, now: datetime) -> str:
        """Store the firing of ``task.run_key``, replacing the pending one."""
        ...

    async def cancel_once(self, run_key: str) -> bool:
        """Delete the pending firing of ``run_key``."""
        ...

    async def pending_once(self, *, before: datetime | None = None) -> list[TaskRow]:
        """Pending firings due at or before ``before``, soonest first."""
        ...


class ScheduleStore(Protocol):
    """Stored schedules and the firing of their slots."""

    async def upsert_static_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        """Create a schedule declared in code, or refresh the stored one."""
        ...

    async def create_schedule(self, schedule: ScheduleRow) -> bool:
        """Insert a schedule; False when its name is taken."""
        ...

    async def delete_schedule(self, name: str) -> ScheduleRow | None:
        """Delete a dynamic schedule; the schedule as it was (static: kept)."""
        ...

    async def set_schedule_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime | None, now: datetime
    ) -> bool:
        """Pause or resume a schedule."""
        ...

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``."""
        ...

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        ...

    async def due_schedules(self, *, now: datetime, limit: int = 100) -> list[ScheduleRow]:
        """Enabled schedules whose next run is due, earliest first."""
        ...

    async def next_schedule_due(self) -> datetime | None:
        """The earliest next run of any enabled schedule."""
        ...

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
        """Advance a schedule from ``slot`` and insert the slot's task, atomically;
        ``(advanced, inserted)``."""
        ...

    async def running_schedule_ids(self) -> set[str]:
        """Ids of the schedules with a run in status ``running``."""
        ...

    async def schedule_runs(self, schedule_id: str, *, limit: int) -> list[RunTimes]:
        """Times of the newest ``limit`` finished runs of a schedule, oldest first."""
        ...

    async def clear_schedule_runs(self, schedule_id: str) -> int:
        """Delete the finished runs of a schedule."""
        ...


class InstanceStore(Protocol):
    """The processes serving the store, and the settling of a stopped one's tasks."""

    async def register_instance(self, instance: InstanceRow) -> None:
        """Insert this process's instance row."""
        ...

    async def heartbeat(self, instance: str, *, now: datetime, info: Mapping[str, object]) -> bool:
        """Refresh a heartbeat; False if the instance row is gone (it was rescued)."""
        ...

    async def list_instances(self) -> list[InstanceRow]:
        """Every registered instance, newest heartbeat first."""
        ...

    async def read_clock(self) -> ClockReading | None:
        """The database's clock against this host's (None: they are the same clock)."""
        ...

    async def dead_instances(
        self, *, me: str, stale_before: datetime, hostname: str, dead_pids: Sequence[int]
    ) -> list[str]:
        """Instances with a stale heartbeat, or a dead pid on this host."""
        ...

    async def host_pids(self, *, hostname: str, me: str) -> dict[str, int]:
        """Other instances of this host, by id, with their pids."""
        ...

    async def settle_instance(
        self,
        instance: str,
        *,
        now: datetime,
        reason: str,
        remove: bool = True,
        only: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Settle the tasks of a stopped instance; counts by outcome."""
        ...

    async def listen(self, on_notify: Callable[[str], None]) -> Listening | None:
        """Call ``on_notify`` on every notification (None: the store has none, poll)."""
        ...


class MetaStore(Protocol):
    """A small key/value table (queue configurations)."""

    async def get_meta(self, key: str) -> str | None:
        """A stored value, or None."""
        ...

    async def set_meta(self, key: str, value: str, *, now: datetime) -> None:
        """Insert or replace a value."""
        ...


class QueueStore(Protocol):
    """Paused queues: no process starts a task of a paused queue."""

    async def pause_queue(self, queue: str, *, by: str, now: datetime) -> QueuePause:
        """Pause ``queue`` (a paused queue keeps who paused it and when)."""
        ...

    async def resume_queue(self, queue: str) -> bool:
        """Resume ``queue``; False when it was not paused."""
        ...

    async def paused_queues(self) -> list[QueuePause]:
        """Every paused queue, by name."""
        ...


class WorkflowStore(Protocol):
    """Tasks that wait for other tasks (``blocked`` until their dependencies end), and
    workflows."""

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
        ...

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
        ...

    async def dependency_results(self, task_id: str) -> list[tuple[str, str | None, bool]]:
        """Id, stored result and encryption of each dependency, in order."""
        ...

    async def dependency_links(
        self, task_id: str
    ) -> tuple[list[DependencyLink], list[DependencyLink]]:
        """What a task waits for, and what waits for it."""
        ...

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """A workflow with its task counts by status."""
        ...

    async def list_workflows(
        self, *, limit: int = 50, before: datetime | None = None
    ) -> list[WorkflowRow]:
        """Workflows, newest first."""
        ...

    async def workflow_edges(self, workflow_id: str) -> list[Dependency]:
        """The dependencies of a workflow's tasks."""
        ...

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRow]:
        """A workflow's tasks, oldest first."""
        ...


class Store(
    TaskStore,
    OnceStore,
    ScheduleStore,
    InstanceStore,
    MetaStore,
    QueueStore,
    WorkflowStore,
    Protocol,
):
    """Every aggregate of the store, and its lifecycle."""

    @property
    def display_url(self) -> str:
        """Where the store is, with any password masked."""
        ...

    async def open(self, *, auto_upgrade: bool) -> None:
        """Connect and check (or upgrade) the schema."""
        ...

    async def close(self) -> None:
        """Commit queued writes and release every resource."""
        ...
