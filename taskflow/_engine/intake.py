"""How new tasks get in: rows built and written (group-committed on the loop), held
until their request's response is sent, then handed to the dispatcher; retries waiting
out their delay; what this process knows it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from taskflow._engine import tracing
from taskflow._engine.bridge import running_loop
from taskflow._engine.job import Job, JobHooks, utcnow
from taskflow._engine.queues import Queues
from taskflow._engine.registry import TaskConfig, TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.submission import build_row, clean_tags, job_from_row, new_task_id
from taskflow._engine.submit_options import DEFAULT_SUBMIT, SubmitOptions
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import Payloads
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import NewTask, TaskRow
from taskflow.errors import ConfigurationError, TaskArgumentError, UnknownTaskFunction

logger = logging.getLogger("taskflow")

RELEASE_TIMEOUT = 60.0  # seconds a request-held task waits for its response to finish

Submitted = tuple[str, "asyncio.Future[str] | None", bool]


@dataclass(slots=True)
class _Held:
    """A committed (or committing) task waiting for its request to finish."""

    job: Job
    write: asyncio.Future[str] | None
    since: float


class Intake:
    """Stores new tasks and starts them when they may start.

    Args:
        runtime: the manager's running state.
        registry: the registered functions (and automatic configs of importable ones).
        payloads: encodes (and encrypts) arguments.
        limits: the largest stored arguments.
        queues: the served queues and the ``max_size`` check.
    """

    def __init__(
        self,
        runtime: Runtime,
        registry: TaskRegistry,
        payloads: Payloads,
        limits: Limits,
        queues: Queues,
    ) -> None:
        self._runtime = runtime
        self._registry = registry
        self._payloads = payloads
        self._limits = limits
        self._queues = queues
        self._held: dict[str, _Held] = {}
        self._queued_keys: dict[str, str] = {}
        self._timers: dict[str, tuple[asyncio.TimerHandle, Job]] = {}
        self._memory_only_warned: set[str] = set()
        # Start every task as soon as its row is committed, a request's too (not after
        # the response): ``taskflow.testing``'s inline mode.
        self.start_at_once = False

    # -- new rows ----------------------------------------------------------------------

    def new_task(
        self,
        config: TaskConfig,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotency_key: str | None,
        tags: dict[str, Any] | None,
        priority: int | None,
        source: str,
        in_memory: bool = False,
        task_id: str | None = None,
    ) -> tuple[NewTask, Job]:
        """A new task and the job that runs it.

        Raises:
            TaskArgumentError: an argument, tag or key cannot be stored.
        """
        clean = clean_tags(tags)
        payload, memory_only = self._call_payload(config, args, kwargs, in_memory=in_memory)
        task = build_row(
            config,
            task_id=task_id or new_task_id(),
            payload=self._limits.check_payload(payload, what=f"arguments of {config.name}"),
            encrypted=self._payloads.encrypted,
            tags=clean,
            priority=priority,
            idempotency_key=idempotency_key,
            source=source,
            now=utcnow(),
            max_retries=config.retries,
            owner=self.owner_for(config),
        )
        if source != "scheduled":  # a firing is not part of the code that declared it
            task.trace_context = tracing.capture()
        job = job_from_row(task, config)
        if memory_only:
            job.memory = (args, kwargs)
        return task, job

    def _call_payload(
        self,
        config: TaskConfig,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        in_memory: bool,
    ) -> tuple[str, bool]:
        """The stored text of a call, and whether it is memory-only (``in_memory`` and a
        callable that cannot be imported back or an argument the codec refuses).

        Raises:
            TaskArgumentError: an argument cannot be stored and ``in_memory`` is False
                (or the function runs in a worker process, where memory cannot follow).
        """
        if in_memory and not config.registered:
            return self._payloads.encode_memory_call(args, kwargs), True
        try:
            return self._payloads.encode_call(args, kwargs), False
        except TaskArgumentError as exc:
            if not in_memory or config.executor == "process":
                raise
            self._warn_memory_only(config.name or "?", exc)
            return self._payloads.encode_memory_call(args, kwargs), True

    def _warn_memory_only(self, name: str, why: TaskArgumentError) -> None:
        """Log once per function that its tasks run from memory only."""
        if name in self._memory_only_warned:
            return
        self._memory_only_warned.add(name)
        logger.warning(
            "task %s runs from memory in this process only (%s); after a crash it ends "
            "interrupted instead of running again",
            name,
            why,
        )

    def storable(self, func: Callable[..., Any], config: TaskConfig | None = None) -> TaskConfig:
        """``config``, else the one ``func`` is stored with.

        Raises:
            UnknownTaskFunction: ``func`` cannot be imported back by name.
        """
        config = config or self._registry.config_for_callable(func)
        if config is None:
            raise UnknownTaskFunction(f"{func!r} cannot be stored as a task: not importable")
        return config

    def owner_for(self, config: TaskConfig) -> str | None:
        """This instance for tasks on a queue it runs; None (claimable by any instance
        running the queue, e.g. a standalone worker) otherwise."""
        return self._runtime.instance_id if config.queue in self._queues.served else None

    # -- storing -----------------------------------------------------------------------

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: SubmitOptions = DEFAULT_SUBMIT,
    ) -> Submitted:
        """Store a new task from any thread; the row is committed (or queued for the next
        group commit on the loop thread) and held until :meth:`release`.

        Returns ``(task_id, pending_write, created)``; ``created`` is False when an
        idempotency key matched an existing task, whose id is returned. ``options``
        (:class:`~taskflow._engine.submit_options.SubmitOptions`) may override the
        function's queue and config, give a key, tags, priority and hooks, and the id to
        store it under. With ``options.in_memory``, a callable that cannot be imported
        back or arguments the codec cannot store do not raise: the task runs in this
        process from memory, and its row is marked as not re-runnable.

        Raises:
            NotStarted: the manager is not running.
            QueueFullError: the queue is at its ``max_size`` (the task is stored as
                ``rejected``).
            TaskArgumentError: an argument, tag or key cannot be stored.
            DatabaseError: the database refused the write (sync callers only).
        """
        config = self.storable(func, options.config)
        task, job = self.new_task(
            config,
            args,
            kwargs,
            idempotency_key=options.idempotency_key,
            tags=options.tags,
            priority=options.priority,
            source=options.source,
            in_memory=options.in_memory,
            task_id=options.task_id,
        )
        job.hooks = options.hooks
        instance = self._runtime.instance_id
        queue = options.queue
        if queue is not None:
            self.route(task, job, queue=queue, defer=None)
            task.owner = instance if queue in self._queues.served else None
        if not config.registered or job.memory is not None:
            job.config = config
            task.owner = instance  # only this process can run it
        loop = self._runtime.require_loop()
        if running_loop() is loop:
            return self._submit_on_loop(task, job)
        stored = asyncio.run_coroutine_threadsafe(self.insert(task), loop).result()
        return self._hold(job, stored, None)

    async def enqueue(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        idempotency_key: str | None = None,
        tags: dict[str, Any] | None = None,
        priority: int | None = None,
        queue: str | None = None,
        defer: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Store a task and start it, from async code outside a request.

        ``queue`` overrides the function's queue; a task on a queue this process does
        not run waits for a process that does (a standalone worker). ``defer`` delays
        the start by that many seconds (any process running the queue may take it).

        Returns the task id once the row is committed (the existing task's id when
        ``idempotency_key`` matches a task that has not failed).

        Raises:
            NotStarted: the manager is not running.
            QueueFullError: the queue is at its ``max_size`` (the task is stored as
                ``rejected``).
            TaskArgumentError: an argument, tag or key cannot be stored.
        """
        task, job = self.new_task(
            self.storable(func),
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            source="manual",
        )
        self.route(task, job, queue=queue, defer=defer)
        self._runtime.require_loop()
        stored = await self.insert(task)
        if stored == job.task_id and task.owner is not None:
            self.hold_and_release(job)
        return stored

    def route(self, task: NewTask, job: Job, *, queue: str | None, defer: float | None) -> None:
        """Apply ``enqueue``'s queue and defer options to a new task and its job.

        Raises:
            ConfigurationError: ``defer`` is negative.
        """
        if queue is not None:
            task.queue = job.queue = queue
        if defer is not None:
            if defer < 0:
                raise ConfigurationError(f"defer must be >= 0 seconds, got {defer}")
            task.next_attempt_at = task.created_at + timedelta(seconds=defer)
        if defer or task.queue not in self._queues.served:
            task.owner = None

    async def insert(self, task: NewTask) -> str:
        """Write ``task`` and wait for its commit; the id stored (another task's when the
        idempotency key is taken)."""
        key = task.idempotency_key
        if key is not None and self._queues.bounded(task.queue):
            # An existing task with the key is returned, not refused by a full queue.
            existing = await self._runtime.db.find_live_by_key(key)
            if existing is not None:
                return existing
        return await self._queues.write_task(task)

    def _submit_on_loop(self, task: NewTask, job: Job) -> Submitted:
        key = task.idempotency_key
        if key is not None:
            existing = self._live_key_holder(key)
            if existing is not None:
                return existing, None, False
            # The id goes back to the caller before the commit: if another process wins
            # the key meanwhile, the store records this id as an alias of the winner.
            task.promised = True
        write = self._queues.write_task(task)
        if key is not None:
            self._queued_keys[key] = task.id
            write.add_done_callback(lambda _f: self._queued_keys.pop(key, None))
        return self._hold(job, task.id, write)

    def _live_key_holder(self, key: str) -> str | None:
        """Who holds ``key``: a task queued here, else one in the database. The lookup
        blocks the loop for one read; reads never wait on writers (WAL, MVCC). The
        store's own blocking reader takes microseconds where it has one (a SQLite
        file); otherwise the read runs on the bridge's thread."""
        queued = self._queued_keys.get(key)
        if queued is not None:
            return queued
        reader = self._runtime.db.key_reader()
        if reader is not None:
            return reader(key)
        bridge = self._runtime.bridge
        assert bridge is not None
        return bridge.call(lambda store: store.find_live_by_key(key))

    def _hold(self, job: Job, stored_id: str, write: asyncio.Future[str] | None) -> Submitted:
        if stored_id != job.task_id:
            return stored_id, None, False
        if job.config is not None or job.queue in self._queues.served:
            self._held[job.task_id] = _Held(job, write, time.monotonic())
            if self.start_at_once:
                self.release(job.task_id)
        return job.task_id, write, True

    # -- holding and releasing -----------------------------------------------------------

    def known_task_ids(self) -> set[str]:
        """Tasks this process holds, runs, queues or will retry."""
        known = set(self._held) | set(self._timers) | self._runtime.kept
        dispatcher = self._runtime.dispatcher
        if dispatcher is not None:
            known |= set(dispatcher.running) | dispatcher.waiting_ids()
        return known

    def held_ids(self, task_ids: list[str]) -> list[str]:
        """Those of ``task_ids`` that are stored but not started yet."""
        return [task_id for task_id in task_ids if task_id in self._held]

    def new_event(self) -> anyio.Event:
        """An ``anyio.Event`` made on the manager's loop (callable from any thread)."""
        return self._runtime.on_loop(anyio.Event)

    def attach_done(self, task_id: str, hooks: JobHooks, handle: Any) -> None:
        """Give a held task a future that resolves when it ends."""
        hooks.done = self._runtime.on_loop(lambda: asyncio.get_running_loop().create_future())
        handle.done = hooks.done

    def release(self, task_id: str) -> None:
        """Let a held task start (thread-safe); called when its response has been sent."""
        loop = self._runtime.loop
        if loop is None:
            return
        if running_loop() is loop:
            self._release_now(task_id)
        else:
            loop.call_soon_threadsafe(self._release_now, task_id)

    def release_stale_holds(self) -> None:
        """Start tasks whose request never released them (no middleware, or a response
        that never finished) after ``RELEASE_TIMEOUT`` seconds."""
        cutoff = time.monotonic() - RELEASE_TIMEOUT
        for task_id, held in list(self._held.items()):
            if held.since < cutoff:
                self._release_now(task_id)

    def hold_and_release(self, job: Job) -> None:
        """Start a job whose row is already committed (or queued before it in the same
        group commit)."""
        self._held[job.task_id] = _Held(job, None, time.monotonic())
        self._release_now(job.task_id)

    def _release_now(self, task_id: str) -> None:
        held = self._held.pop(task_id, None)
        if held is None or self._runtime.dispatcher is None:
            return
        if held.write is None or held.write.done():
            self._dispatch_written(held)
        else:
            held.write.add_done_callback(lambda _f: self._dispatch_written(held))

    def _dispatch_written(self, held: _Held) -> None:
        if held.write is not None and held.write.exception() is not None:
            logger.error("task %s was not stored: %s", held.job.task_id, held.write.exception())
            return
        if held.write is not None and held.write.result() != held.job.task_id:
            return  # another process holds the idempotency key; that task runs there
        self._runtime.dispatch(held.job)

    def retry_later(self, job: Job, delay: float) -> None:
        """Start ``job`` again after ``delay`` seconds (it stays pending, owned by us)."""
        loop = self._runtime.loop
        assert loop is not None

        def fire() -> None:
            self._timers.pop(job.task_id, None)
            self._runtime.dispatch(job)

        self._timers[job.task_id] = (loop.call_later(delay, fire), job)

    def fire_retries_now(self) -> int:
        """Start every job waiting out a retry delay now; how many there were."""
        timers, self._timers = self._timers, {}
        for timer, job in timers.values():
            timer.cancel()
            self._runtime.dispatch(job)
        return len(timers)

    # -- cancelling and stopping ---------------------------------------------------------

    async def forget(self, task_id: str) -> None:
        """Drop a held task before it is cancelled (its write finished first, so the
        cancel finds the row)."""
        for held in [self._held.pop(form, None) for form in task_id_forms(task_id)]:
            if held is not None and held.write is not None:
                with contextlib.suppress(Exception):  # a failed write leaves nothing to cancel
                    await held.write  # the row may still be waiting for its group commit

    def stop_local(self, task_id: str, *, running: bool) -> None:
        """Stop what this process does for a cancelled task: its retry timer, and the
        attempt itself when it was ``running`` here."""
        for form in task_id_forms(task_id):  # the in-memory maps are keyed by the stored shape
            timer = self._timers.pop(form, None)
            if timer is not None:
                timer[0].cancel()
            if running:
                self.cancel_running(form)

    def cancel_running(self, task_id: str) -> None:
        """Stop a task running in this process (async: cancelled; thread and process:
        flagged for ``is_cancelled()``)."""
        dispatcher = self._runtime.dispatcher
        assert dispatcher is not None
        running = dispatcher.running.get(task_id)
        job = dispatcher.job(task_id)
        if running is None or job is None:
            return
        job.cancel_reason = "cancelled"
        job.cancel.set()
        if job.executor == "async":
            running.cancel()

    async def close(self) -> None:
        """At shutdown: stop retry timers, and wait for the writes of tasks whose request
        never released them (they stay pending for the next start)."""
        for timer, _job in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for held in list(self._held.values()):
            if held.write is not None:
                with contextlib.suppress(Exception):
                    await held.write
        self._held.clear()

    # -- running again ---------------------------------------------------------------------

    async def rerun(self, task: TaskRow) -> str | None:
        """Store a copy of a task as a new pending task (``source="retry"``) and start it
        here when this process runs its queue; the new id (or the live holder of its
        idempotency key)."""
        now = utcnow()
        copy = NewTask(
            id=new_task_id(),
            func_name=task.func_name,
            func_path=task.func_path,
            payload=task.payload,
            encrypted=task.encrypted,
            max_retries=task.max_retries,
            priority=task.priority,
            queue=task.queue,
            tags=task.tags,
            idempotency_key=task.idempotency_key,
            source="retry",
            owner=self._runtime.instance_id if task.queue in self._queues.served else None,
            requeue_on_interrupt=task.requeue_on_interrupt,
            created_at=now,
            next_attempt_at=now,
            schedule_id=task.schedule_id,
            retry_delay=task.retry_delay,
            retry_max_delay=task.retry_max_delay,
            run_key=task.run_key,
        )
        stored = await self._runtime.db.copy_task(task.id, task=copy)
        if stored == copy.id and copy.owner is not None:
            config = self._registry.config_or_none(copy.func_name, copy.func_path)
            self.hold_and_release(job_from_row(copy, config))
        return stored
