"""``task_log()`` lines: admitted within the per-task limits, stored through the group
commit and passed to the observers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from taskflow._engine.bridge import running_loop
from taskflow._engine.job import Job, utcnow
from taskflow._engine.runtime import Runtime
from taskflow._payloads.limits import Limits
from taskflow._store.rows import NewLogLine
from taskflow.errors import NotStarted
from taskflow.observers import LogEvent, LoggerChain

logger = logging.getLogger("taskflow")

LogSink = Callable[[str, str, dict[str, Any]], None]


class TaskLog:
    """Writes the log lines of running tasks.

    Args:
        runtime: the manager's running state (loop, store, dispatcher).
        limits: the line length and lines-per-task limits.
        observers: who else hears every line (None: nobody).
    """

    def __init__(self, runtime: Runtime, limits: Limits, observers: LoggerChain | None) -> None:
        self._runtime = runtime
        self._limits = limits
        self._observers = observers

    def sink(self, job: Job) -> LogSink:
        """A thread-safe ``task_log`` target for ``job``."""
        loop = self._runtime.loop
        assert loop is not None

        def sink(level: str, message: str, extra: dict[str, Any]) -> None:
            if running_loop() is loop:
                self.write(job.task_id, level, message, extra, job)
            else:
                loop.call_soon_threadsafe(self.write, job.task_id, level, message, extra, job)

        return sink

    def write(
        self, task_id: str, level: str, message: str, extra: dict[str, Any], job: Job | None = None
    ) -> None:
        """Store one line of task ``task_id`` (call on the loop thread)."""
        dispatcher = self._runtime.dispatcher
        job = job or (dispatcher.job(task_id) if dispatcher else None)
        admitted = self._admit(job, str(message))
        if admitted is None:
            return
        now = utcnow()
        safe = _json_safe(extra)
        line = NewLogLine(
            task_id=task_id, at=now, level=str(level)[:10], message=admitted, extra=safe
        )
        try:
            write = self._runtime.db.append_log(line)
        except NotStarted:
            return
        write.add_done_callback(_report_failure)
        if self._observers is not None:
            self._observers.emit(
                LogEvent(
                    task_id=task_id,
                    func_name=job.func_name if job else "",
                    message=admitted,
                    level=level,
                    timestamp=now,
                    attempt=max(job.attempt - 1, 0) if job else 0,
                    tags=job.tags if job else {},
                    extra=safe,
                )
            )

    def _admit(self, job: Job | None, message: str) -> str | None:
        """The message to store (truncated), or None once the task's line budget is
        spent; the line that spends it says so."""
        limit = self._limits.log_lines
        if job is not None:
            job.log_lines += 1
            if job.log_lines > limit + 1:
                return None
            if job.log_lines == limit + 1:
                return f"log limit of {limit} lines reached; later lines dropped"
        return self._limits.truncate_log(message)


def _report_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a task log line was not stored: %s", future.exception())


def _json_safe(extra: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in extra.items():
        try:
            json.dumps(value)
            safe[str(key)] = value
        except (TypeError, ValueError):
            safe[str(key)] = str(value)
    return safe
