"""What the engine's parts share while the manager runs: this instance's id, the event
loop, the store, the dispatcher and the helper thread for blocking reads.

The manager fills it at startup and empties it at shutdown; a part reads it when it acts,
so parts made before startup (schedules declared at import time) work once it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from taskflow._engine.bridge import SYNC_TIMEOUT, SyncBridge, running_loop
from taskflow._engine.dispatcher import Dispatcher
from taskflow._engine.job import Job
from taskflow._store.sql import SQLStore
from taskflow.errors import NotStarted

logger = logging.getLogger("taskflow")
T = TypeVar("T")

NOT_STARTED = (
    "the TaskManager is not started: call task_manager.init_app(app) "
    "or await task_manager.startup()"
)


class Runtime:
    """The running state of one manager, shared by its parts.

    Attributes:
        instance_id: this process's instance id (the owner of the tasks it enqueues).
        loop: the event loop the manager started on.
        store: the database (set at startup; kept after shutdown for inspection).
        dispatcher: starts ready tasks (set at startup).
        bridge: blocking reads from the loop's own thread (set at startup).
        started: between startup and shutdown.
        giving_up_writes: set at shutdown, when a failed write is no longer retried.
        interceptor: sees every job about to start and keeps it when it returns True
            (``taskflow.testing`` holds jobs this way); None in production.
        kept: ids of the jobs the interceptor keeps (this process knows them).
    """

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store: SQLStore | None = None
        self.dispatcher: Dispatcher | None = None
        self.bridge: SyncBridge | None = None
        self.started = False
        self.giving_up_writes = False
        self.interceptor: Callable[[Job], bool] | None = None
        self.kept: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def db(self) -> SQLStore:
        """The store.

        Raises:
            NotStarted: the manager has never started.
        """
        if self.store is None:
            raise NotStarted(NOT_STARTED)
        return self.store

    def dispatch(self, job: Job) -> None:
        """Hand ``job`` to the dispatcher (unless the interceptor keeps it)."""
        if self.interceptor is not None and self.interceptor(job):
            return
        assert self.dispatcher is not None
        self.dispatcher.submit(job)

    def require_loop(self) -> asyncio.AbstractEventLoop:
        """The manager's loop.

        Raises:
            NotStarted: the manager is not running.
        """
        if not self.started or self.loop is None:
            raise NotStarted(NOT_STARTED)
        return self.loop

    def on_loop(self, factory: Callable[[], T]) -> T:
        """``factory()`` called on the manager's loop (from any thread)."""
        loop = self.require_loop()
        if running_loop() is loop:
            return factory()

        async def make() -> T:
            return factory()

        return asyncio.run_coroutine_threadsafe(make(), loop).result(SYNC_TIMEOUT)

    def read(self, operation: Callable[[SQLStore], Awaitable[T]]) -> T:
        """Run a store read from sync code: on the loop's own thread through the helper
        thread (the loop cannot wait for itself), from other threads on the loop."""
        loop = self.require_loop()
        if running_loop() is loop:
            assert self.bridge is not None
            return self.bridge.call(operation)
        return asyncio.run_coroutine_threadsafe(_call(operation, self.db), loop).result(
            SYNC_TIMEOUT
        )

    def run_or_spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` on the loop: in the background from the loop's own thread (it
        cannot wait for itself), else waiting for it."""
        loop = self.require_loop()
        if running_loop() is loop:
            self.spawn(coro, what)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop).result(SYNC_TIMEOUT)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` in the background on the running loop; a failure is logged as
        "could not <what>"."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("could not %s: %s", what, finished.exception())

        task.add_done_callback(done)


async def _call(operation: Callable[[SQLStore], Awaitable[T]], store: SQLStore) -> T:
    return await operation(store)
