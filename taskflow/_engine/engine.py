"""The engine: the parts that store, hold, dispatch, run and settle tasks, wired
together, and their start and stop.

The manager builds one :class:`Engine` and adds the schedules on top of it; nothing in
here knows about schedules, FastAPI or the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from taskflow._engine import dbclock
from taskflow._engine.actions import TaskActions
from taskflow._engine.bridge import SyncBridge
from taskflow._engine.coordination import Coordinator
from taskflow._engine.dependencies import Dependencies
from taskflow._engine.dispatcher import Dispatcher
from taskflow._engine.executors import ExecutorPool
from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.progress import ProgressWriter
from taskflow._engine.queues import Queues, concurrency_limits
from taskflow._engine.reader import TaskReader
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runner import Runner
from taskflow._engine.runtime import Runtime
from taskflow._engine.settings import Settings
from taskflow._engine.tasklog import TaskLog
from taskflow._engine.waiting import Waiters
from taskflow._engine.workflows import Workflows
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import Payloads
from taskflow._store.engine import mask
from taskflow._store.ids import new_hex_id
from taskflow._store.protocol import Store
from taskflow._store.sql import SQLStore
from taskflow.errors import DatabaseError
from taskflow.observers import LoggerChain
from taskflow.records import QueueConfig

logger = logging.getLogger("taskflow")


class Engine:
    """The engine's parts, each given only what it uses.

    Args:
        settings: the manager's settings (read when acting, so later changes apply).
        url: the database URL; None for a private temporary SQLite database, made at
            startup and deleted at shutdown.
        auto_upgrade: migrate a stale schema at start (None: only SQLite).
        registry, payloads, limits, observers: shared with the manager.
        queues: the served queue names and every queue's config.
        pool_size, sqlite_synchronous: of the store.
        max_sync_threads, max_process_workers, process_shutdown_timeout: of the
            executor pool.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None,
        auto_upgrade: bool | None,
        registry: TaskRegistry,
        payloads: Payloads,
        limits: Limits,
        observers: LoggerChain | None,
        queues: tuple[tuple[str, ...], dict[str, QueueConfig]],
        pool_size: int,
        sqlite_synchronous: str,
        max_sync_threads: int | None,
        max_process_workers: int | None,
        process_shutdown_timeout: float,
    ) -> None:
        self.settings = settings
        self.configured_url = url
        self.url = url or "sqlite+aiosqlite:///:memory:"
        self._pool_size, self._sqlite_synchronous = pool_size, sqlite_synchronous
        self._auto_upgrade = auto_upgrade
        self._ephemeral_dir: str | None = None
        self._observers = observers
        self.runtime = runtime = Runtime(new_hex_id())
        self.queues = Queues(runtime, *queues)
        self.dependencies = Dependencies(runtime, registry, self.queues)
        self.intake = Intake(runtime, registry, payloads, limits, self.queues, self.dependencies)
        self.tasklog = TaskLog(runtime, limits, observers)
        self.progress = ProgressWriter(runtime)
        self.reader = TaskReader(runtime, payloads, registry)
        self.waiters = Waiters(self.reader)
        self.executors = ExecutorPool(
            max_sync_threads=max_sync_threads,
            max_process_workers=max_process_workers,
            process_shutdown_timeout=process_shutdown_timeout,
            route_log=self.tasklog.write,
            route_progress=self.progress.report,
        )
        self.runner = Runner(
            runtime,
            executors=self.executors,
            payloads=payloads,
            limits=limits,
            registry=registry,
            observers=observers,
            log_sink=self.tasklog.sink,
            progress=self.progress,
            retry_later=self.intake.retry_later,
            ended=self.waiters.ended,
            on_final=self.dependencies.ended,
            poll_interval=settings.poll_interval,
        )
        self.actions = TaskActions(runtime, self.intake, self.dependencies)
        self.workflows = Workflows(runtime, self.intake, self.dependencies, self.actions.cancel)
        self.coordinator = Coordinator(
            runtime,
            settings=settings,
            queues=self.queues,
            executors=self.executors,
            intake=self.intake,
            registry=registry,
            waiters=self.waiters.notified,
            sweep=self.dependencies.sweep,
        )
        self.queues.wake = self.coordinator.wake

    @property
    def masked_url(self) -> str:
        """The database URL in use, password masked."""
        return mask(self.url)

    async def start(
        self,
        *,
        prepare: Callable[[], Awaitable[None]],
        loops: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
    ) -> None:
        """Open the store, make the dispatcher, run ``prepare()`` (storing static
        schedules) and start the coordinator with ``loops`` beside its own.

        Raises:
            DatabaseError: the database cannot be reached.
            SchemaOutOfDate: the schema is stale and auto-upgrade is off.
        """
        runtime = self.runtime
        runtime.loop = asyncio.get_running_loop()
        runtime.giving_up_writes = False
        if self.configured_url is None:
            self._ephemeral_dir = tempfile.mkdtemp(prefix="taskflow-")
            self.url = f"sqlite+aiosqlite:///{self._ephemeral_dir}/tasks.db"
        auto = self.url.startswith("sqlite") if self._auto_upgrade is None else self._auto_upgrade
        store = SQLStore(
            self.url, pool_size=self._pool_size, sqlite_synchronous=self._sqlite_synchronous
        )
        await store.open(auto_upgrade=self.url.startswith("sqlite") if auto is None else auto)
        runtime.store = store
        await dbclock.follow(store, first=True)  # before anything is stamped or compared
        # An application's session may share a database the user chose, never ours.
        self.intake.shared_url = None if self.configured_url is None else self.url
        await self.queues.restore()
        runtime.bridge = SyncBridge(functools.partial(_second_store, self.url))
        runtime.dispatcher = Dispatcher(
            run=self.runner.run,
            capacity={
                "async": self.settings.max_concurrent_tasks,
                "thread": self.executors.capacity("thread"),
                "process": self.executors.capacity("process"),
            },
            queue_limits=concurrency_limits(self.queues.configs),
        )
        await self.queues.refresh_paused()  # before any task of a paused queue can start
        if self._observers is not None:
            await self._observers.open()
        runtime.started = True
        try:
            await prepare()
            await self.coordinator.start(loops)
        except BaseException:
            # Half started is not started: undo what ran, so the caller can retry.
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def stop(self) -> None:
        """Stop taking work, let running tasks finish for ``shutdown_timeout`` seconds,
        settle what is left and close everything."""
        runtime = self.runtime
        if not runtime.started:
            return
        runtime.started = False
        await self.coordinator.stop()
        await self.intake.close()
        await self._drain()
        await self.executors.shutdown()
        self.progress.close()
        runtime.giving_up_writes = True
        try:
            await runtime.db.settle_instance(
                runtime.instance_id, now=utcnow(), reason="the process shut down while it ran"
            )
        except DatabaseError as exc:
            logger.error("could not settle this instance's tasks at shutdown: %s", exc)
        await self._close()

    async def _drain(self) -> None:
        dispatcher = self.runtime.dispatcher
        assert dispatcher is not None
        dispatcher.close()
        for task_id, running in list(dispatcher.running.items()):
            job = dispatcher.job(task_id)  # shield=False tasks stop as shutdown begins
            if job is not None and job.hooks is not None and not job.hooks.shield:
                running.cancel()
        if not await dispatcher.wait_idle(self.settings.shutdown_timeout):
            for task_id, running in list(dispatcher.running.items()):
                logger.warning("task %s still running at shutdown; settling it", task_id)
                running.cancel()
            await dispatcher.wait_idle(5.0)

    async def _close(self) -> None:
        if self._observers is not None:
            await self._observers.close()
        await self.runtime.db.close()
        bridge, self.runtime.bridge = self.runtime.bridge, None
        if bridge is not None:
            await asyncio.to_thread(bridge.close)
        if self._ephemeral_dir is not None:
            shutil.rmtree(self._ephemeral_dir, ignore_errors=True)
            self._ephemeral_dir = None


async def _second_store(url: str) -> Store:
    """Another store on ``url`` (for the helper thread of blocking reads)."""
    store = SQLStore(url, pool_size=2)
    await store.open(auto_upgrade=False)
    return store
