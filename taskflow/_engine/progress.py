"""``task_progress()`` reports: the latest one per task, written through the group
commit at most every :data:`WRITE_INTERVAL` seconds, and the last one before the end of
the attempt (so a loop reporting 100 000 times makes a handful of writes)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass

from taskflow._engine.bridge import running_loop
from taskflow._engine.context import ProgressReport, ProgressSink
from taskflow._engine.job import Job
from taskflow._engine.runtime import Runtime
from taskflow._store.rows import ProgressUpdate
from taskflow.errors import NotStarted

logger = logging.getLogger("taskflow")

WRITE_INTERVAL = 0.5  # seconds between two writes of one task's progress


@dataclass(slots=True)
class _Task:
    """One task's reports: the latest not yet written, and when one was last written."""

    latest: ProgressReport | None = None
    written_at: float = float("-inf")
    timer: asyncio.TimerHandle | None = None


class ProgressWriter:
    """Keeps the latest progress report of each running task and writes it.

    Args:
        runtime: the manager's running state (loop, store).
        interval: seconds between two writes of one task's progress.
    """

    def __init__(self, runtime: Runtime, *, interval: float = WRITE_INTERVAL) -> None:
        self._runtime = runtime
        self._interval = interval
        self._tasks: dict[str, _Task] = {}
        # Reports made in threads wait here for the loop; one hand-off per task at a time.
        self._handed: dict[str, ProgressReport] = {}
        self._lock = threading.Lock()

    def sink(self, job: Job) -> ProgressSink:
        """A thread-safe ``task_progress`` target for ``job``."""
        loop = self._runtime.loop
        assert loop is not None
        task_id = job.task_id

        def sink(report: ProgressReport) -> None:
            if running_loop() is loop:
                self.report(task_id, report)
                return
            with self._lock:
                first = task_id not in self._handed
                self._handed[task_id] = report
            if first:
                loop.call_soon_threadsafe(self._take_handed, task_id)

        return sink

    def _take_handed(self, task_id: str) -> None:
        with self._lock:
            report = self._handed.pop(task_id, None)
        if report is not None:
            self.report(task_id, report)

    def report(self, task_id: str, report: ProgressReport) -> None:
        """Take ``report`` as task ``task_id``'s latest (call on the loop thread): written
        now, or when the task's interval has passed since its last write."""
        state = self._tasks.setdefault(task_id, _Task())
        state.latest = report
        if state.timer is not None:
            return  # a write is already due; it takes this report
        loop = asyncio.get_running_loop()
        wait = state.written_at + self._interval - loop.time()
        if wait <= 0:
            self._write(task_id, state)
        else:
            state.timer = loop.call_later(wait, self._due, task_id)

    def flush(self, task_id: str) -> None:
        """Write task ``task_id``'s unwritten report now and forget the task (call before
        queueing the end of its attempt, which then commits after it)."""
        self._take_handed(task_id)
        state = self._tasks.pop(task_id, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        self._write(task_id, state)

    def _due(self, task_id: str) -> None:
        state = self._tasks.get(task_id)
        if state is not None:
            state.timer = None
            self._write(task_id, state)

    def _write(self, task_id: str, state: _Task) -> None:
        report, state.latest = state.latest, None
        if report is None:
            return
        state.written_at = asyncio.get_running_loop().time()
        update = ProgressUpdate(task_id=task_id, report=json.dumps(report))
        try:
            write = self._runtime.db.set_progress(update)
        except NotStarted:
            return
        write.add_done_callback(_report_failure)

    def close(self) -> None:
        """Forget every task (at shutdown): due writes are not made."""
        for state in self._tasks.values():
            if state.timer is not None:
                state.timer.cancel()
        self._tasks.clear()
        with self._lock:
            self._handed.clear()


def _report_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a task progress report was not stored: %s", future.exception())
