"""The Queues page's data, why a pending task waits, and pausing and resuming a queue.

A queue is shown when it holds pending or running tasks, is served by a live instance,
is configured in this process or named by a registered function, or is paused. Its
figures come from :mod:`taskflow._store.queue_board` (index ranges only); this module
only puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from taskflow._engine.registry import TaskConfig
from taskflow._engine.throttle import is_limited, limit_for
from taskflow._store.protocol import Store
from taskflow._store.queue_board import COUNT_CAP, QueueBoardReader
from taskflow._store.rows import InstanceRow, QueuePause
from taskflow._store.sql import SQLStore
from taskflow.admin._service import ActionError, Actor, AdminService
from taskflow.admin._util import seconds_between, utcnow
from taskflow.errors import ConfigurationError
from taskflow.records import TaskRecord

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

THROUGHPUT_WINDOW = timedelta(minutes=5)  # what "finished" on the Queues page counts


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue as the Queues page and ``GET {path}/queues/overview`` show it.

    Attributes:
        name: the queue.
        pending: pending tasks due now (capped at ``cap``).
        deferred: pending tasks due later: deferred, or waiting out a retry delay.
        next_deferred: when the earliest deferred task becomes due.
        running: tasks running now.
        oldest_wait: seconds the oldest due task has waited since it became due.
        finished: tasks finished in the last :data:`THROUGHPUT_WINDOW`.
        instances: the live instances that serve the queue.
        pause: who paused the queue and when, or None.
        cap: the most any count reads (a larger count is shown as ``cap+``).
    """

    name: str
    pending: int
    deferred: int
    next_deferred: datetime | None
    running: int
    oldest_wait: float | None
    finished: int
    instances: list[InstanceRow]
    pause: QueuePause | None
    cap: int = COUNT_CAP

    @property
    def unserved(self) -> bool:
        """True when tasks are due and no live instance serves the queue: nobody will
        run them."""
        return self.pending > 0 and not self.instances


@dataclass(frozen=True, slots=True)
class WaitReason:
    """Why a pending task has not started.

    Attributes:
        kind: ``deferred``, ``paused``, ``unserved``, ``concurrency`` or ``rate`` (held
            by its function's limit) or ``slot`` (waiting for a free slot: due, served,
            not paused, not held).
        queue: the task's queue.
        until: when a deferred task becomes due; when a rate limit allows the next start.
        pause: the queue's pause.
        func: the function whose limit holds the task.
        count: the tasks of the limit running (``concurrency``), or its starts in the
            window (``rate``).
    """

    kind: str
    queue: str
    until: datetime | None = None
    pause: QueuePause | None = None
    func: str = ""
    count: int = 0

    @property
    def text(self) -> str:
        """The reason in words (times in UTC)."""
        if self.kind == "deferred" and self.until is not None:
            return f"deferred until {self.until:%Y-%m-%d %H:%M:%S} UTC"
        if self.kind == "paused" and self.pause is not None:
            since = f"{self.pause.paused_at:%Y-%m-%d %H:%M:%S} UTC"
            return f"queue {self.queue} is paused (by {self.pause.paused_by} since {since})"
        if self.kind == "unserved":
            return f"queue {self.queue} is not served by any live instance"
        if self.kind == "concurrency":
            return f"held by the concurrency limit of {self.func} ({self.count} running)"
        if self.kind == "rate" and self.until is not None:
            return (
                f"held by the rate limit of {self.func} ({self.count} started in the window); "
                f"next start at {self.until:%Y-%m-%d %H:%M:%S} UTC"
            )
        return "waiting for a free slot"


def known_queues(manager: TaskManager) -> set[str]:
    """Queues to show even when empty: configured here, or named by a registered
    function."""
    named = {config.queue for config in manager.registry if config.registered}
    return named | set(manager.queue_configs) | set(manager.queues)


async def queue_rows(manager: TaskManager) -> list[QueueRow]:
    """Every queue worth showing, by name.

    Raises:
        ConfigurationError: the manager's store is not SQLite or PostgreSQL.
    """
    db = manager.db
    if not isinstance(db, SQLStore):
        raise ConfigurationError("the dashboard reads a SQLite or PostgreSQL task store")
    now = utcnow()
    board = await QueueBoardReader(db).read(
        queues=known_queues(manager),
        now=now,
        live_since=now - timedelta(seconds=manager.instance_timeout),
        finished_since=now - THROUGHPUT_WINDOW,
    )
    return [
        QueueRow(
            name=figures.gauges.name,
            pending=figures.gauges.waiting,
            deferred=figures.gauges.deferred,
            next_deferred=figures.next_deferred,
            running=figures.gauges.running,
            oldest_wait=_waited(figures.gauges.oldest_due, now),
            finished=figures.finished,
            instances=[i for i in board.live_instances if figures.gauges.name in (i.queues or ())],
            pause=board.paused.get(figures.gauges.name),
        )
        for figures in board.queues
    ]


def _waited(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max(seconds_between(since, now) or 0.0, 0.0)


async def wait_reason(
    record: TaskRecord,
    *,
    store: Store,
    instances: list[InstanceRow],
    stale_after: float,
    config: TaskConfig | None = None,
) -> WaitReason | None:
    """Why ``record`` (a pending task) has not started; None for any other status.

    Args:
        record: the task.
        store: reads the paused queues (one small table), and a limit's use.
        instances: every registered instance (the task page reads them anyway).
        stale_after: seconds after which an instance's heartbeat is stale.
        config: the task's function as registered here (None: unknown here), for its
            concurrency and rate limits.
    """
    if record.status.value != "pending":
        return None
    now = utcnow()
    queue = record.queue
    if record.next_attempt_at is not None and record.next_attempt_at > now:
        return WaitReason("deferred", queue, until=record.next_attempt_at)
    pause = next((p for p in await store.paused_queues() if p.queue == queue), None)
    if pause is not None:
        return WaitReason("paused", queue, pause=pause)
    live_since = now - timedelta(seconds=stale_after)
    if not any(i.heartbeat_at >= live_since and queue in (i.queues or ()) for i in instances):
        return WaitReason("unserved", queue)
    held = await _limit_reason(record, store, config, now)
    return held or WaitReason("slot", queue)


async def _limit_reason(
    record: TaskRecord, store: Store, config: TaskConfig | None, now: datetime
) -> WaitReason | None:
    """``concurrency`` or ``rate`` when the task's limit is full now, else None."""
    if config is None or not is_limited(config):
        return None
    row = await store.get_task(record.task_id)
    limit = None if row is None or row.limit_key is None else limit_for(config, row.limit_key)
    if limit is None:
        return None
    window = None if limit.period is None else timedelta(seconds=limit.period)
    usage = await store.limit_usage(limit.key, since=None if window is None else now - window)
    func, queue = record.func_name, record.queue
    if limit.concurrency is not None and usage.running >= limit.concurrency:
        return WaitReason("concurrency", queue, func=func, count=usage.running)
    if window is not None and limit.rate is not None and usage.starts >= limit.rate:
        until = (usage.oldest_start or now) + window
        return WaitReason("rate", queue, until=until, func=func, count=usage.starts)
    return None


async def pause_queue(service: AdminService, manager: TaskManager, name: str, who: Actor) -> None:
    """Pause a queue for every process, and audit it.

    Raises:
        ActionError: 422 the name is not a valid queue name.
    """
    try:
        pause = await manager.pause_queue(name, by=who.username)
    except ConfigurationError as exc:
        raise ActionError(422, str(exc)) from exc
    earlier = pause["paused_by"] != who.username  # paused already, by someone else
    await service.audit(
        who, "pause_queue", name, {"already_paused_by": pause["paused_by"]} if earlier else None
    )


async def resume_queue(service: AdminService, manager: TaskManager, name: str, who: Actor) -> None:
    """Resume a paused queue, and audit it.

    Raises:
        ActionError: 404 the queue is not paused.
    """
    if not await manager.resume_queue(name):
        raise ActionError(404, f"queue {name!r} is not paused")
    await service.audit(who, "resume_queue", name)
