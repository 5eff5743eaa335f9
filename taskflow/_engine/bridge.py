"""Blocking access to the database from the event loop's own thread.

A sync API called on the event loop (``add_task`` with an idempotency key inside an
``async def`` route, ``task_manager.store.get()``) cannot await the main store. It runs
the query on a private loop in a helper thread with its own connections instead, and
blocks for that one round trip.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from taskflow._store.protocol import Store

T = TypeVar("T")
SYNC_TIMEOUT = 30.0  # seconds a sync caller waits for an event loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class SyncBridge:
    """A helper thread with an event loop and a second store on the same database.

    Args:
        open_store: opens that second store (on the helper thread, at the first call).
        timeout: seconds a call may take.
    """

    def __init__(
        self, open_store: Callable[[], Awaitable[Store]], *, timeout: float = SYNC_TIMEOUT
    ) -> None:
        self._open_store = open_store
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()

    def call(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``operation(store)`` on the bridge and return its result (blocking)."""
        loop = self._ensure_started()
        future = asyncio.run_coroutine_threadsafe(self._run(operation), loop)
        return future.result(self._timeout)

    async def _run(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        if self._store is None:
            self._store = await self._open_store()
        return await operation(self._store)

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="taskflow-bridge", daemon=True
                )
                self._thread.start()
            return self._loop

    def close(self) -> None:
        """Close the bridge's connections and stop its thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_store(), loop).result(self._timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout)
        loop.close()

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


def run_blocking(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, timeout: float
) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
