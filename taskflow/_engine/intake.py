"""How new tasks get in: rows built and written (group-committed on the loop), held
until their request's response is sent, then handed to the dispatcher; retries waiting
out their delay; what this process knows it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from taskflow._engine import tracing
from taskflow._engine.bridge import running_loop
from taskflow._engine.dependencies import Dependencies, dependency_ids, failure_mode
from taskflow._engine.job import Job, JobHooks, utcnow
from taskflow._engine.queues import Queues
from taskflow._engine.registry import TaskConfig, TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.submission import build_row, clean_tags, job_from_row, new_task_id
from taskflow._engine.submit_options import DEFAULT_SUBMIT, SubmitOptions
from taskflow._engine.throttle import limit_name
from taskflow._engine.unique import Uniqueness, unique_key
from taskflow._engine.unique import resolve as resolve_unique
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import Payloads
from taskflow._store import outbox
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import Dependency, NewTask, TaskRow
from taskflow.errors import (
    ConfigurationError,
    QueueFullError,
    TaskArgumentError,
    UnknownTaskFunction,
)

logger = logging.getLogger("taskflow")

RELEASE_TIMEOUT = 60.0  # seconds a request-held task waits for its response to finish

Submitted = tuple[str, "asyncio.Future[str] | None", bool]
# A task queued here whose row is not committed yet: its id and its pending write.
_Queued = tuple[str, "asyncio.Future[str] | None"]


@dataclass(slots=True)
class _Held:
    """A committed (or committing) task waiting for its request to finish."""

    job: Job
    write: asyncio.Future[str] | None
    since: float


@dataclass(frozen=True, slots=True)
class _OutboxOptions:
    """The options of a task written in the application's transaction."""

    idempotency_key: str | None
    tags: dict[str, Any] | None
    priority: int | None
    queue: str | None
    defer: float | None


class Intake:
    """Stores new tasks and starts them when they may start.

    Args:
        runtime: the manager's running state.
        registry: the registered functions (and automatic configs of importable ones).
        payloads: encodes (and encrypts) arguments.
        limits: the largest stored arguments.
        queues: the served queues and the ``max_size`` check.
        dependencies: stores tasks that wait for others, and starts them.
    """

    def __init__(
        self,
        runtime: Runtime,
        registry: TaskRegistry,
        payloads: Payloads,
        limits: Limits,
        queues: Queues,
        dependencies: Dependencies,
    ) -> None:
        self._runtime = runtime
        self._dependencies = dependencies
        self._registry = registry
        self._payloads = payloads
        self._limits = limits
        self._queues = queues
        self._held: dict[str, _Held] = {}
        # Keys of rows not committed yet: the id and its pending write, so that a request
        # repeating the key waits for that commit before it answers with the id.
        self._queued_keys: dict[str, _Queued] = {}
        self._queued_unique: dict[str, _Queued] = {}
        self._timers: dict[str, tuple[asyncio.TimerHandle, Job]] = {}
        self._memory_only_warned: set[str] = set()
        # taskflow's database URL, which an application's session may share (set at
        # startup); None while it is a private temporary one.
        self.shared_url: str | None = None
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
        unique: Uniqueness | None = None,
    ) -> tuple[NewTask, Job]:
        """A new task and the job that runs it (with a ``unique_key`` when ``unique``).

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
        task.limit_key = limit_name(config, args, kwargs)
        if unique is not None:
            task.unique_key = unique_key(
                task.func_name, args, kwargs, idempotency_key=idempotency_key, payload=payload
            )
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
        idempotency key (or ``unique_for``) matched an existing task, whose id is
        returned. ``options``
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
            ConfigurationError: ``unique_for`` or ``unique_states`` is invalid.
            DatabaseError: the database refused the write (sync callers only).
        """
        config = self.storable(func, options.config)
        unique = self.uniqueness(config, options.unique_for, options.unique_states)
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
            unique=unique,
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
            return self._submit_on_loop(task, job, unique)
        stored = asyncio.run_coroutine_threadsafe(self.insert(task, unique), loop).result()
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
        session: Any = None,
        unique_for: float | timedelta | None = None,
        unique_states: tuple[str, ...] | None = None,
        depends_on: Any = None,
        on_dependency_failure: str = "cancel",
        **kwargs: Any,
    ) -> str:
        """Store a task and start it, from async code outside a request.

        ``queue`` overrides the function's queue; a task on a queue this process does
        not run waits for a process that does (a standalone worker). ``defer`` delays
        the start by that many seconds (any process running the queue may take it).

        ``unique_for`` (seconds or a ``timedelta``; default: the function's) makes the
        task unique in a window: while a task of the same function with equal
        arguments (or the same ``idempotency_key``) created that recently has one of
        ``unique_states`` (default ``("pending", "running", "success")``), its id is
        returned and nothing is stored. The database enforces it across processes.

        Returns the task id once the row is committed (the existing task's id when
        ``idempotency_key`` matches a task that has not failed, or ``unique_for``
        matches a task).

        With ``session`` (the application's SQLAlchemy ``AsyncSession`` or
        ``AsyncConnection`` on taskflow's database), the row is written in that
        session's transaction instead (begun if none is) and nothing is committed: the
        task runs only once the application commits, and never if it rolls back (see
        ``docs/transactional-enqueue.md``). The id returned is then not committed yet,
        and a full queue raises ``QueueFullError`` without writing anything; it does not
        combine with ``unique_for``, ``unique_states`` or ``depends_on``
        (ConfigurationError). ``session`` is therefore never passed on to the task
        function.

        With ``depends_on`` (task ids, or records with an ``id``), the task is stored
        ``blocked`` and starts once every one of them has ended, whichever process ran
        them; when one did not succeed it ends ``cancelled`` with the reason, or runs
        anyway with ``on_dependency_failure="run"``. It reads their results with
        ``get_task_context().dependency_results`` (see ``docs/workflows.md``).

        Raises:
            NotStarted: the manager is not running.
            TaskNotFound: a ``depends_on`` id names no task (nothing is stored).
            QueueFullError: the queue is at its ``max_size`` (the task is stored as
                ``rejected``; a matching unique task is returned instead).
            TaskArgumentError: an argument, tag or key cannot be stored.
            ConfigurationError: ``unique_for`` or ``unique_states`` is invalid (nothing
                is stored).
            TypeError: ``session`` is not an async SQLAlchemy session or connection.
            ConfigurationError: ``session`` is bound to another database than
                taskflow's (nothing is written).
        """
        if session is not None:
            outbox.check_async_target(session)
            if unique_for is not None or unique_states is not None or depends_on is not None:
                raise ConfigurationError(
                    "enqueue(session=...) does not take unique_for, unique_states or "
                    "depends_on: use idempotency_key in the application's transaction"
                )
            options = _OutboxOptions(idempotency_key, tags, priority, queue, defer)
            task = self._outbox_task(func, args, kwargs, options)
            return await outbox.insert_async(
                session, task, database=self.shared_url, on_commit=self._wake_soon
            )
        config = self.storable(func)
        unique = self.uniqueness(config, unique_for, unique_states)
        task, job = self.new_task(
            config,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            source="manual",
            unique=unique,
        )
        self.route(task, job, queue=queue, defer=defer)
        self._runtime.require_loop()
        if depends_on is not None:
            if unique is not None:
                raise ConfigurationError("a task with depends_on cannot be unique_for too")
            return await self._enqueue_dependent(task, depends_on, on_dependency_failure)
        stored = await self.insert(task, unique)
        if stored == job.task_id and task.owner is not None:
            self.hold_and_release(job)
        return stored

    def enqueue_sync(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        session: Any,
        idempotency_key: str | None = None,
        tags: dict[str, Any] | None = None,
        priority: int | None = None,
        queue: str | None = None,
        defer: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Write a task in the transaction of the application's sync SQLAlchemy
        ``Session`` or ``Connection``, from sync code in any thread: what
        ``await enqueue(..., session=...)`` does for an async one. The transaction is
        begun if none is, as SQLAlchemy's autobegin would, and is not committed here:
        the task runs only once the application commits, and never if it rolls back.

        Returns the task id (the live holder's id when ``idempotency_key`` is taken).

        Raises:
            NotStarted: the manager is not running.
            QueueFullError: the queue is at its ``max_size`` (nothing is written).
            TaskArgumentError: an argument, tag or key cannot be stored.
            TypeError: ``session`` is not a sync SQLAlchemy ``Session`` or ``Connection``.
            ConfigurationError: ``session`` is bound to another database than
                taskflow's (nothing is written).
        """
        outbox.check_sync_target(session)
        options = _OutboxOptions(idempotency_key, tags, priority, queue, defer)
        task = self._outbox_task(func, args, kwargs, options)
        return outbox.insert_sync(
            session, task, database=self.shared_url, on_commit=self._wake_soon
        )

    def _outbox_task(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: _OutboxOptions,
    ) -> NewTask:
        """A task for the application's transaction: claimable by any process serving
        its queue (this one cannot know when, or whether, the application commits)."""
        self._runtime.require_loop()
        config = self.storable(func)
        if config.unique_for is not None:
            raise ConfigurationError(
                f"{config.name} is unique_for a window, which cannot be checked inside the "
                "application's transaction: enqueue it without session=, or give it an "
                "idempotency_key"
            )
        task, job = self.new_task(
            config,
            args,
            kwargs,
            idempotency_key=options.idempotency_key,
            tags=options.tags,
            priority=options.priority,
            source="manual",
        )
        self.route(task, job, queue=options.queue, defer=options.defer)
        task.owner = None
        self._check_outbox_room(task.queue)
        return task

    def _check_outbox_room(self, queue: str) -> None:
        """Refuse a task for a queue at its ``max_size`` (waiting tasks in the database;
        nothing is written, the application decides what its transaction does)."""
        config = self._queues.configs.get(queue)
        if config is None or config.max_size is None:
            return
        limit = config.max_size
        size = self._runtime.read(lambda store: store.count_waiting(queue, now=utcnow()))
        if size >= limit:
            message = f"queue {queue!r} is full: {size} tasks waiting, max_size is {limit}"
            raise QueueFullError(message, queue=queue, size=size, limit=limit)

    def _wake_soon(self) -> None:
        """Look for claimable tasks now (thread-safe): an application committed one."""
        loop = self._runtime.loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._queues.wake)

    async def _enqueue_dependent(self, task: NewTask, depends_on: Any, mode: str) -> str:
        """Store ``task`` blocked on ``depends_on`` (or as it is, for none)."""
        ids = dependency_ids(depends_on)
        task.on_dependency_failure = failure_mode(mode)
        if task.idempotency_key is not None:
            holder = await self._runtime.db.find_live_by_key(task.idempotency_key)
            if holder is not None:
                return holder
        if ids:
            task.blocked = True
            await self.wait_written(ids)
        else:
            task.on_dependency_failure = None
        edges = [Dependency(task.id, dep, position) for position, dep in enumerate(ids)]
        await self._dependencies.store([task], edges)
        return task.id

    async def wait_written(self, task_ids: Sequence[str]) -> None:
        """Wait until those of ``task_ids`` this process is still writing are committed."""
        for task_id in task_ids:
            held = self._held.get(task_id)
            if held is not None and held.write is not None:
                with contextlib.suppress(Exception):  # a failed write: the id is unknown
                    await asyncio.shield(held.write)

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

    def uniqueness(
        self, config: TaskConfig, unique_for: Any, unique_states: Any
    ) -> Uniqueness | None:
        """The uniqueness of one enqueue of ``config``'s function: its own options, else
        the function's; None for an ordinary task.

        Raises:
            ConfigurationError: an option is invalid.
        """
        if unique_for is None and unique_states is None and config.unique_for is None:
            return None
        return resolve_unique(
            unique_for=unique_for,
            unique_states=unique_states,
            default_for=config.unique_for,
            default_states=config.unique_states,
        )

    async def insert(self, task: NewTask, unique: Uniqueness | None = None) -> str:
        """Write ``task`` and wait for its commit; the id stored (another task's when the
        idempotency key is taken, or when ``unique`` matches an existing task)."""
        key = task.idempotency_key
        if key is not None and self._queues.bounded(task.queue):
            # An existing task with the key is returned, not refused by a full queue.
            existing = await self._runtime.db.find_live_by_key(key)
            if existing is not None:
                return existing
        if unique is not None:
            return await self._insert_unique(task, unique)
        return await self._queues.write_task(task)

    async def _insert_unique(self, task: NewTask, unique: Uniqueness) -> str:
        """Write a unique task; an existing match is returned, not refused by a full
        queue."""
        if self._queues.bounded(task.queue):
            assert task.unique_key is not None
            since = task.created_at - unique.window
            existing = await self._runtime.db.find_unique_task(
                task.unique_key, since=since, states=unique.states
            )
            if existing is not None:
                return existing
        return await self._queues.write_task(task, unique)

    def _submit_on_loop(self, task: NewTask, job: Job, unique: Uniqueness | None) -> Submitted:
        key = task.idempotency_key
        if key is not None:
            existing = self._live_key_holder(key)
            if existing is not None:
                return existing[0], existing[1], False
            # The id goes back to the caller before the commit: if another process wins
            # the key meanwhile, the store records this id as an alias of the winner.
            task.promised = True
        if unique is not None:
            return self._submit_unique_on_loop(task, job, unique)
        write = self._queues.write_task(task)
        self._remember_until_written(self._queued_keys, key, task.id, write)
        return self._hold(job, task.id, write)

    def _submit_unique_on_loop(self, task: NewTask, job: Job, unique: Uniqueness) -> Submitted:
        """:meth:`_submit_on_loop` for a unique task: the matching task's id when there
        is one; else this id, promised (as for idempotency keys), and its write."""
        existing = self._unique_holder(task, unique)
        if existing is not None:
            return existing[0], existing[1], False
        task.promised = True
        write = self._queues.write_task(task, unique)
        self._remember_until_written(self._queued_unique, task.unique_key, task.id, write)
        self._remember_until_written(self._queued_keys, task.idempotency_key, task.id, write)
        return self._hold(job, task.id, write)

    @staticmethod
    def _remember_until_written(
        queued: dict[str, _Queued], key: str | None, task_id: str, write: asyncio.Future[str]
    ) -> None:
        """Keep ``key`` → ``(task_id, write)`` in ``queued`` until ``write`` is done."""
        if key is not None:
            queued[key] = (task_id, write)
            write.add_done_callback(lambda _f: queued.pop(key, None))

    def _unique_holder(self, task: NewTask, unique: Uniqueness) -> _Queued | None:
        """The task ``task`` repeats, with its pending write when it is queued here and
        not committed yet; else one in the database (read on the bridge's thread; reads
        never wait on writers)."""
        key = task.unique_key
        assert key is not None
        queued = self._queued_unique.get(key)
        if queued is not None and "pending" in unique.states:
            return queued
        since = task.created_at - unique.window
        bridge = self._runtime.bridge
        assert bridge is not None
        found = bridge.call(
            lambda store: store.find_unique_task(key, since=since, states=unique.states)
        )
        return None if found is None else (found, None)

    def _live_key_holder(self, key: str) -> _Queued | None:
        """Who holds ``key``: a task queued here (with its pending write), else one in
        the database. The lookup blocks the loop for one read; reads never wait on
        writers (WAL, MVCC). The store's own blocking reader takes microseconds where
        it has one (a SQLite file); otherwise the read runs on the bridge's thread."""
        queued = self._queued_keys.get(key)
        if queued is not None:
            return queued
        reader = self._runtime.db.key_reader()
        if reader is not None:
            found = reader(key)
        else:
            bridge = self._runtime.bridge
            assert bridge is not None
            found = bridge.call(lambda store: store.find_live_by_key(key))
        return None if found is None else (found, None)

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
        copy = self.copy_row(task)
        stored = await self._runtime.db.copy_task(task.id, task=copy)
        if stored == copy.id and copy.owner is not None:
            config = self._registry.config_or_none(copy.func_name, copy.func_path)
            self.hold_and_release(job_from_row(copy, config))
        return stored

    def copy_row(self, task: TaskRow) -> NewTask:
        """A new pending task (``source="retry"``) that runs ``task`` again, owned here
        when this process runs its queue."""
        now = utcnow()
        return NewTask(
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
            limit_key=task.limit_key,
        )
