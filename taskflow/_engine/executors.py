"""Where task functions actually run: the event loop, a dedicated thread pool, or a
process pool.

Sync functions never use FastAPI's request threadpool or the loop's default executor:
a burst of tasks must not starve request handlers.

A task that overruns its ``timeout`` is first asked to stop (async: cancelled; thread
and process: ``get_task_context().is_cancelled()`` turns true) and gets
:data:`OVERRUN_GRACE` seconds to do so. What happens to one that does not stop depends
on what can be stopped from outside:

- async: the coroutine (one that swallows ``CancelledError``) is abandoned;
- thread: a Python thread cannot be killed; it is abandoned (see :class:`ThreadPool`);
- process: its worker process is killed and replaced (see :class:`ProcessPool`).

Either way the task fails with :class:`~taskflow.errors.TaskTimeout` and its slot is
free for the next task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.managers import DictProxy, SyncManager
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

from taskflow._engine import context as task_context
from taskflow._engine.registry import ExecutorKind, resolve
from taskflow._engine.settings import check_positive
from taskflow.errors import TaskflowError, TaskTimeout

logger = logging.getLogger("taskflow._engine.executors")

LogRoute = Callable[[str, str, str, dict[str, Any]], None]  # task_id, level, message, extra
LogItem = tuple[str, str, str, dict[str, Any]]  # a LogRoute call, sent home by a worker
ProgressRoute = Callable[[str, task_context.ProgressReport], None]  # task_id, report


class ProgressItem(NamedTuple):
    """A ``task_progress`` report sent home by a worker, on the channel of log lines."""

    task_id: str
    report: task_context.ProgressReport


class _Returned(NamedTuple):
    """What a worker returns: the function's value and its last progress report (it
    travels with the value, so it is stored before the task's end)."""

    value: object
    progress: task_context.ProgressReport | None


# Seconds between two progress reports a worker sends home (the parent coalesces too).
CHILD_PROGRESS_INTERVAL = 0.1

# Seconds a task that overran its timeout (or was cancelled) gets to stop by itself
# before it is abandoned (async, thread) or its worker process is killed.
OVERRUN_GRACE = 2.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends


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
        route_progress: receives ``task_progress`` reports made inside process tasks.

    Raises:
        ConfigurationError: a pool size is given as 0 or less.
    """

    def __init__(
        self,
        *,
        max_sync_threads: int | None,
        max_process_workers: int | None,
        process_shutdown_timeout: float,
        route_log: LogRoute,
        route_progress: ProgressRoute,
    ) -> None:
        check_positive(max_sync_threads=max_sync_threads, max_process_workers=max_process_workers)
        self.thread_workers = max_sync_threads or min(32, (os.cpu_count() or 1) + 4)
        self.process_workers = max_process_workers or os.cpu_count() or 1
        self._process_shutdown_timeout = process_shutdown_timeout
        self._route_log = route_log
        self._route_progress = route_progress
        self._threads: ThreadPool | None = None
        self._processes: ProcessPool | None = None
        self._abandoned: set[asyncio.Task[object]] = set()

    def capacity(self, kind: ExecutorKind) -> int | None:
        """How many calls of this kind can run at once (None: no limit)."""
        if kind == "thread":
            return self.thread_workers
        if kind == "process":
            return self.process_workers
        return None

    async def run(self, kind: ExecutorKind, call: Call) -> object:
        """Run ``call`` on executor ``kind``; raises what the function raises, or
        :class:`TaskTimeout` once ``call.timeout`` seconds have passed (plus at most
        :data:`OVERRUN_GRACE` for the task to stop)."""
        if kind == "async":
            return await self._run_async(call)
        if kind == "thread":
            return await self._run_thread(call)
        return await self._run_process(call)

    async def _run_async(self, call: Call) -> object:
        if call.timeout is None:
            return await _await_bound(call)
        task = asyncio.get_running_loop().create_task(_await_bound(call))
        try:
            if await _finished_within(task, call.timeout):
                return task.result()
        except asyncio.CancelledError:
            await self._stop_coroutine(task, call)
            raise
        await self._stop_coroutine(task, call)
        raise _timeout_error(call)

    async def _stop_coroutine(self, task: asyncio.Task[object], call: Call) -> None:
        """Cancel ``task``; if it is still running after the grace period (it swallowed
        the cancellation), abandon it: it runs on, detached from its task (which is
        settled), and is cancelled again at shutdown."""
        call.context._cancelled.set()
        task.cancel()
        if await _finished_within(task, OVERRUN_GRACE):
            _consume(task)
            return
        logger.warning(
            "task %s ignored its cancellation for %g s; its coroutine is abandoned",
            call.context.task_id,
            OVERRUN_GRACE,
        )
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        task.add_done_callback(_consume)

    async def _run_thread(self, call: Call) -> object:
        if self._threads is None:
            self._threads = ThreadPool(keep_idle=self.thread_workers)
        threads = self._threads
        running = threads.submit(_call_bound, call)
        future = asyncio.wrap_future(running)
        if call.timeout is None:
            return await future
        future.add_done_callback(_consume)  # also when nobody waits for it any more
        if await _finished_within(future, call.timeout):
            return future.result()
        call.context._cancelled.set()
        if not await _finished_within(future, OVERRUN_GRACE):
            logger.warning(
                "sync task %s is still running %g s after its timeout; its thread cannot "
                "be stopped and is abandoned (%d abandoned threads still running)",
                call.context.task_id,
                OVERRUN_GRACE,
                threads.abandon(running),
            )
        raise _timeout_error(call)

    async def _run_process(self, call: Call) -> object:
        if self._processes is None:
            self._processes = ProcessPool(
                self.process_workers, self._route_log, self._route_progress
            )
        return await self._processes.run(call)

    def kill_process_task(self, task_id: str) -> bool:
        """Kill the worker process running ``task_id`` (a fenced instance stops its
        tasks); False when none runs it."""
        return self._processes is not None and self._processes.kill(task_id)

    def shutdown_threads(self) -> None:
        """Stop the thread pool without waiting for stuck threads."""
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None

    async def shutdown(self) -> None:
        """Stop every pool; process tasks get ``process_shutdown_timeout`` to finish."""
        self.shutdown_threads()
        for task in list(self._abandoned):
            task.cancel()
        if self._processes is not None:
            await self._processes.shutdown(self._process_shutdown_timeout)
            self._processes = None


async def _await_bound(call: Call) -> object:
    token = task_context.bind(call.context)
    try:
        result: object = await call.func(*call.args, **call.kwargs)
        return result
    finally:
        task_context.unbind(token)


def _call_bound(call: Call) -> object:
    token = task_context.bind(call.context)
    try:
        result: object = call.func(*call.args, **call.kwargs)
        return result
    finally:
        task_context.unbind(token)


async def _finished_within(future: asyncio.Future[object], timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for ``future``, without cancelling
    it on timeout; True if it is done."""
    await asyncio.wait({future}, timeout=timeout)
    return future.done()


def _consume(future: asyncio.Future[object]) -> None:
    """Mark the outcome of a future nobody awaits any more as seen."""
    if future.done() and not future.cancelled():
        future.exception()


def _timeout_error(call: Call, note: str = "") -> TaskTimeout:
    return TaskTimeout(f"task timed out after {call.timeout:g} s{note}")


# -- threads ------------------------------------------------------------------------------


_WorkItem = tuple[Future[object], Callable[..., object], tuple[object, ...]]


class ThreadPool:
    """Daemon worker threads for sync tasks.

    Unlike :class:`concurrent.futures.ThreadPoolExecutor`, the pool has no size of its
    own: the dispatcher already bounds how many sync tasks run at once
    (``max_sync_threads``), so when a task overruns its timeout and its thread does not
    return (a Python thread cannot be killed), the thread is *abandoned*: the task is
    settled, the thread no longer counts against the limit, and the next task gets a
    new thread. An abandoned thread keeps whatever it holds until it returns, and
    returns to the pool if it ever does. The threads are daemons, so a stuck one never
    holds up the interpreter's exit (``ThreadPoolExecutor`` joins its threads at exit,
    which would hang the process for ever). Code that may hang for good belongs in
    ``executor="process"``, whose workers can be killed; code that can, should check
    ``get_task_context().is_cancelled()``.

    Args:
        keep_idle: how many idle threads are kept for reuse.
    """

    def __init__(self, *, keep_idle: int, name: str = "taskflow") -> None:
        self._keep_idle = keep_idle
        self._name = name
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._abandoned: set[Future[object]] = set()
        self._started = 0
        self._closed = False

    def submit(self, func: Callable[..., object], *args: object) -> Future[object]:
        """Run ``func(*args)`` on an idle thread, or on a new one if none is idle."""
        future: Future[object] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._work.put((future, func, args))
            if self._idle:
                self._idle -= 1  # that idle thread takes this item
            else:
                self._started += 1
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}_{self._started}", daemon=True
                )
                self._threads.add(thread)
                thread.start()
        return future

    def abandon(self, future: Future[object]) -> int:
        """Note that the thread running ``future`` was left behind; how many are now."""
        with self._lock:
            if not future.done():
                self._abandoned.add(future)
            return len(self._abandoned)

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                break
            future, func, args = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = func(*args)
                except BaseException as exc:  # noqa: BLE001 - the task's outcome
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result
            if not self._go_idle(future):
                break
            del future, func, args
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _go_idle(self, done: Future[object]) -> bool:
        """After a call: True if this thread stays for the next one."""
        with self._lock:
            self._abandoned.discard(done)
            if self._closed or self._idle >= self._keep_idle:
                return False
            self._idle += 1
            return True

    def shutdown(self) -> None:
        """Stop idle threads and cancel calls not started; running ones are not waited
        for (their threads end when their calls return)."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(count):
            self._work.put(None)


# -- processes ----------------------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """In a worker or channel process (Linux): end with the process that started it,
    even when that one is killed with ``SIGKILL`` and cannot stop its children, so a
    crashed server leaves no worker behind. ``parent``: the pid that started it; a
    child whose parent is already gone exits at once."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


class _Lane:
    """One worker process: a single-worker ``ProcessPoolExecutor``, so that killing or
    losing it fails only the one task it runs (a crash in a shared pool breaks the
    pool and fails every task in it)."""

    def __init__(self, ctx: SpawnContext) -> None:
        self.pool = ProcessPoolExecutor(
            1, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        self._procs: list[BaseProcess] = []

    def submit(self, func: Callable[..., object], /, *args: object) -> Future[object]:
        future = self.pool.submit(func, *args)
        self._procs = list((getattr(self.pool, "_processes", None) or {}).values())
        return future

    def kill(self) -> None:
        for process in self._procs:
            with contextlib.suppress(Exception):
                process.kill()

    async def exit_status(self) -> str:
        """How the worker process ended, e.g. ``killed by signal SIGSEGV``."""
        for process in self._procs:
            await asyncio.to_thread(process.join, 5)
            code = process.exitcode
            if code is None:
                continue
            if code < 0:
                with contextlib.suppress(ValueError):
                    return f"killed by signal {signal.Signals(-code).name}"
                return f"killed by signal {-code}"
            return f"exit code {code}"
        return "exit status unknown"

    def close(self, *, wait: bool = False) -> None:
        """Shut the worker down; ``wait`` joins it and releases the pool's queues (and
        their semaphores), which an interpreter exit would otherwise report as leaked."""
        self.pool.shutdown(wait=wait, cancel_futures=True)


class ProcessPool:
    """Spawned worker processes, one task at a time each, plus the channels a child
    needs: a queue carrying its ``task_log`` lines and ``task_progress`` reports home and
    a shared dict of cancelled task ids.

    A task that overruns its timeout and does not stop within :data:`OVERRUN_GRACE`
    has its worker killed (``SIGKILL``); a worker that dies (``os._exit``, a segfault,
    the OOM killer) fails its task with an error saying how it ended. Either way the
    worker is replaced and no other task is affected.
    """

    def __init__(self, workers: int, route_log: LogRoute, route_progress: ProgressRoute) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._manager = SyncManager(ctx=ctx)
        self._manager.start(die_with_parent, (os.getpid(),))
        self.logs: queue.Queue[LogItem | ProgressItem | None] = self._manager.Queue()
        self.cancelled: DictProxy[str, bool] = self._manager.dict()
        self._ctx = ctx
        self._workers = workers  # the dispatcher runs at most this many calls at once
        self._idle: list[_Lane] = []  # workers start on first use
        self._busy: dict[asyncio.Future[object], _Lane] = {}
        self._closing = False
        self._route_log = route_log
        self._route_progress = route_progress
        # Tasks running in a worker now: a report that arrives after its task's end
        # (the channel and the result travel apart) is older than the one returned.
        self._running_ids: set[str] = set()
        self._lanes: dict[str, _Lane] = {}  # the worker running each task, by task id
        self._drain = threading.Thread(
            target=self._drain_logs,
            args=(asyncio.get_running_loop(),),
            name="taskflow-process-logs",
            daemon=True,
        )
        self._drain.start()

    async def run(self, call: Call) -> object:
        """Run ``call`` in a worker process.

        Raises:
            TaskTimeout: it overran ``call.timeout``.
            TaskflowError: its worker process died.
        """
        ctx = call.context
        spec: _Spec = (
            call.path,
            call.args,
            call.kwargs,
            ctx.task_id,
            ctx.func_name,
            ctx.attempt,
            ctx.max_retries,
            ctx.tags,
            ctx.source,
            dict(ctx.dependency_results),
        )
        lane = self._idle.pop() if self._idle else _Lane(self._ctx)
        try:
            running = lane.submit(_child_run, spec, self.logs, self.cancelled)
        except BrokenProcessPool:  # its idle worker died since its last task
            lane.close()
            lane = _Lane(self._ctx)
            running = lane.submit(_child_run, spec, self.logs, self.cancelled)
        watcher = asyncio.get_running_loop().create_task(self._watch_cancel(ctx))
        self._running_ids.add(ctx.task_id)
        self._lanes[ctx.task_id] = lane
        try:
            future = asyncio.wrap_future(running)
            self._busy[future] = lane
            future.add_done_callback(self._release)
            if not await _finished_within(future, call.timeout):
                ctx._cancelled.set()
                raise _timeout_error(call, await self._stop(future, lane))
            returned = future.result()
            assert isinstance(returned, _Returned)
            if returned.progress is not None:
                self._route_progress(ctx.task_id, returned.progress)
            return returned.value
        except BrokenProcessPool as exc:
            status = await lane.exit_status()
            raise TaskflowError(f"the worker process running this task died ({status})") from exc
        finally:
            watcher.cancel()
            self.cancelled.pop(ctx.task_id, None)
            self._running_ids.discard(ctx.task_id)
            self._lanes.pop(ctx.task_id, None)

    def kill(self, task_id: str) -> bool:
        """Kill the worker process running ``task_id`` now (it is replaced); False when
        no worker runs it."""
        lane = self._lanes.get(task_id)
        if lane is None:
            return False
        lane.kill()
        return True

    async def _stop(self, future: asyncio.Future[object], lane: _Lane) -> str:
        """Give an overrunning task the grace period, then kill its worker; a note for
        the timeout error."""
        if await _finished_within(future, OVERRUN_GRACE):
            return ""
        lane.kill()
        await _finished_within(future, 30.0)  # the pool notices the death at once
        return "; its worker process was stopped"

    def _release(self, future: asyncio.Future[object]) -> None:
        """A call ended: its worker takes the next one, or is replaced if it died."""
        _consume(future)
        lane = self._busy.pop(future)
        broken = not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)
        if broken or self._closing or len(self._idle) >= self._workers:
            lane.close()
            return
        self._idle.append(lane)

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
                if isinstance(item, ProgressItem):
                    loop.call_soon_threadsafe(self._route_running, item)
                else:
                    loop.call_soon_threadsafe(self._route_log, *item)

    def _route_running(self, item: ProgressItem) -> None:
        if item.task_id in self._running_ids:
            self._route_progress(item.task_id, item.report)

    async def shutdown(self, timeout: float) -> None:
        """Let running calls finish for ``timeout`` seconds, then kill their workers."""
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=timeout)
        self._closing = True
        lanes = [*self._busy.values(), *self._idle]
        for lane in self._busy.values():
            lane.kill()
        self._idle.clear()
        # Joined in a thread: each join waits for its worker process to exit.
        for lane in lanes:
            await asyncio.to_thread(lane.close, wait=True)
        with contextlib.suppress(Exception):
            self.logs.put(None)
        await asyncio.to_thread(self._drain.join, 5)
        self._manager.shutdown()


# -- in the child process ---------------------------------------------------------------


# What a worker process needs to run a call: path, args, kwargs, then the task context's
# task_id, func_name, attempt, max_retries, tags, source and dependency_results.
_Spec = tuple[
    str, tuple[Any, ...], dict[str, Any], str, str, int, int, dict[str, str], str, dict[str, Any]
]


class _RemoteFlag:
    """``is_set()`` over the shared cancelled-ids dict, for TaskContext.is_cancelled()."""

    def __init__(self, cancelled: MutableMapping[str, bool], task_id: str) -> None:
        self._cancelled = cancelled
        self._task_id = task_id

    def is_set(self) -> bool:
        try:
            return bool(self._cancelled.get(self._task_id, False))
        except (EOFError, OSError):
            return True

    def set(self) -> None:
        self._cancelled[self._task_id] = True


class _ChildProgress:
    """The progress reports of a task in a worker: sent home at most every
    :data:`CHILD_PROGRESS_INTERVAL` seconds (each send is a round trip to the manager
    process); the last one is returned with the value (see :class:`_Returned`)."""

    def __init__(self, logs: queue.Queue[LogItem | ProgressItem | None], task_id: str) -> None:
        self._logs = logs
        self._task_id = task_id
        self._sent_at = float("-inf")
        self.last: task_context.ProgressReport | None = None
        self._unsent = False

    def report(self, report: task_context.ProgressReport) -> None:
        self.last = report
        now = time.monotonic()
        if now - self._sent_at < CHILD_PROGRESS_INTERVAL:
            self._unsent = True
            return
        self._sent_at, self._unsent = now, False
        self._logs.put(ProgressItem(self._task_id, report))

    def send_unsent(self) -> None:
        """Send the last report if it was held back (the task raised: no value)."""
        if self._unsent and self.last is not None:
            self._logs.put(ProgressItem(self._task_id, self.last))
            self._unsent = False


def _child_run(
    spec: _Spec,
    logs: queue.Queue[LogItem | ProgressItem | None],
    cancelled: MutableMapping[str, bool],
) -> _Returned:
    path, args, kwargs, task_id, func_name, attempt, max_retries, tags, source, upstream = spec

    def sink(level: str, message: str, extra: dict[str, Any]) -> None:
        logs.put((task_id, level, message, extra))

    progress = _ChildProgress(logs, task_id)

    ctx = task_context.TaskContext(
        task_id=task_id,
        func_name=func_name,
        attempt=attempt,
        max_retries=max_retries,
        tags=tags,
        source=source,
        _sink=sink,
        _cancelled=_RemoteFlag(cancelled, task_id),
        _progress=progress.report,
        dependency_results=upstream,
    )
    func = resolve(path)
    token = task_context.bind(ctx)
    try:
        result: object = func(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except BaseException:
        progress.send_unsent()
        raise
    finally:
        task_context.unbind(token)
    return _Returned(result, progress.last)
