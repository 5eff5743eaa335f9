"""Where task functions actually run: the event loop, a dedicated thread pool, or a
process pool.

Sync functions never use FastAPI's request threadpool or the loop's default executor:
a burst of tasks must not starve request handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from taskflow import context as task_context
from taskflow.errors import TaskflowError, TaskTimeout
from taskflow.registry import ExecutorKind, resolve

logger = logging.getLogger("taskflow.executors")

LogRoute = Callable[[str, str, str, dict[str, Any]], None]  # task_id, level, message, extra


@dataclass(slots=True)
class Call:
    """One invocation: the function, its decoded arguments and its task context."""

    func: Callable[..., Any]
    path: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: task_context.TaskContext
    timeout: float | None


class ExecutorPool:
    """Runs calls on the right executor, honouring timeouts.

    Args:
        max_sync_threads: size of the dedicated thread pool (default ``min(32, cpus + 4)``).
        max_process_workers: size of the process pool (default: number of CPUs).
        process_shutdown_timeout: seconds to let process tasks finish at shutdown.
        route_log: receives ``task_log`` lines written inside process tasks.
    """

    def __init__(
        self,
        *,
        max_sync_threads: int | None,
        max_process_workers: int | None,
        process_shutdown_timeout: float,
        route_log: LogRoute,
    ) -> None:
        self.thread_workers = max_sync_threads or min(32, (os.cpu_count() or 1) + 4)
        self.process_workers = max_process_workers or os.cpu_count() or 1
        self._process_shutdown_timeout = process_shutdown_timeout
        self._route_log = route_log
        self._threads: ThreadPoolExecutor | None = None
        self._processes: _ProcessBackend | None = None

    def capacity(self, kind: ExecutorKind) -> int | None:
        """How many calls of this kind can run at once (None: no limit)."""
        if kind == "thread":
            return self.thread_workers
        if kind == "process":
            return self.process_workers
        return None

    async def run(self, kind: ExecutorKind, call: Call) -> Any:
        """Run ``call`` on executor ``kind``; raises what the function raises, or
        :class:`TaskTimeout` after ``call.timeout`` seconds."""
        runner = {
            "async": self._run_async,
            "thread": self._run_thread,
            "process": self._run_process,
        }[kind]
        if call.timeout is None:
            return await runner(call)
        try:
            async with asyncio.timeout(call.timeout):
                return await runner(call)
        except TimeoutError:
            call.context._cancelled.set()
            raise TaskTimeout(f"task timed out after {call.timeout:g} s") from None

    async def _run_async(self, call: Call) -> Any:
        token = task_context.bind(call.context)
        try:
            return await call.func(*call.args, **call.kwargs)
        finally:
            task_context.unbind(token)

    async def _run_thread(self, call: Call) -> Any:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.thread_workers, thread_name_prefix="taskflow")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, _call_bound, call)

    async def _run_process(self, call: Call) -> Any:
        if self._processes is None:
            self._processes = _ProcessBackend(self.process_workers, self._route_log)
        return await self._processes.run(call)

    def shutdown_threads(self) -> None:
        """Stop the thread pool without waiting for stuck threads."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def shutdown(self) -> None:
        """Stop every pool; process tasks get ``process_shutdown_timeout`` to finish."""
        self.shutdown_threads()
        if self._processes is not None:
            await self._processes.shutdown(self._process_shutdown_timeout)
            self._processes = None


def _call_bound(call: Call) -> Any:
    token = task_context.bind(call.context)
    try:
        return call.func(*call.args, **call.kwargs)
    finally:
        task_context.unbind(token)


class _ProcessBackend:
    """A spawn-based process pool plus the channels a child needs: a queue carrying its
    ``task_log`` lines home and a shared dict of cancelled task ids."""

    def __init__(self, workers: int, route_log: LogRoute) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self.logs = self._manager.Queue()
        self.cancelled = self._manager.dict()
        self._workers = workers
        self._ctx = ctx
        self._pool = self._new_pool()
        self._route_log = route_log
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._drain = threading.Thread(
            target=self._drain_logs,
            args=(asyncio.get_running_loop(),),
            name="taskflow-process-logs",
            daemon=True,
        )
        self._drain.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._workers, mp_context=self._ctx)

    async def run(self, call: Call) -> Any:
        ctx = call.context
        spec = (
            call.path,
            call.args,
            call.kwargs,
            ctx.task_id,
            ctx.func_name,
            ctx.attempt,
            ctx.max_retries,
            ctx.tags,
            ctx.source,
        )
        watcher = asyncio.get_running_loop().create_task(self._watch_cancel(ctx))
        try:
            future = asyncio.wrap_future(
                self._pool.submit(_child_run, spec, self.logs, self.cancelled)
            )
            self._in_flight.add(future)
            try:
                return await asyncio.shield(future)
            finally:
                self._in_flight.discard(future)
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise TaskflowError(f"the worker process running this task died: {exc}") from exc
        finally:
            watcher.cancel()
            self.cancelled.pop(ctx.task_id, None)

    async def _watch_cancel(self, ctx: task_context.TaskContext) -> None:
        # Threading events do not cross processes; mirror the flag into the shared dict.
        while not ctx._cancelled.is_set():
            await asyncio.sleep(0.05)
        self.cancelled[ctx.task_id] = True

    def _drain_logs(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                item = self.logs.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(self._route_log, *item)

    async def shutdown(self, timeout: float) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
        for process in list(getattr(self._pool, "_processes", {}).values()):
            if self._in_flight:
                process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.logs.put(None)
        await asyncio.to_thread(self._drain.join, 5)
        self._manager.shutdown()


# -- in the child process ---------------------------------------------------------------


class _RemoteFlag:
    """``is_set()`` over the shared cancelled-ids dict, for TaskContext.is_cancelled()."""

    def __init__(self, cancelled: Any, task_id: str) -> None:
        self._cancelled = cancelled
        self._task_id = task_id

    def is_set(self) -> bool:
        try:
            return bool(self._cancelled.get(self._task_id, False))
        except (EOFError, OSError):
            return True

    def set(self) -> None:
        self._cancelled[self._task_id] = True


def _child_run(spec: tuple[Any, ...], logs: Any, cancelled: Any) -> Any:
    path, args, kwargs, task_id, func_name, attempt, max_retries, tags, source = spec

    def sink(level: str, message: str, extra: dict[str, Any]) -> None:
        logs.put((task_id, level, message, extra))

    ctx = task_context.TaskContext(
        task_id=task_id,
        func_name=func_name,
        attempt=attempt,
        max_retries=max_retries,
        tags=tags,
        source=source,
        _sink=sink,
        _cancelled=_RemoteFlag(cancelled, task_id),
    )
    func = resolve(path)
    token = task_context.bind(ctx)
    try:
        result = func(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result
    finally:
        task_context.unbind(token)
