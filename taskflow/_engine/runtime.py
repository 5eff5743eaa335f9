"""What the engine's parts share while the manager runs: this instance's id, the event
loop, the store, the dispatcher and the helper thread for blocking reads.

The manager fills it at startup and empties it at shutdown; a part reads it when it acts,
so parts made before startup (schedules declared at import time) work once it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, KeysView
from typing import Any, TypeVar

from taskflow._engine.bridge import SYNC_TIMEOUT, SyncBridge, running_loop
from taskflow._engine.dispatcher import Dispatcher
from taskflow._engine.job import Job
from taskflow._store.protocol import Store
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
        fenced: set while this instance could not renew its heartbeat for longer than
            its lease: it starts no task until it is back (see ``Coordinator``).
        interceptor: sees every job about to start and keeps it when it returns True
            (``taskflow.testing`` holds jobs this way); None in production.
    """

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store: Store | None = None
        self.dispatcher: Dispatcher | None = None
        self.bridge: SyncBridge | None = None
        self.started = False
        self.giving_up_writes = False
        self.fenced = False
        self.interceptor: Callable[[Job], bool] | None = None
        self._kept: dict[str, Job] = {}  # the jobs the interceptor keeps, by id, in order
        self._on_start: list[Callable[[], None]] = []  # see when_started()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def db(self) -> Store:
        """The store.

        Raises:
            NotStarted: the manager has never started.
        """
        if self.store is None:
            raise NotStarted(NOT_STARTED)
        return self.store

    @property
    def kept(self) -> KeysView[str]:
        """The ids of the jobs the interceptor keeps (this process knows them)."""
        return self._kept.keys()

    def dispatch(self, job: Job) -> None:
        """Hand ``job`` to the dispatcher (unless the interceptor keeps it)."""
        if self.interceptor is not None and self.interceptor(job):
            self._kept[job.task_id] = job
            return
        assert self.dispatcher is not None
        self.dispatcher.submit(job)

    def release_kept(self) -> int:
        """Hand every kept job to the dispatcher, in the order they were kept; how many
        there were."""
        assert self.dispatcher is not None
        kept, self._kept = self._kept, {}
        for job in kept.values():
            self.dispatcher.submit(job)
        return len(kept)

    def forget_kept(self) -> None:
        """Drop the kept jobs (they stay pending in the database)."""
        self._kept.clear()

    def when_started(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop at the end of the next :meth:`startup`
        (tasks added before startup use this); it is called at once when running."""
        if self.started:
            callback()
        else:
            self._on_start.append(callback)

    def run_start_callbacks(self) -> None:
        """Call what :meth:`when_started` queued, once each, at the end of startup."""
        callbacks, self._on_start = self._on_start, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one bad early task must not stop startup
                logger.exception("a task added before startup could not be stored")

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

    def read(self, operation: Callable[[Store], Awaitable[T]]) -> T:
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


async def _call(operation: Callable[[Store], Awaitable[T]], store: Store) -> T:
    return await operation(store)
