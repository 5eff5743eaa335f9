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
* a claimed task is owned by one instance only, and claims take the best priority, then
  the earliest due task;
* a schedule slot fires once, whoever asks: :meth:`ScheduleStore.fire_schedule` advances
  only from the slot it is given;
* timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from taskflow._store.rows import (
    AttemptRow,
    InstanceRow,
    LogRow,
    NewLogLine,
    NewTask,
    Outcome,
    QueuePause,
    RunTimes,
    ScheduleRow,
    TaskRow,
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
        was not pending."""
        ...

    def finish_task(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queue the end of an attempt (applied only while its owner still runs it)."""
        ...

    def append_log(self, line: NewLogLine) -> asyncio.Future[None]:
        """Queue one log line."""
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


class Store(TaskStore, OnceStore, ScheduleStore, InstanceStore, MetaStore, QueueStore, Protocol):
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
