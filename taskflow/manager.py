"""The :class:`TaskManager`: registry, lifecycle and the way tasks get in and out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.background import BackgroundTasks
from starlette.requests import Request

from taskflow._compat.config import Config, config_database_url
from taskflow._compat.manager import CompatAPI
from taskflow._compat.taskstore import TaskStore, record_from_row
from taskflow._engine.bridge import SYNC_TIMEOUT, SyncBridge, running_loop
from taskflow._engine.coordination import Coordinator
from taskflow._engine.dispatcher import Dispatcher
from taskflow._engine.executors import ExecutorPool
from taskflow._engine.ids import new_hex_id, task_id_forms
from taskflow._engine.queues import QueueAPI, QueueConfig, concurrency_limits, queue_setup
from taskflow._engine.registry import (
    TaskConfig,
    TaskRegistry,
    detect_executor,
    import_path,
    resolve,
)
from taskflow._engine.retry import validate as validate_retry
from taskflow._engine.runner import Job, JobHooks, Runner, utcnow
from taskflow._engine.submission import build_row, clean_tags, job_from_row, new_task_id
from taskflow._fastapi.timing import TaskOptions
from taskflow._payloads.crypto import make_cipher
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import Payloads, is_memory_only
from taskflow._schedules.api import ScheduleAPI
from taskflow._schedules.groups import TaskGroups
from taskflow._schedules.once import OnceAPI
from taskflow._schedules.scheduler import (
    Scheduler,
)
from taskflow._store.sql import SQLStore
from taskflow.errors import (
    ConfigurationError,
    DatabaseError,
    NotStarted,
    TaskArgumentError,
    TaskNotRerunnable,
    UnknownTaskFunction,
)
from taskflow.observers import LogEvent, build_chain
from taskflow.records import TaskRecord

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow._fastapi.background import ManagedBackgroundTasks

logger = logging.getLogger("taskflow")
F = TypeVar("F", bound=Callable[..., Any])

RELEASE_TIMEOUT = 60.0  # seconds a request-held task waits for its response to finish


@dataclass(slots=True)
class _Held:
    """A committed (or committing) task waiting for its request to finish."""

    job: Job
    write: asyncio.Future[str] | None
    since: float


class TaskManager(ScheduleAPI, CompatAPI, QueueAPI, OnceAPI):
    """Registers task functions and runs them durably from a SQL database.

    The positional parameters are fastapi-taskflow's, in its order; the keyword-only
    ones are taskflow's additions.

    Args:
        snapshot_db: path of a SQLite file; shorthand for ``database_url``.
        snapshot_backend: a database URL string, a ``SqliteBackend``/``PostgresBackend``
            from :mod:`taskflow.backends`, or an object with a ``url`` attribute
            (``RedisBackend``, ``MySQLBackend`` and custom ``SnapshotBackend`` subclasses
            raise ConfigurationError).
        snapshot_interval: accepted for compatibility; every change is written through
            at once, so there is nothing to snapshot.
        requeue_pending: accepted for compatibility; pending tasks always survive a
            restart (they are rows from the moment ``add_task`` returns).
        merged_list_ttl: accepted for compatibility; lists always read the database.
        retry_replaces_original: accepted for compatibility; a retried task's original
            record is always kept (history is never deleted by a retry).
        instance_url, instance_tasks_prefix, registry_ttl, registry_heartbeat: accepted
            for compatibility; every process reads the same database, so no peer
            fan-out is needed (instances register themselves with a heartbeat row).
        loggers: observers of log lines and lifecycle transitions.
        log_file, log_file_max_bytes, log_file_backup_count, log_file_mode, log_lifecycle:
            shorthand for a :class:`~taskflow.observers.FileLogger`.
        encrypt_args_key: a Fernet key, or a list of keys (the first encrypts, all
            decrypt) to encrypt arguments and results at rest.
        max_concurrent_tasks: limit of async tasks running at once (None: no limit).
        max_sync_threads: size of the dedicated thread pool for sync tasks.
        max_process_workers: size of the process pool for ``executor="process"`` tasks.
        process_shutdown_timeout: seconds process tasks get to finish at shutdown.
        retention_days: delete final tasks older than this many days.
        database_url: any SQLAlchemy URL for SQLite or PostgreSQL. With no database at
            all, a private temporary SQLite database is used and deleted at shutdown.
        retries, delay, backoff: defaults for ``@task`` and unregistered functions.
        auto_upgrade: migrate a stale schema at start (default: on for SQLite, off for
            PostgreSQL, where ``taskflow db upgrade`` belongs to the deploy).
        shutdown_timeout: seconds running tasks get to finish at shutdown.
        poll_interval: seconds between looks for claimable tasks.
        heartbeat_interval, instance_timeout: how often this process proves it is alive,
            and after how long without a heartbeat another process takes over its tasks.
        queues: the queues this process runs: a list of names, or a dict of name to
            :class:`~taskflow._engine.queues.QueueConfig` (per-queue ``concurrency`` and
            ``max_size``; a ``"default"`` queue is added if missing).
        max_size: shorthand for the ``"default"`` queue's ``max_size``: most tasks
            waiting in it before ``add_task`` raises ``QueueFullError``.
        retention_interval: seconds between retention passes.
        pool_size: database connections kept open (PostgreSQL).
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (``FULL`` or ``NORMAL``).
        max_payload_bytes: largest stored arguments (and result) of one task; larger
            arguments are refused at enqueue, a larger result fails the task.
        max_log_message_chars: longer ``task_log`` messages are truncated, with a marker.
        max_log_lines_per_task: further lines of a task (per attempt run here) are dropped
            after one line saying so.
        endpoint_error: what happens to a request's tasks that have not started when its
            endpoint raises or the request is cancelled: ``"run"`` (they run anyway) or
            ``"cancel"`` (they end ``cancelled`` with the reason).
        app: start and stop with this app (as ``init_app(app)``; fastapi-task-manager).
        config: a fastapi-task-manager :class:`~taskflow.Config`; its fields map onto
            these settings. Without ``database_url`` it uses ``config.database_url``,
            ``TASKFLOW_DATABASE_URL`` or the SQLite file ``taskflow.db``.

    Raises:
        ValueError: an argument is invalid (bad key, bad URL, negative sizes).
    """

    def __init__(
        self,
        snapshot_db: str | None = None,
        snapshot_backend: Any = None,
        snapshot_interval: float = 60.0,
        requeue_pending: bool = False,
        merged_list_ttl: float = 5.0,
        loggers: list[Any] | None = None,
        log_file: str | None = None,
        log_file_max_bytes: int = 10485760,
        log_file_backup_count: int = 5,
        log_file_mode: str = "rotate",
        log_lifecycle: bool = False,
        encrypt_args_key: Any = None,
        max_concurrent_tasks: int | None = None,
        max_sync_threads: int | None = None,
        max_process_workers: int | None = None,
        process_shutdown_timeout: float = 30.0,
        retention_days: float | None = None,
        *,
        database_url: str | None = None,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        auto_upgrade: bool | None = None,
        shutdown_timeout: float = 30.0,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        instance_timeout: float = 30.0,
        queues: Mapping[str, QueueConfig] | Sequence[str] = ("default",),
        max_size: int | None = None,
        retention_interval: float = 6 * 3600,
        pool_size: int = 10,
        sqlite_synchronous: str = "FULL",
        endpoint_error: str = "run",
        max_payload_bytes: int = 1_048_576,
        max_log_message_chars: int = 8_192,
        max_log_lines_per_task: int = 10_000,
        app: FastAPI | None = None,
        retry_replaces_original: bool = True,
        instance_url: str | None = None,
        instance_tasks_prefix: str = "",
        registry_ttl: int = 90,
        registry_heartbeat: int = 30,
        config: Config | None = None,
    ) -> None:
        if config is not None and not (database_url or snapshot_db or snapshot_backend):
            database_url = config_database_url(config)
        _check_positive(
            max_concurrent_tasks=max_concurrent_tasks,
            max_sync_threads=max_sync_threads,
            max_process_workers=max_process_workers,
        )
        validate_retry(retries=retries, delay=delay, backoff=backoff, max_delay=None, jitter=0.0)
        if endpoint_error not in ("run", "cancel"):
            raise ConfigurationError(
                f"endpoint_error must be 'run' or 'cancel', got {endpoint_error!r}"
            )
        if retention_days is not None and retention_days <= 0:
            raise ConfigurationError(f"retention_days must be > 0, got {retention_days}")
        self.registry = TaskRegistry()
        self.defaults = {"retries": retries, "delay": delay, "backoff": backoff, "max_delay": None}
        self.snapshot_interval = snapshot_interval
        self.requeue_pending = requeue_pending
        self.merged_list_ttl = merged_list_ttl
        self.retry_replaces_original = retry_replaces_original
        self.instance_url = instance_url
        self.instance_tasks_prefix = instance_tasks_prefix
        self.registry_ttl = registry_ttl
        self.registry_heartbeat = registry_heartbeat
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self.max_concurrent_tasks = max_concurrent_tasks
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.instance_timeout = instance_timeout
        self.queues, self.queue_configs = queue_setup(queues, max_size=max_size)
        self._uncommitted: dict[str, int] = {}  # rows of bounded queues not committed yet
        self._cipher = make_cipher(encrypt_args_key)
        self.payloads = Payloads(self._cipher)
        self.logger = build_chain(
            loggers=loggers,
            log_file=log_file,
            log_file_max_bytes=log_file_max_bytes,
            log_file_backup_count=log_file_backup_count,
            log_file_mode=log_file_mode,
            log_lifecycle=log_lifecycle,
        )
        self._configured_url = _choose_url(database_url, snapshot_db, snapshot_backend)
        self._url = self._configured_url or "sqlite+aiosqlite:///:memory:"
        self._ephemeral_dir: str | None = None
        self._pool_size = pool_size
        self._sqlite_synchronous = sqlite_synchronous
        self._auto_upgrade = auto_upgrade
        self.executors = ExecutorPool(
            max_sync_threads=max_sync_threads,
            max_process_workers=max_process_workers,
            process_shutdown_timeout=process_shutdown_timeout,
            route_log=self._log,
        )
        self.store = TaskStore(self)
        self.instance_id = new_hex_id()
        self.db: SQLStore = None  # type: ignore[assignment]  # set by startup()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: SyncBridge | None = None
        self._runner = Runner(self)
        self.scheduler = Scheduler(self)
        self.task_groups = TaskGroups()
        self.task_options = TaskOptions()
        self.limits = Limits(
            payload_bytes=max_payload_bytes,
            log_message_chars=max_log_message_chars,
            log_lines=max_log_lines_per_task,
        )
        self.endpoint_error = endpoint_error
        self._background_tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: Dispatcher | None = None
        self._held: dict[str, _Held] = {}
        self._start_callbacks: list[Callable[[], None]] = []  # see when_started()
        self._queued_keys: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.coordinator = Coordinator(self)
        self._apps: set[int] = set()
        self._memory_only_warned: set[str] = set()
        self._started = False
        self.giving_up_writes = False
        self._setup_compat(config, app)

    # -- properties ----------------------------------------------------------------------

    @property
    def fernet(self) -> Any:
        """The active ``MultiFernet`` when ``encrypt_args_key`` is set, else None."""
        return self._cipher.fernet if self._cipher is not None else None

    @property
    def database_url(self) -> str:
        """The database URL in use, password masked."""
        from taskflow._store.engine import mask

        return mask(self._url)

    @property
    def started(self) -> bool:
        """True between ``startup()`` and ``shutdown()``."""
        return self._started

    # -- registration ------------------------------------------------------------------

    def task(
        self,
        retries: int | None = None,
        delay: float | None = None,
        backoff: float | None = None,
        persist: bool = False,
        name: str | None = None,
        requeue_on_interrupt: bool = False,
        eager: bool = False,
        priority: int | None = None,
        executor: str | None = None,
        *,
        timeout: float | None = None,
        max_delay: float | None = None,
        jitter: float = 0.0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
        queue: str = "default",
    ) -> Callable[[F], F]:
        """Register a function as a task; the function is returned unchanged.

        Args:
            retries: attempts after the first failure (default: the manager's).
            delay: seconds before the first retry; backoff: its multiplier per retry.
            persist: accepted for compatibility (every task is persisted).
            name: the name stored on records (default: the function's name).
            requeue_on_interrupt: re-run the task if its process dies while it runs.
            eager: start as soon as ``add_task`` is called, not after the response.
            priority: higher runs first when tasks wait for a free slot.
            executor: ``"async"``, ``"thread"``, ``"process"`` or None to detect.
            timeout: seconds an attempt may run before it fails with ``TaskTimeout``.
                The attempt is cancelled (async), asked to stop (``is_cancelled()``);
                one that ignores it for 2 more seconds is settled anyway: its process
                worker is killed and replaced, its thread abandoned (threads cannot be
                killed; it no longer takes a pool slot).
            max_delay: cap of the retry delay; jitter: random extra delay (0..1 × delay).
            retry_on: exception types worth a retry (others fail at once).
            queue: the queue the task runs on.

        Raises:
            ValueError: incompatible executor, or invalid retry settings.
            DuplicateTaskName: another function already has this name.
        """

        def register(func: F) -> F:
            config = self._make_config(
                func,
                name=name,
                executor=executor,
                retries=retries,
                delay=delay,
                backoff=backoff,
                max_delay=max_delay,
                jitter=jitter,
                retry_on=retry_on,
                timeout=timeout,
                persist=persist,
                requeue_on_interrupt=requeue_on_interrupt,
                eager=eager,
                priority=priority,
                queue=queue,
            )
            self.registry.register(config)
            return func

        return register

    def _make_config(
        self, func: Callable[..., Any], *, name: str | None, executor: str | None, **options: Any
    ) -> TaskConfig:
        if not callable(func):
            raise ConfigurationError(f"@task needs a function, got {type(func).__name__}")
        for key in ("retries", "delay", "backoff", "max_delay"):
            if options[key] is None:
                options[key] = self.defaults[key]
        validate_retry(
            retries=options["retries"],
            delay=options["delay"],
            backoff=options["backoff"],
            max_delay=options["max_delay"],
            jitter=options["jitter"],
        )
        if options["timeout"] is not None and options["timeout"] <= 0:
            raise ConfigurationError(f"timeout must be > 0, got {options['timeout']}")
        retry_on = options.pop("retry_on")
        options["retry_on"] = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        kind = detect_executor(func, executor)
        path = import_path(func) or f"{getattr(func, '__module__', '?')}:{func!r}"
        return TaskConfig(
            name=name or func.__name__, func=func, path=path, executor=kind, **options
        )

    def config_for(self, func_name: str, func_path: str) -> TaskConfig:
        """The configuration to run a stored task with.

        Raises:
            UnknownTaskFunction: no registered function has this name and its import
                path does not resolve.
        """
        config = self.registry.get(func_name)
        if config is not None:
            return config
        func = resolve(func_path)
        config = self.registry.for_func(func) or self._auto_config(func)
        if config is None:
            raise UnknownTaskFunction(f"task function {func_name!r} is not registered")
        return config

    def config_for_callable(self, func: Callable[..., Any]) -> TaskConfig | None:
        """The config of a registered function, an automatic one for an importable
        unregistered function, or None for a callable that cannot be found again."""
        return self.registry.for_func(func) or self._auto_config(func)

    def _auto_config(self, func: Callable[..., Any]) -> TaskConfig | None:
        if import_path(func) is None or not callable(func):
            return None
        with contextlib.suppress(Exception):
            if resolve(import_path(func) or "") is func:
                return self._make_config(
                    func,
                    name=import_path(func),
                    executor=None,
                    retries=None,
                    delay=None,
                    backoff=None,
                    max_delay=None,
                    jitter=0.0,
                    retry_on=(Exception,),
                    timeout=None,
                    persist=False,
                    requeue_on_interrupt=False,
                    eager=False,
                    priority=None,
                    queue="default",
                )
        return None

    # -- FastAPI integration -----------------------------------------------------------

    async def get_tasks(
        self, request: Request, background_tasks: BackgroundTasks
    ) -> ManagedBackgroundTasks:
        """FastAPI dependency: a :class:`ManagedBackgroundTasks` sharing the request's
        native background task list."""
        from taskflow._fastapi.background import managed_for_request

        return managed_for_request(self, request, background_tasks)

    @property
    def background_tasks(self) -> Callable[..., Any]:
        """Alias of :meth:`get_tasks`, for ``Depends(task_manager.background_tasks)``."""
        return self.get_tasks

    def init_app(self, app: FastAPI) -> None:
        """Run ``startup()``/``shutdown()`` with ``app``'s lifespan and install the
        durability middleware and ``BackgroundTasks`` injection. Safe to call twice."""
        from taskflow._fastapi.background import install_on_app

        if id(app) in self._apps:
            return
        self._apps.add(id(app))
        install_on_app(self, app)

    def install(self, app: FastAPI) -> None:
        """Make bare ``BackgroundTasks`` parameters receive :class:`ManagedBackgroundTasks`
        (a process-wide patch, as in fastapi-taskflow), and call :meth:`init_app`."""
        from taskflow._fastapi.background import patch_fastapi

        patch_fastapi(self)
        self.init_app(app)

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the database, register this process, rescue tasks of dead processes and
        start the executor loops. Calling it twice does nothing.

        Raises:
            DatabaseError: the database cannot be reached (the URL is in the message).
            SchemaOutOfDate: the schema is stale and auto-upgrade is off.
        """
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self.giving_up_writes = False
        if self._configured_url is None:
            self._ephemeral_dir = tempfile.mkdtemp(prefix="taskflow-")
            self._url = f"sqlite+aiosqlite:///{self._ephemeral_dir}/tasks.db"
        auto = self._auto_upgrade
        if auto is None:
            auto = self._url.startswith("sqlite")
        self.db = SQLStore(
            self._url, pool_size=self._pool_size, sqlite_synchronous=self._sqlite_synchronous
        )
        await self.db.open(auto_upgrade=auto)
        await self.restore_queue_configs()
        self._bridge = SyncBridge(self._url)
        self._dispatcher = Dispatcher(
            run=self._runner.run,
            capacity={
                "async": self.max_concurrent_tasks,
                "thread": self.executors.capacity("thread"),
                "process": self.executors.capacity("process"),
            },
            queue_limits=concurrency_limits(self.queue_configs),
        )
        if self.logger is not None:
            await self.logger.open()
        self._started = True
        try:
            await self.scheduler.sync_static()
            await self.coordinator.start()
        except BaseException:
            # Half started is not started: undo what ran, so the caller can retry.
            with contextlib.suppress(Exception):
                await self.shutdown()
            raise
        self._run_start_callbacks()

    def when_started(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop at the end of the next :meth:`startup`
        (tasks added before startup use this); it is called at once when running."""
        if self._started:
            callback()
        else:
            self._start_callbacks.append(callback)

    def _run_start_callbacks(self) -> None:
        callbacks, self._start_callbacks = self._start_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one bad early task must not stop startup
                logger.exception("a task added before startup could not be stored")

    async def shutdown(self) -> None:
        """Stop taking work, let running tasks finish for ``shutdown_timeout`` seconds,
        then settle what is left: running tasks are re-queued when
        ``requeue_on_interrupt`` is set and end ``interrupted`` otherwise; pending
        tasks stay pending for the next start (or another process)."""
        if not self._started:
            return
        self._started = False
        await self.coordinator.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self._drain()
        await self._settle_self()
        await self._close_resources()

    async def _drain(self) -> None:
        assert self._dispatcher is not None
        for held in list(self._held.values()):  # requests that never released theirs
            if held.write is not None:
                with contextlib.suppress(Exception):
                    await held.write
        self._held.clear()
        self._dispatcher.close()
        self._cancel_unshielded()
        if not await self._dispatcher.wait_idle(self.shutdown_timeout):
            for job_id, running in list(self._dispatcher.running.items()):
                logger.warning("task %s still running at shutdown; settling it", job_id)
                running.cancel()
            await self._dispatcher.wait_idle(5.0)
        await self.executors.shutdown()

    def _cancel_unshielded(self) -> None:
        """Tasks started with ``shield=False`` stop as soon as shutdown begins."""
        assert self._dispatcher is not None
        for task_id, running in list(self._dispatcher.running.items()):
            job = self._dispatcher.job(task_id)
            if job is not None and job.hooks is not None and not job.hooks.shield:
                running.cancel()

    async def _settle_self(self) -> None:
        self.giving_up_writes = True
        try:
            await self.db.settle_instance(
                self.instance_id, now=utcnow(), reason="the process shut down while it ran"
            )
        except DatabaseError as exc:
            logger.error("could not settle this instance's tasks at shutdown: %s", exc)

    async def _close_resources(self) -> None:
        if self.logger is not None:
            await self.logger.close()
        await self.db.close()
        if self._bridge is not None:
            await asyncio.to_thread(self._bridge.close)
            self._bridge = None
        if self._ephemeral_dir is not None:
            shutil.rmtree(self._ephemeral_dir, ignore_errors=True)
            self._ephemeral_dir = None

    # -- enqueueing --------------------------------------------------------------------

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        tags: dict[str, Any] | None = None,
        priority: int | None = None,
        source: str = "manual",
        config: TaskConfig | None = None,
        hooks: JobHooks | None = None,
        queue: str | None = None,
        in_memory: bool = False,
        task_id: str | None = None,
    ) -> tuple[str, asyncio.Future[str] | None, bool]:
        """Store a new task from any thread; the row is committed (or queued for the next
        group commit on the loop thread) and held until :meth:`release`.

        Returns ``(task_id, pending_write, created)``; ``created`` is False when an
        idempotency key matched an existing task, whose id is returned. ``queue``
        overrides the function's queue. With ``in_memory``, a callable that cannot be
        imported back or arguments the codec cannot store do not raise: the task runs in
        this process from memory, and its row is marked as not re-runnable. ``task_id``
        is the id to store it under (one promised before startup); default a new one.

        Raises:
            NotStarted: the manager is not running.
            QueueFullError: the queue is at its ``max_size`` (the task is stored as
                ``rejected``).
            TaskArgumentError: an argument, tag or key cannot be stored.
            DatabaseError: the database refused the write (sync callers only).
        """
        config = self._storable(func, config)
        row, job = self._new_row(
            config,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            source=source,
            in_memory=in_memory,
            task_id=task_id,
        )
        job.hooks = hooks
        if queue is not None:
            _route(row, job, queue=queue, defer=None, served=self.queues)
            row["owner"] = self.instance_id if queue in self.queues else None
        if not config.registered or job.memory is not None:
            job.config = config
            row["owner"] = self.instance_id  # only this process can run it
        loop = self._require_loop()
        if running_loop() is loop:
            return self._submit_on_loop(row, job)
        stored = asyncio.run_coroutine_threadsafe(self._insert(row), loop).result()
        return self._hold(job, stored, None)

    async def _insert(self, row: dict[str, Any]) -> str:
        key = row["idempotency_key"]
        if key is not None and self._bounded(row["queue"]):
            # An existing task with the key is returned, not refused by a full queue.
            existing = await self.db.find_live_by_key(key)
            if existing is not None:
                return existing
        return await self.write_task(row)

    def _bounded(self, queue: str) -> bool:
        config = self.queue_configs.get(queue)
        return config is not None and config.max_size is not None

    def _submit_on_loop(self, row: dict[str, Any], job: Job) -> tuple[str, Any, bool]:
        key = row["idempotency_key"]
        if key is not None:
            existing = self._live_key_holder(key)
            if existing is not None:
                return existing, None, False
            # The id goes back to the caller before the commit: if another process wins
            # the key meanwhile, the store records this id as an alias of the winner.
            row["_promised"] = True
        write = self.write_task(row)
        if key is not None:
            self._queued_keys[key] = row["id"]
            write.add_done_callback(lambda _f: self._queued_keys.pop(key, None))
        return self._hold(job, row["id"], write)

    def _live_key_holder(self, key: str) -> str | None:
        """Who holds ``key``: a task queued here, else one in the database. The lookup
        blocks the loop for one read; reads never wait on writers (WAL, MVCC)."""
        queued = self._queued_keys.get(key)
        if queued is not None:
            return queued
        assert self._bridge is not None
        return self._bridge.call(lambda store: store.find_live_by_key(key))

    def _hold(self, job: Job, stored_id: str, write: Any) -> tuple[str, Any, bool]:
        if stored_id != job.task_id:
            return stored_id, None, False
        if job.config is not None or job.queue in self.queues:
            self._held[job.task_id] = _Held(job, write, time.monotonic())
        return job.task_id, write, True

    def _new_row(
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
    ) -> tuple[dict[str, Any], Job]:
        clean = clean_tags(tags)
        payload, memory_only = self._call_payload(config, args, kwargs, in_memory=in_memory)
        row = build_row(
            config,
            task_id=task_id or new_task_id(),
            payload=self.limits.check_payload(payload, what=f"arguments of {config.name}"),
            encrypted=self.payloads.encrypted,
            tags=clean,
            priority=priority,
            idempotency_key=idempotency_key,
            source=source,
            now=utcnow(),
            max_retries=config.retries,
            owner=self.owner_for(config),
        )
        job = job_from_row(row, config)
        if memory_only:
            job.memory = (args, kwargs)
        return row, job

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
            return self.payloads.encode_memory_call(args, kwargs), True
        try:
            return self.payloads.encode_call(args, kwargs), False
        except TaskArgumentError as exc:
            if not in_memory or config.executor == "process":
                raise
            self._warn_memory_only(config.name, exc)
            return self.payloads.encode_memory_call(args, kwargs), True

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

    def _storable(self, func: Callable[..., Any], config: TaskConfig | None) -> TaskConfig:
        """``config``, else the one ``func`` is stored with.

        Raises:
            UnknownTaskFunction: ``func`` cannot be imported back by name.
        """
        config = config or self.config_for_callable(func)
        if config is None:
            raise UnknownTaskFunction(f"{func!r} cannot be stored as a task: not importable")
        return config

    def owner_for(self, config: TaskConfig) -> str | None:
        """This instance for tasks on a queue it runs; None (claimable by any instance
        running the queue, e.g. a standalone worker) otherwise."""
        return self.instance_id if config.queue in self.queues else None

    def known_task_ids(self) -> set[str]:
        """Tasks this process holds, runs, queues or will retry."""
        known = set(self._held) | set(self._timers)
        if self._dispatcher is not None:
            known |= set(self._dispatcher.running) | self._dispatcher.waiting_ids()
        return known

    def held_ids(self, task_ids: list[str]) -> list[str]:
        """Those of ``task_ids`` that are stored but not started yet."""
        return [task_id for task_id in task_ids if task_id in self._held]

    def new_event(self) -> Any:
        """An ``anyio.Event`` made on the manager's loop (callable from any thread)."""
        return self._on_loop(anyio.Event)

    def attach_done(self, task_id: str, hooks: JobHooks, handle: Any) -> None:
        """Give a held task a future that resolves when it ends."""
        hooks.done = self._on_loop(lambda: asyncio.get_running_loop().create_future())
        handle.done = hooks.done

    def _on_loop(self, factory: Callable[[], Any]) -> Any:
        loop = self._require_loop()
        if running_loop() is loop:
            return factory()

        async def make() -> Any:
            return factory()

        return asyncio.run_coroutine_threadsafe(make(), loop).result(SYNC_TIMEOUT)

    def release(self, task_id: str) -> None:
        """Let a held task start (thread-safe); called when its response has been sent."""
        loop = self._loop
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

    def _release_now(self, task_id: str) -> None:
        held = self._held.pop(task_id, None)
        if held is None or self._dispatcher is None:
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
        assert self._dispatcher is not None
        self._dispatcher.submit(held.job)

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
            QueueFullError: the queue is at its ``max_size`` (the task is stored as
                ``rejected``).
        """
        row, job = self._new_row(
            self._storable(func, None),
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            source="manual",
        )
        _route(row, job, queue=queue, defer=defer, served=self.queues)
        self._require_loop()
        stored = await self._insert(row)
        if stored == job.task_id and row["owner"] is not None:
            self.hold_and_release(job)
        return stored

    async def add_task(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
        """Alias of :meth:`enqueue`, same arguments and result.

        fastapi-taskflow's production guide awaits ``task_manager.add_task(fn, ...,
        queue="reports")`` from routes (fastapi-taskflow itself has no such method); here
        it stores and starts the task as :meth:`enqueue` does.

        Raises:
            QueueFullError: the queue is at its ``max_size``.
        """
        return await self.enqueue(func, *args, **kwargs)

    def hold_and_release(self, job: Job) -> None:
        """Start a job whose row is already committed (or queued before it in the same
        group commit)."""
        self._held[job.task_id] = _Held(job, None, time.monotonic())
        self._release_now(job.task_id)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if not self._started or self._loop is None:
            raise NotStarted(
                "the TaskManager is not started: call task_manager.init_app(app) "
                "or await task_manager.startup()"
            )
        return self._loop

    # -- reading and acting on tasks -----------------------------------------------------

    async def get_task(self, task_id: str, *, logs: bool = True) -> TaskRecord | None:
        """The task with this id read from the database (with its logs and attempts),
        or None. Like every method taking a task id, it accepts the id as a 36-character
        UUID string or as 32 hex digits, in any case, whichever shape the task was stored
        with (new ids are UUID strings; see :mod:`taskflow._engine.ids`)."""
        self._require_loop()
        row = await self.db.get_task(task_id)
        if row is None:
            return None
        log_rows = await self.db.get_logs(row["id"]) if logs else []
        attempts = await self.db.get_attempts(row["id"])
        return self._with_executor(record_from_row(row, self.payloads, log_rows, attempts))

    def _with_executor(self, record: TaskRecord) -> TaskRecord:
        """Fill ``record.executor`` from the registered function, when known here."""
        config = self.registry.get(record.func_name)
        record.executor = config.executor if config is not None else None
        return record

    async def list_tasks(
        self, *, status: str | None = None, func_name: str | None = None, limit: int | None = 100
    ) -> list[TaskRecord]:
        """Newest tasks first (without logs); ``limit=None`` lists them all."""
        self._require_loop()
        rows = await self.db.list_tasks(status=status, func_name=func_name, limit=limit)
        return [self._with_executor(record_from_row(row, self.payloads, [], [])) for row in rows]

    async def merged_list(self, *, limit: int | None = None) -> list[TaskRecord]:
        """Every task of every instance, newest first (without logs).

        fastapi-taskflow merged its in-memory tasks with its backend's history; in
        taskflow the database holds every task of every instance, so this is one query.

        Args:
            limit: at most this many tasks (None: all of them).
        """
        return await self.list_tasks(limit=limit)

    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool:
        """Cancel a task. A pending task never runs; a running async task is cancelled;
        a running thread or process task is flagged (``get_task_context().is_cancelled()``)
        and ends ``cancelled``. Returns False when the task is already final or unknown."""
        self._require_loop()
        forms = task_id_forms(task_id)  # the in-memory maps are keyed by the stored shape
        for held in [self._held.pop(form, None) for form in forms]:
            if held is not None and held.write is not None:
                with contextlib.suppress(Exception):  # a failed write leaves nothing to cancel
                    await held.write  # the row may still be waiting for its group commit
        previous = await self.db.cancel_task(task_id, now=utcnow(), reason=reason)
        for timer in [self._timers.pop(form, None) for form in forms]:
            if timer is not None:
                timer.cancel()
        if previous == "running":
            for form in forms:
                self.cancel_running(form)
        return previous in ("pending", "running")

    def cancel_running(self, task_id: str) -> None:
        """Stop a task running in this process (async: cancelled; thread and process:
        flagged for ``is_cancelled()``)."""
        assert self._dispatcher is not None
        running = self._dispatcher.running.get(task_id)
        job = self._dispatcher.job(task_id)
        if running is None or job is None:
            return
        job.cancel_reason = "cancelled"
        job.cancel.set()
        if job.executor == "async":
            running.cancel()

    async def retry(self, task_id: str) -> str | None:
        """Run a task again as a new task (``source="retry"``) with the same function,
        arguments, tags, priority and idempotency key. Returns the new id, or None when
        ``task_id`` does not exist.

        Raises:
            TaskNotRerunnable: the task ran from memory (a closure, or arguments that
                could not be stored), so there is nothing stored to run again.
        """
        self._require_loop()
        row = await self.db.get_task(task_id)
        if row is None:
            return None
        if is_memory_only(row["payload"]):
            raise TaskNotRerunnable(
                f"task {row['id']} ({row['func_name']}) cannot be retried: its function or "
                "arguments lived only in the memory of the process that scheduled it; "
                "schedule it again from your code"
            )
        copy = {
            **dict(row),
            "id": new_task_id(),
            "status": "pending",
            "attempts": 0,
            "result": None,
            "error": None,
            "traceback": None,
            "source": "retry",
            "owner": self.instance_id if row["queue"] in self.queues else None,
            "cancel_requested": False,
            "created_at": utcnow(),
            "started_at": None,
            "finished_at": None,
            "next_attempt_at": utcnow(),
            "schedule_slot": None,
        }
        stored = await self.db.copy_task(task_id, row=copy)
        if stored == copy["id"] and copy["owner"] is not None:
            config = self.config_or_none(copy["func_name"], copy["func_path"])
            self.hold_and_release(job_from_row(copy, config))
        return stored

    def config_or_none(self, func_name: str, func_path: str) -> TaskConfig | None:
        """:meth:`config_for`, or None when the function is unknown here."""
        try:
            return self.config_for(func_name, func_path)
        except UnknownTaskFunction:
            return None

    async def delete(self, task_id: str) -> bool:
        """Delete a final task with its logs; False if it is unknown or not final."""
        self._require_loop()
        return await self.db.delete_task(task_id)

    # -- running: hooks used by the runner -------------------------------------------------

    def log_sink(self, job: Job) -> Callable[[str, str, dict[str, Any]], None]:
        """A thread-safe ``task_log`` target for ``job``."""
        loop = self._loop
        assert loop is not None

        def sink(level: str, message: str, extra: dict[str, Any]) -> None:
            if running_loop() is loop:
                self._log(job.task_id, level, message, extra, job)
            else:
                loop.call_soon_threadsafe(self._log, job.task_id, level, message, extra, job)

        return sink

    def _log(
        self, task_id: str, level: str, message: str, extra: dict[str, Any], job: Job | None = None
    ) -> None:
        job = job or (self._dispatcher.job(task_id) if self._dispatcher else None)
        message = self._admit_log(job, str(message))
        if message is None:
            return
        now = utcnow()
        row = {
            "task_id": task_id,
            "at": now,
            "level": str(level)[:10],
            "message": message,
            "extra": _json_safe(extra),
        }
        try:
            write = self.db.append_log(row)
        except NotStarted:
            return
        write.add_done_callback(_report_log_failure)
        if self.logger is not None:
            self.logger.emit(
                LogEvent(
                    task_id=task_id,
                    func_name=job.func_name if job else "",
                    message=message,
                    level=level,
                    timestamp=now,
                    attempt=max(job.attempt - 1, 0) if job else 0,
                    tags=job.tags if job else {},
                    extra=row["extra"],
                )
            )

    def _admit_log(self, job: Job | None, message: str) -> str | None:
        """The message to store (truncated), or None once the task's line budget is
        spent; the line that spends it says so."""
        if job is not None:
            job.log_lines += 1
            if job.log_lines > self.limits.log_lines + 1:
                return None
            if job.log_lines == self.limits.log_lines + 1:
                return f"log limit of {self.limits.log_lines} lines reached; later lines dropped"
        return self.limits.truncate_log(message)

    def schedule_retry(self, job: Job, delay: float) -> None:
        """Start ``job`` again after ``delay`` seconds (it stays pending, owned by us)."""
        assert self._loop is not None and self._dispatcher is not None
        dispatcher = self._dispatcher

        def fire() -> None:
            self._timers.pop(job.task_id, None)
            dispatcher.submit(job)

        self._timers[job.task_id] = self._loop.call_later(delay, fire)

    # -- background loops ------------------------------------------------------------------


# -- helpers ---------------------------------------------------------------------------------


def _route(
    row: dict[str, Any],
    job: Job,
    *,
    queue: str | None,
    defer: float | None,
    served: Sequence[str],
) -> None:
    """Apply ``enqueue``'s queue and defer options to a new row and its job."""
    if queue is not None:
        row["queue"] = job.queue = queue
    if defer is not None:
        if defer < 0:
            raise ConfigurationError(f"defer must be >= 0 seconds, got {defer}")
        row["next_attempt_at"] = row["created_at"] + timedelta(seconds=defer)
    if defer or row["queue"] not in served:
        row["owner"] = None


def _report_log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a task log line was not stored: %s", future.exception())


def _json_safe(extra: dict[str, Any]) -> dict[str, Any]:
    import json

    safe: dict[str, Any] = {}
    for key, value in extra.items():
        try:
            json.dumps(value)
            safe[str(key)] = value
        except (TypeError, ValueError):
            safe[str(key)] = str(value)
    return safe


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ConfigurationError(f"{name} must be >= 1 or None, got {value}")


def _choose_url(
    database_url: str | None, snapshot_db: str | None, snapshot_backend: Any
) -> str | None:
    """The configured URL, or None for a private temporary database."""
    url = database_url or _backend_url(snapshot_backend)
    if url is not None:
        _refuse_plain_path(url, "database_url" if database_url else "snapshot_backend")
    if url is None and snapshot_db is not None:
        url = f"sqlite+aiosqlite:///{snapshot_db}"
    if url is None:
        return None
    from taskflow._store.engine import is_memory_sqlite, normalize_url

    # An in-memory database cannot be shared by the connections taskflow uses, so it
    # becomes a private temporary file, deleted at shutdown.
    return None if is_memory_sqlite(normalize_url(url)) else url


def _refuse_plain_path(url: Any, parameter: str) -> None:
    """Raise a helpful ConfigurationError for a file name given where a URL belongs."""
    if isinstance(url, str) and "://" not in url and ":" not in url.split("/", 1)[0]:
        raise ConfigurationError(
            f"{parameter}={url!r} is a file name, not a database URL: for a SQLite file "
            f"pass snapshot_db={url!r} or {parameter}='sqlite:///{url}' "
            "(PostgreSQL: postgresql://user:password@host/dbname)",
            field=parameter,
        )


def _backend_url(backend: Any) -> str | None:
    if backend is None:
        return None
    if isinstance(backend, str):
        return backend
    resolve = getattr(backend, "taskflow_database_url", None)
    if callable(resolve):  # taskflow.backends: a URL, or a ConfigurationError saying why not
        return str(resolve())
    for attribute in ("url", "database_url", "dsn"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return value
    raise ConfigurationError(
        f"snapshot_backend {type(backend).__name__} is not supported: pass a database URL "
        "(SQLite or PostgreSQL) as database_url="
    )
