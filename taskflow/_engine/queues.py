"""Named queues: which queues a process serves, and each queue's limits.

``TaskManager(queues=...)`` takes either form:

* a list or tuple of names: the queues this process runs (taskflow's own form);
* a dict of name to :class:`QueueConfig` (fastapi-taskflow's form): the queues this
  process runs, each with a concurrency limit and a back-pressure limit. A ``"default"``
  queue is added when the dict does not name one.

``concurrency`` limits how many tasks of the queue run at once *in each process* that
serves it. ``max_size`` limits how many tasks may *wait* in the queue, counted in the
database, so the limit holds across every process that enqueues to it.

A queue can be *paused* (a row in the database): no process starts its tasks, whether
claimed or enqueued by the process itself, until it is resumed. Each process reads the
paused queues at startup, once per ``poll_interval`` in its poll loop, at once on a
PostgreSQL notification that they changed, and when it pauses or resumes a queue itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from taskflow._engine.bridge import SYNC_TIMEOUT, running_loop
from taskflow._engine.job import utcnow
from taskflow._engine.runtime import Runtime
from taskflow._engine.unique import Uniqueness
from taskflow._store.rows import NewTask, QueuePause
from taskflow.errors import ConfigurationError, QueueFullError, UnknownQueue
from taskflow.records import QueueConfig

logger = logging.getLogger("taskflow")

DEFAULT_QUEUE = "default"
MAX_QUEUE_NAME = 100  # the width of the ``queue`` column


def queue_setup(
    queues: Mapping[str, QueueConfig] | Sequence[str], *, max_size: int | None
) -> tuple[tuple[str, ...], dict[str, QueueConfig]]:
    """The queues a process serves and every queue's config, from ``TaskManager``'s
    ``queues=`` and ``max_size=`` arguments.

    ``max_size`` is shorthand for the ``"default"`` queue's ``max_size``; a
    ``"default"`` entry in a ``queues`` dict that sets its own ``max_size`` wins.

    Raises:
        ConfigurationError: a name or config is invalid.
    """
    if isinstance(queues, Mapping):
        configs = {_check_name(name): _copy(name, config) for name, config in queues.items()}
        configs.setdefault(DEFAULT_QUEUE, QueueConfig())
        served = tuple(configs)
    else:
        if isinstance(queues, str):
            raise ConfigurationError(f"queues must be a list of names, got the string {queues!r}")
        served = tuple(_check_name(name) for name in queues)
        configs = {name: QueueConfig() for name in served}
    if max_size is not None:
        default = configs.setdefault(DEFAULT_QUEUE, QueueConfig())
        if default.max_size is None:
            default.max_size = QueueConfig(max_size=max_size).max_size  # validated
    return served, configs


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_QUEUE_NAME:
        raise ConfigurationError(
            f"a queue name must be a non-empty string of at most {MAX_QUEUE_NAME} "
            f"characters, got {name!r}"
        )
    return name


def _copy(name: str, config: Any) -> QueueConfig:
    if not isinstance(config, QueueConfig):
        raise ConfigurationError(
            f"queues[{name!r}] must be a QueueConfig, got {type(config).__name__}"
        )
    return replace(config)


def concurrency_limits(configs: Mapping[str, QueueConfig]) -> dict[str, int]:
    """The queues with a concurrency limit, and their limits."""
    return {name: c.concurrency for name, c in configs.items() if c.concurrency is not None}


def full_message(queue: str, *, size: int, limit: int) -> str:
    """The text of :class:`~taskflow.errors.QueueFullError`."""
    return (
        f"queue {queue!r} is full: {size} tasks waiting, max_size is {limit}; "
        "the task was stored as rejected"
    )


def meta_key(queue: str) -> str:
    """The meta-table key holding a queue's config changed at runtime (keys are at most
    100 characters; long queue names are hashed)."""
    key = f"queue:{queue}"
    return key if len(key) <= 100 else "queue#" + hashlib.sha256(queue.encode()).hexdigest()


class Queues:
    """The queues this process serves, every queue's limits, and the ``max_size``
    check of new rows.

    Args:
        runtime: the manager's running state.
        served: the names of the queues this process runs.
        configs: every known queue's config (``queue_setup``).
    """

    def __init__(
        self, runtime: Runtime, served: tuple[str, ...], configs: dict[str, QueueConfig]
    ) -> None:
        self._runtime = runtime
        self.served = served
        self.configs = configs
        self._uncommitted: dict[str, int] = {}  # rows of bounded queues not committed yet
        self.paused: dict[str, QueuePause] = {}  # as last read from the database
        self.wake: Callable[[], None] = _nothing  # look for claimable tasks now

    def claimable(self) -> tuple[str, ...]:
        """The served queues this process may claim tasks from: those not paused."""
        return tuple(name for name in self.served if name not in self.paused)

    async def pause(self, name: str, *, by: str | None = None) -> dict[str, Any]:
        """Pause a queue in every process: none starts its tasks until it is resumed.

        Tasks enqueued to a paused queue are stored (pending) and wait; running tasks
        are not interrupted. This process stops at once; others within two ``poll_interval``
        (on PostgreSQL, at once through a notification). Pausing a
        paused queue keeps who paused it and when. The queue need not be configured
        here: a queue served only by other processes can be paused too.

        Args:
            name: the queue.
            by: who paused it, as the dashboard shows it (default: this process's
                ``hostname:pid``).

        Returns:
            ``{"name", "paused_at", "paused_by"}`` of the pause.

        Raises:
            ConfigurationError: ``name`` is not a valid queue name.
            NotStarted: the manager is not running.
            DatabaseError: the database refused the write.
        """
        self._runtime.require_loop()
        _check_name(name)
        who = by or f"{socket.gethostname()}:{os.getpid()}"
        pause = await self._runtime.db.pause_queue(name, by=who[:255], now=utcnow())
        await self.refresh_paused()
        return _pause_dict(pause)

    async def resume(self, name: str) -> bool:
        """Resume a paused queue: its waiting tasks start in this process at once, and
        in others within two ``poll_interval`` (on PostgreSQL, at once). False when the queue was
        not paused.

        Raises:
            NotStarted: the manager is not running.
            DatabaseError: the database refused the write.
        """
        self._runtime.require_loop()
        resumed = await self._runtime.db.resume_queue(name)
        await self.refresh_paused()
        self.wake()
        return resumed

    async def paused_queues(self) -> list[dict[str, Any]]:
        """Every paused queue, read from the database, by name: a dict with ``name``,
        ``paused_at`` and ``paused_by`` each.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        return [_pause_dict(pause) for pause in await self._runtime.db.paused_queues()]

    async def refresh_paused(self) -> None:
        """Read the paused queues from the database and hold back their tasks here (the
        tasks of a queue no longer paused go back in line)."""
        pauses = await self._runtime.db.paused_queues()
        self.paused = {pause.queue: pause for pause in pauses}
        dispatcher = self._runtime.dispatcher
        if dispatcher is not None:
            dispatcher.set_paused(frozenset(self.paused))

    def bounded(self, queue: str) -> bool:
        """True when ``queue`` has a ``max_size``."""
        config = self.configs.get(queue)
        return config is not None and config.max_size is not None

    def stats(self) -> list[dict[str, Any]]:
        """Each configured queue's limits and task counts, read from the database (so
        they cover every process), sorted by name.

        Each dict has ``name``, ``concurrency``, ``max_size``, ``pending`` (waiting to
        run), ``running``, ``finished`` (success, failed, interrupted, cancelled) and
        ``rejected``.

        Raises:
            NotStarted: the manager is not running.
            DatabaseError: the database cannot be read.
        """
        self._runtime.require_loop()
        names = sorted(self.configs)
        assert self._runtime.bridge is not None
        counts = self._runtime.bridge.call(lambda store: store.queue_counts(names))
        return [_stats(name, self.configs[name], counts[name]) for name in names]

    async def read_stats(self) -> list[dict[str, Any]]:
        """:meth:`stats` for async code (it does not block the event loop)."""
        self._runtime.require_loop()
        names = sorted(self.configs)
        counts = await self._runtime.db.queue_counts(names)
        return [_stats(name, self.configs[name], counts[name]) for name in names]

    def update(self, name: str, concurrency: int | None, max_size: int | None) -> dict[str, Any]:
        """Change a queue's ``concurrency`` and ``max_size`` while running.

        The new limits apply at once in this process: to tasks enqueued from now on
        (``max_size``) and to tasks not started yet (``concurrency``; running tasks are
        not stopped). They are stored in the database and applied by every process at
        its next start, so they survive restarts.

        Returns:
            The queue's :meth:`stats` entry, with the new limits.

        Raises:
            UnknownQueue: no queue by that name is configured (a ``KeyError``).
            ConfigurationError: a limit is not an int >= 1 or None.
            NotStarted: the manager is not running.
        """
        runtime = self._runtime
        loop = runtime.require_loop()
        if name not in self.configs:
            raise UnknownQueue(f"no queue named {name!r}; configured: {sorted(self.configs)}")
        config = QueueConfig(concurrency=concurrency, max_size=max_size)
        self.configs[name] = config
        save = runtime.db.set_meta(meta_key(name), json.dumps(config.to_dict()), now=utcnow())
        dispatcher = runtime.dispatcher
        if running_loop() is loop:
            if dispatcher is not None:
                dispatcher.set_queue_limit(name, concurrency)
            runtime.spawn(save, f"store the new config of queue {name!r}")
        else:  # the dispatcher lives on the loop: change it there
            if dispatcher is not None:
                loop.call_soon_threadsafe(dispatcher.set_queue_limit, name, concurrency)
            asyncio.run_coroutine_threadsafe(save, loop).result(SYNC_TIMEOUT)
        return next(stats for stats in self.stats() if stats["name"] == name)

    async def restore(self) -> None:
        """Apply the queue configs stored by :meth:`update` (at startup)."""
        for name in list(self.configs):
            raw = await self._runtime.db.get_meta(meta_key(name))
            if raw is None:
                continue
            try:
                self.configs[name] = QueueConfig(**json.loads(raw))
            except (ValueError, TypeError) as exc:
                logger.warning("ignoring the stored config of queue %r: %s", name, exc)

    def write_task(self, task: NewTask, unique: Uniqueness | None = None) -> asyncio.Future[str]:
        """Queue a new task row for the group commit, after its queue's ``max_size``
        check (none, and no query, for a queue without one). Call on the loop thread.

        A ``unique`` task is written in its own transaction instead, which returns the
        id of a matching task rather than inserting (see ``unique_sql.py``).

        Raises:
            QueueFullError: the queue is full; a ``rejected`` record is queued instead.
        """
        db = self._runtime.db
        config = self.configs.get(task.queue)
        if config is None or config.max_size is None:
            return db.insert_task(task) if unique is None else self._write_unique(task, unique)
        queue = task.queue
        self._check_room(task, config.max_size)
        write = db.insert_task(task) if unique is None else self._write_unique(task, unique)
        self._uncommitted[queue] = self._uncommitted.get(queue, 0) + 1
        write.add_done_callback(lambda _f: self._committed(queue))
        return write

    def _write_unique(self, task: NewTask, unique: Uniqueness) -> asyncio.Future[str]:
        write = self._runtime.db.insert_unique_task(
            task, window=unique.window, states=unique.states
        )
        return asyncio.ensure_future(write)

    async def admit_scheduled(self, task: NewTask) -> NewTask:
        """A schedule slot's task, or its ``rejected`` record when its queue is full
        (logged; the schedule's next slot tries again)."""
        config = self.configs.get(task.queue)
        if config is None or config.max_size is None:
            return task
        queue = task.queue
        waiting = await self._runtime.db.count_waiting(queue, now=utcnow())
        size = waiting + self._uncommitted.get(queue, 0)
        if size < config.max_size:
            return task
        message = full_message(queue, size=size, limit=config.max_size)
        logger.warning("schedule slot rejected: %s", message)
        return task.rejected(message)

    def _committed(self, queue: str) -> None:
        self._uncommitted[queue] -= 1

    def _check_room(self, task: NewTask, limit: int) -> None:
        """Count the queue's waiting tasks: pending rows in the database (every
        process's) plus this process's rows not committed yet. The read blocks the loop
        for one indexed count; reads never wait on writers (WAL, MVCC)."""
        queue = task.queue
        bridge = self._runtime.bridge
        assert bridge is not None
        stored = bridge.call(lambda store: store.count_waiting(queue, now=utcnow()))
        size = stored + self._uncommitted.get(queue, 0)
        if size < limit:
            return
        message = full_message(queue, size=size, limit=limit)
        write = self._runtime.db.insert_task(task.rejected(message))
        write.add_done_callback(_report_rejected_write)
        error = QueueFullError(
            message,
            queue=queue,
            size=size,
            limit=limit,
            task_id=task.id,
        )
        error.record_write = write  # a request commits it before its response, as a task
        raise error


def _stats(name: str, config: QueueConfig, counts: dict[str, int]) -> dict[str, Any]:
    finished = sum(counts.get(s, 0) for s in ("success", "failed", "interrupted", "cancelled"))
    return {
        "name": name,
        "concurrency": config.concurrency,
        "max_size": config.max_size,
        "pending": counts.get("pending", 0),
        "running": counts.get("running", 0),
        "finished": finished,
        "rejected": counts.get("rejected", 0),
    }


def _pause_dict(pause: QueuePause) -> dict[str, Any]:
    return {"name": pause.queue, "paused_at": pause.paused_at, "paused_by": pause.paused_by}


def _nothing() -> None:
    pass


def _report_rejected_write(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("the record of a rejected task was not stored: %s", future.exception())
