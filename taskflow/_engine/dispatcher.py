"""Starts ready tasks in priority order without exceeding each executor's capacity."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from taskflow._engine.registry import ExecutorKind

if TYPE_CHECKING:
    from taskflow._engine.job import Job

UNBOUNDED_SLOTS = 100  # what an executor without a limit offers to one claim

# A heap entry: (-priority, arrival number, job), so the best, then the oldest, pops first.
_Entry = tuple[int, int, "Job"]


class Dispatcher:
    """Holds ready jobs per executor kind and starts the best one when a slot frees up.

    Higher priority starts first, then first-come first-served. ``queue_limits`` caps
    the jobs of a queue running at once: a job of a queue at its cap is parked, and goes
    back in line when a job of that queue ends. A job of a paused queue is parked until
    the queue is resumed (:meth:`set_paused`).

    A job with a ``limit_key`` (a function with ``concurrency=`` or ``rate_limit=``)
    takes its key's turn to start: one start of a key is in flight at a time, so the
    jobs of a key try in priority order. A job its limit holds back (the store said no)
    gives its slot back and waits in its key's line, with its place, until a job of the
    key ends here or its wait is over (:meth:`limit_held`); then the best of the line
    takes the turn.
    """

    def __init__(
        self,
        *,
        run: Callable[[Job], Coroutine[Any, Any, None]],
        capacity: dict[ExecutorKind, int | None],
        queue_limits: dict[str, int] | None = None,
    ) -> None:
        self._run = run
        self._capacity = capacity
        self._queue_limits = dict(queue_limits or {})
        self._queue_busy: dict[str, int] = {}
        self._parked: dict[str, list[_Entry]] = {}
        self._paused: frozenset[str] = frozenset()
        self._ready: dict[ExecutorKind, list[_Entry]] = {kind: [] for kind in capacity}
        self._busy: dict[ExecutorKind, int] = dict.fromkeys(capacity, 0)
        self._seq = itertools.count()
        self.running: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        # Limited jobs: the lines by key, the keys whose turn is taken (a start in flight,
        # or a held job waiting), their wake-up timers, the keys freed while a start was
        # in flight, the entries of starts in flight, and the waits the store asked for.
        self._limit_lines: dict[str, list[_Entry]] = {}
        self._limit_turns: set[str] = set()
        self._limit_timers: dict[str, asyncio.TimerHandle] = {}
        self._limit_freed: set[str] = set()
        self._limit_starting: dict[str, _Entry] = {}
        self._limit_holds: dict[str, float] = {}
        self._limit_running: set[str] = set()

    def submit(self, job: Job) -> None:
        """Queue ``job`` and start it if its executor has a free slot."""
        if self._closed:
            return
        heapq.heappush(self._ready[job.executor], (-job.priority, next(self._seq), job))
        self._pump(job.executor)

    def job(self, task_id: str) -> Job | None:
        """The running job with this task id, or None."""
        return self._jobs.get(task_id)

    def waiting_ids(self) -> set[str]:
        """Ids of the jobs queued but not started."""
        return {job.task_id for queue in self._lines() for _, _, job in queue}

    def waiting(self) -> int:
        """Jobs queued but not started."""
        return sum(len(queue) for queue in self._lines())

    def _lines(self) -> list[list[_Entry]]:
        return [*self._ready.values(), *self._parked.values(), *self._limit_lines.values()]

    def set_queue_limit(self, queue: str, limit: int | None) -> None:
        """Change how many jobs of ``queue`` may run at once (None: no limit)."""
        if limit is None:
            self._queue_limits.pop(queue, None)
        else:
            self._queue_limits[queue] = limit
        self._unpark(queue)

    def set_paused(self, queues: frozenset[str]) -> None:
        """Hold back the jobs of ``queues`` (paused queues; running jobs go on); the jobs
        of a queue no longer paused go back in line."""
        resumed, self._paused = self._paused - queues, queues
        for queue in resumed:
            self._unpark(queue)

    def free_slots(self) -> int:
        """How many more jobs could start now (a large number when unbounded); jobs
        held back by a paused queue take no slot."""
        free = 0
        for kind, capacity in self._capacity.items():
            free += UNBOUNDED_SLOTS if capacity is None else max(capacity - self._busy[kind], 0)
        held = sum(len(self._parked.get(queue, ())) for queue in self._paused)
        held += sum(len(line) for line in self._limit_lines.values())
        return max(free - self.waiting() + held, 0)

    def _pump(self, kind: ExecutorKind) -> None:
        queue = self._ready[kind]
        capacity = self._capacity[kind]
        while queue and (capacity is None or self._busy[kind] < capacity):
            entry = heapq.heappop(queue)
            job = entry[2]
            if self._queue_at_limit(job):
                heapq.heappush(self._parked.setdefault(job.queue, []), entry)
                continue
            if job.limit_key is not None and self._wait_turn(entry, job.limit_key):
                continue
            self._busy[kind] += 1
            self._count_queue(job, +1)
            self._idle.clear()
            task = asyncio.get_running_loop().create_task(
                self._run(job), name=f"taskflow-{job.task_id}"
            )
            self.running[job.task_id] = task
            self._jobs[job.task_id] = job
            task.add_done_callback(self._on_done(job))

    def _on_done(self, job: Job) -> Callable[[asyncio.Task[None]], None]:
        """The done callback of ``job``'s task."""
        return lambda _task: self._done(job)

    def _queue_at_limit(self, job: Job) -> bool:
        if job.queue in self._paused:
            return True
        limit = self._queue_limits.get(job.queue)
        return limit is not None and self._queue_busy.get(job.queue, 0) >= limit

    def _count_queue(self, job: Job, delta: int) -> None:
        self._queue_busy[job.queue] = self._queue_busy.get(job.queue, 0) + delta

    def _unpark(self, queue: str, *, best_only: bool = False) -> None:
        """Put the parked jobs of ``queue`` (or only the best one) back in line and
        start what fits."""
        waiting = self._parked.get(queue)
        if not waiting:
            self._parked.pop(queue, None)
            return
        parked = [heapq.heappop(waiting)] if best_only else self._parked.pop(queue)
        if not waiting:
            self._parked.pop(queue, None)
        for entry in parked:
            heapq.heappush(self._ready[entry[2].executor], entry)
        if not self._closed:
            for kind in {entry[2].executor for entry in parked}:
                self._pump(kind)

    def _done(self, job: Job) -> None:
        self._busy[job.executor] -= 1
        self._count_queue(job, -1)
        self.running.pop(job.task_id, None)
        self._jobs.pop(job.task_id, None)
        if job.limit_key is not None:
            self._limit_done(job, job.limit_key)
        if not self.running and not self.waiting():
            self._idle.set()
        if not self._closed:
            if job.queue in self._parked:
                self._unpark(job.queue, best_only=True)
            self._pump(job.executor)

    def close(self) -> list[Job]:
        """Stop starting jobs; returns the jobs that were waiting."""
        self._closed = True
        left = [job for queue in self._lines() for _, _, job in queue]
        for queue in self._ready.values():
            queue.clear()
        self._parked.clear()
        self._limit_lines.clear()
        for timer in self._limit_timers.values():
            timer.cancel()
        self._limit_timers.clear()
        if not self.running:
            self._idle.set()
        return left

    # -- limited jobs ----------------------------------------------------------------

    def limit_started(self, job: Job) -> None:
        """``job``'s limited start went through: the next job of its key takes the turn
        (``job`` frees a slot of the key when it ends)."""
        assert job.limit_key is not None
        if self._limit_starting.pop(job.task_id, None) is not None:
            self._limit_running.add(job.task_id)
            self._next_turn(job.limit_key)

    def limit_held(self, job: Job, wait: float) -> None:
        """``job``'s limit is full: when its run ends (at once) it goes back to its key's
        line, and the line tries again after ``wait`` seconds, or sooner when a job of
        the key ends here."""
        self._limit_holds[job.task_id] = wait

    def _wait_turn(self, entry: _Entry, key: str) -> bool:
        """Line ``entry`` up behind its key's turn (True), or give it the turn."""
        if key in self._limit_turns:
            heapq.heappush(self._limit_lines.setdefault(key, []), entry)
            return True
        self._limit_turns.add(key)
        self._limit_starting[entry[2].task_id] = entry
        return False

    def _limit_done(self, job: Job, key: str) -> None:
        """The run of a limited job ended: it ran (a slot of its key is free), was held
        (back in line until its wait is over), or never started (next in line)."""
        if job.task_id in self._limit_running:
            self._limit_running.discard(job.task_id)
            self._limit_free(key)
            return
        entry = self._limit_starting.pop(job.task_id, None)
        wait = self._limit_holds.pop(job.task_id, None)
        if entry is None or self._closed:
            return
        if wait is None:
            self._next_turn(key)
            return
        heapq.heappush(self._limit_lines.setdefault(key, []), entry)
        if key in self._limit_freed:  # a slot freed here while it asked: ask again
            wait = 0.0
        loop = asyncio.get_running_loop()
        self._limit_timers[key] = loop.call_later(wait, self._next_turn, key)

    def _limit_free(self, key: str) -> None:
        """A job of ``key`` ended here: a held line tries now, or (a start in flight)
        tries again at once should that start be held."""
        timer = self._limit_timers.get(key)
        if timer is not None:
            timer.cancel()
            self._next_turn(key)
        elif key in self._limit_turns:
            self._limit_freed.add(key)

    def _next_turn(self, key: str) -> None:
        """Free ``key``'s turn and put the best job of its line back in line to start."""
        self._limit_timers.pop(key, None)
        self._limit_turns.discard(key)
        self._limit_freed.discard(key)
        line = self._limit_lines.get(key)
        if not line or self._closed:
            return
        entry = heapq.heappop(line)
        if not line:
            del self._limit_lines[key]
        heapq.heappush(self._ready[entry[2].executor], entry)
        self._pump(entry[2].executor)

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing runs; False if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
