"""The :class:`TaskManager`: the one object users hold. It keeps the configuration,
starts and stops the engine, and offers every public method; the work is done by the
parts it wires together (``docs/architecture.md`` draws them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTasks
from starlette.requests import Request

from taskflow._compat.config import Config, config_database_url
from taskflow._compat.manager import apply_config, config_of, health
from taskflow._compat.taskstore import TaskStore
from taskflow._engine.actions import TaskActions
from taskflow._engine.coordination import Coordinator
from taskflow._engine.engine import Engine
from taskflow._engine.executors import ExecutorPool
from taskflow._engine.intake import Intake
from taskflow._engine.queues import Queues, queue_setup
from taskflow._engine.reader import TaskReader
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.settings import RetryDefaults, Settings, choose_url
from taskflow._engine.waiting import Waiters
from taskflow._engine.workflows import Workflows
from taskflow._facade import Setting, forward
from taskflow._fastapi import background
from taskflow._fastapi.timing import TaskOptions
from taskflow._payloads.crypto import make_cipher
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import Payloads
from taskflow._schedules.api import Schedules
from taskflow._schedules.once import OneOffs
from taskflow._store.protocol import Store
from taskflow._wiring import build_schedules, management_router
from taskflow.observers import build_chain
from taskflow.records import QueueConfig
from taskflow.schema.health import HealthResponse

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI


class TaskManager:
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
            A process that cannot renew its heartbeat stops its tasks at
            ``instance_timeout - 2 * heartbeat_interval`` (so that must be > 0).
        queues: the queues this process runs: a list of names, or a dict of name to
            :class:`~taskflow.QueueConfig` (per-queue ``concurrency`` and
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
        self.settings = Settings(
            retry=RetryDefaults(retries=retries, delay=delay, backoff=backoff, max_delay=None),
            max_concurrent_tasks=max_concurrent_tasks,
            shutdown_timeout=shutdown_timeout,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            instance_timeout=instance_timeout,
            retention_days=retention_days,
            retention_interval=retention_interval,
            endpoint_error=endpoint_error,
        )
        # fastapi-taskflow's settings that have no meaning here, kept as given.
        self.snapshot_interval, self.requeue_pending = snapshot_interval, requeue_pending
        self.merged_list_ttl = merged_list_ttl
        self.retry_replaces_original = retry_replaces_original
        self.instance_url, self.instance_tasks_prefix = instance_url, instance_tasks_prefix
        self.registry_ttl, self.registry_heartbeat = registry_ttl, registry_heartbeat
        self._cipher = make_cipher(encrypt_args_key)
        self.payloads = Payloads(self._cipher)
        self.limits = Limits(
            payload_bytes=max_payload_bytes,
            log_message_chars=max_log_message_chars,
            log_lines=max_log_lines_per_task,
        )
        self.logger = build_chain(
            loggers=loggers,
            log_file=log_file,
            log_file_max_bytes=log_file_max_bytes,
            log_file_backup_count=log_file_backup_count,
            log_file_mode=log_file_mode,
            log_lifecycle=log_lifecycle,
        )
        self.registry = TaskRegistry(self.settings.retry)
        self.task_options = TaskOptions()
        self._engine = engine = Engine(
            self.settings,
            url=choose_url(database_url, snapshot_db, snapshot_backend),
            auto_upgrade=auto_upgrade,
            registry=self.registry,
            payloads=self.payloads,
            limits=self.limits,
            observers=self.logger,
            queues=queue_setup(queues, max_size=max_size),
            pool_size=pool_size,
            sqlite_synchronous=sqlite_synchronous,
            max_sync_threads=max_sync_threads,
            max_process_workers=max_process_workers,
            process_shutdown_timeout=process_shutdown_timeout,
        )
        parts = build_schedules(engine, self.registry, self.payloads)
        self.task_groups, self.scheduler = parts.task_groups, parts.scheduler
        self.schedules, self._one_offs = parts.schedules, parts.one_offs
        self._runtime, self._intake, self._reader = engine.runtime, engine.intake, engine.reader
        self._actions, self._queues = engine.actions, engine.queues
        self._workflows = engine.workflows
        self._waiters = engine.waiters
        self.store = TaskStore(engine.reader)
        self._run_scheduler = True  # False under taskflow.testing: advance() fires slots
        self._compat_config = config
        if config is not None:
            apply_config(self.settings, config, database=self.database_url)
        if app is not None:
            self.init_app(app)

    # -- settings and state ------------------------------------------------------------

    max_concurrent_tasks: Setting[int | None] = Setting()
    shutdown_timeout: Setting[float] = Setting()
    poll_interval: Setting[float] = Setting()
    heartbeat_interval: Setting[float] = Setting()
    instance_timeout: Setting[float] = Setting()
    retention_days: Setting[float | None] = Setting()
    retention_interval: Setting[float] = Setting()
    endpoint_error: Setting[str] = Setting()
    statistics_history_runs: Setting[int] = Setting()
    allow_parallel: Setting[bool] = Setting()

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Retry settings of tasks registered without their own."""
        return self.settings.retry

    @property
    def queues(self) -> tuple[str, ...]:
        """The names of the queues this process runs (settable before startup)."""
        return self._engine.queues.served

    @queues.setter
    def queues(self, names: Sequence[str]) -> None:
        served, configs = queue_setup(names, max_size=None)
        self._engine.queues.served = served
        for name in served:
            self.queue_configs.setdefault(name, configs[name])

    @property
    def queue_configs(self) -> dict[str, QueueConfig]:
        """Every known queue's :class:`~taskflow.QueueConfig`, by name."""
        return self._engine.queues.configs

    @property
    def instance_id(self) -> str:
        """This process's instance id (owner of the tasks it enqueues)."""
        return self._engine.runtime.instance_id

    @property
    def db(self) -> Store:
        """The store (raises NotStarted before the first startup)."""
        return self._engine.runtime.db

    @property
    def executors(self) -> ExecutorPool:
        """The executor pool (async, thread and process)."""
        return self._engine.executors

    @property
    def coordinator(self) -> Coordinator:
        """The background loops of this instance (heartbeat, claims, rescue)."""
        return self._engine.coordinator

    @property
    def fernet(self) -> Any:
        """The active ``MultiFernet`` when ``encrypt_args_key`` is set, else None."""
        return self._cipher.fernet if self._cipher is not None else None

    @property
    def database_url(self) -> str:
        """The database URL in use, password masked."""
        return self._engine.masked_url

    @property
    def started(self) -> bool:
        """True between ``startup()`` and ``shutdown()``."""
        return self._engine.runtime.started

    is_running = started  # fastapi-task-manager's name

    @property
    def config(self) -> Config:
        """fastapi-task-manager's :class:`~taskflow.Config`: the one given (or a default
        one), its mapped fields showing the values this manager uses."""
        return config_of(self.settings, self._compat_config)

    # -- registration ------------------------------------------------------------------

    task = forward("registry", TaskRegistry.decorator)
    config_for = forward("registry", TaskRegistry.config_for)
    config_for_callable = forward("registry", TaskRegistry.config_for_callable)

    # -- FastAPI integration -----------------------------------------------------------

    async def get_tasks(
        self, request: Request, background_tasks: BackgroundTasks
    ) -> background.ManagedBackgroundTasks:
        """FastAPI dependency: a :class:`ManagedBackgroundTasks` sharing the request's
        native background task list."""
        return background.managed_for_request(self, request, background_tasks)

    @property
    def background_tasks(self) -> Callable[..., Any]:
        """Alias of :meth:`get_tasks`, for ``Depends(task_manager.background_tasks)``."""
        return self.get_tasks

    def init_app(self, app: FastAPI) -> None:
        """Run ``startup()``/``shutdown()`` with ``app``'s lifespan and install the
        durability middleware and ``BackgroundTasks`` injection. Safe to call twice."""
        background.install_on_app(self, app)

    append_to_app_lifecycle = init_app  # fastapi-task-manager's name

    def install(self, app: FastAPI) -> None:
        """Make bare ``BackgroundTasks`` parameters receive :class:`ManagedBackgroundTasks`
        (a process-wide patch, as in fastapi-taskflow), and call :meth:`init_app`."""
        background.patch_fastapi(self)
        self.init_app(app)

    def get_manager_router(self) -> APIRouter:
        """A router with fastapi-task-manager's management API (``POST /tasks``,
        ``GET /functions``, ``DELETE /tasks``) plus listing, pause, resume and trigger."""
        return management_router(
            self.schedules, self.settings, health=self.health_check, config=lambda: self.config
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the database, register this process, rescue tasks of dead processes and
        start the executor loops. Calling it twice does nothing.

        Raises:
            DatabaseError: the database cannot be reached (the URL is in the message).
            SchemaOutOfDate: the schema is stale and auto-upgrade is off.
        """
        if self.started:
            return
        loops = {"scheduler": self.scheduler.run} if self._run_scheduler else {}
        await self._engine.start(prepare=self.scheduler.sync_static, loops=loops)
        self._runtime.run_start_callbacks()

    when_started = forward("_runtime", Runtime.when_started)

    async def shutdown(self) -> None:
        """Stop taking work, let running tasks finish for ``shutdown_timeout`` seconds,
        then settle what is left: running tasks are re-queued when
        ``requeue_on_interrupt`` is set and end ``interrupted`` otherwise; pending
        tasks stay pending for the next start (or another process)."""
        await self._engine.stop()

    start = startup  # fastapi-task-manager's names
    stop = shutdown

    async def health_check(self) -> HealthResponse:
        """What ``GET /health`` returns: status, database reachability, this instance's
        id and start time (read from its row, so the read is the connectivity check)."""
        return await health(self._runtime)

    async def is_healthy(self) -> bool:
        """True when the manager is started and its database answers."""
        return (await self.health_check()).status == "healthy"

    # -- tasks: the engine's parts -------------------------------------------------------

    submit = forward("_intake", Intake.submit)
    enqueue = forward("_intake", Intake.enqueue)
    add_task = forward("_intake", Intake.enqueue)  # fastapi-taskflow's production guide
    enqueue_sync = forward("_intake", Intake.enqueue_sync)
    release = forward("_intake", Intake.release)
    held_ids = forward("_intake", Intake.held_ids)
    new_event = forward("_intake", Intake.new_event)
    attach_done = forward("_intake", Intake.attach_done)
    get_task = forward("_reader", TaskReader.get_task)
    wait = forward("_waiters", Waiters.wait)
    list_tasks = forward("_reader", TaskReader.list_tasks)
    cancel = forward("_actions", TaskActions.cancel)
    retry = forward("_actions", TaskActions.retry)
    delete = forward("_actions", TaskActions.delete)
    chain = forward("_workflows", Workflows.chain)
    group = forward("_workflows", Workflows.group)
    get_workflow = forward("_workflows", Workflows.get_workflow)
    list_workflows = forward("_workflows", Workflows.list_workflows)
    cancel_workflow = forward("_workflows", Workflows.cancel_workflow)
    retry_workflow = forward("_workflows", Workflows.retry_workflow)

    async def merged_list(self, *, limit: int | None = None) -> list[Any]:
        """Every task of every instance, newest first (without logs): fastapi-taskflow's
        merge of memory and history; here the database holds both, so one query."""
        return await self._reader.list_tasks(limit=limit)

    # -- queues, schedules and one-off firings -------------------------------------------

    queue_stats = forward("_queues", Queues.stats)
    read_queue_stats = forward("_queues", Queues.read_stats)
    update_queue_config = forward("_queues", Queues.update)
    pause_queue = forward("_queues", Queues.pause)
    resume_queue = forward("_queues", Queues.resume)
    paused_queues = forward("_queues", Queues.paused_queues)
    schedule = forward("schedules", Schedules.schedule)
    trigger_schedule = forward("schedules", Schedules.trigger_schedule)
    list_schedules = forward("schedules", Schedules.list_schedules)
    get_schedule = forward("schedules", Schedules.get_schedule)
    add_task_group = forward("schedules", Schedules.add_task_group)
    create_schedule = forward("schedules", Schedules.create_schedule)
    delete_schedule = forward("schedules", Schedules.delete_schedule)
    pause_schedule = forward("schedules", Schedules.pause_schedule)
    resume_schedule = forward("schedules", Schedules.resume_schedule)
    schedule_once = forward("_one_offs", OneOffs.schedule_once)
    cancel_scheduled = forward("_one_offs", OneOffs.cancel_scheduled)
    list_scheduled = forward("_one_offs", OneOffs.list_scheduled)
