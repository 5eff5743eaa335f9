"""What a user (or the dashboard) does to a stored task: cancel it, run it again, delete
it."""

from __future__ import annotations

from taskflow._engine.dependencies import Dependencies
from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.runtime import Runtime
from taskflow._payloads.payloads import is_memory_only
from taskflow.errors import TaskNotRerunnable


class TaskActions:
    """Cancel, retry and delete.

    Args:
        runtime: the manager's running state.
        intake: what this process holds of the task, and how to start a copy.
        dependencies: releases the tasks that waited for a cancelled one.
    """

    def __init__(self, runtime: Runtime, intake: Intake, dependencies: Dependencies) -> None:
        self._runtime = runtime
        self._intake = intake
        self._dependencies = dependencies

    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool:
        """Cancel a task. A pending or blocked task never runs (the tasks that depend
        on it are cancelled too, unless they say ``on_dependency_failure="run"``); a
        running async task is cancelled; a running thread or process task is flagged
        (``get_task_context().is_cancelled()``) and ends ``cancelled``. Returns False
        when the task is already final or unknown.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        await self._intake.forget(task_id)
        previous = await self._runtime.db.cancel_task(task_id, now=utcnow(), reason=reason)
        self._intake.stop_local(task_id, running=previous == "running")
        if previous in ("pending", "blocked"):  # ended now: its dependents may go on
            await self._dependencies.release([task_id])
        return previous in ("pending", "running", "blocked")

    async def retry(self, task_id: str) -> str | None:
        """Run a task again as a new task (``source="retry"``) with the same function,
        arguments, tags, priority and idempotency key. Returns the new id, or None when
        ``task_id`` does not exist.

        Raises:
            NotStarted: the manager is not running.
            TaskNotRerunnable: the task ran from memory (a closure, or arguments that
                could not be stored), so there is nothing stored to run again.
        """
        self._runtime.require_loop()
        task = await self._runtime.db.get_task(task_id)
        if task is None:
            return None
        if is_memory_only(task.payload):
            raise TaskNotRerunnable(
                f"task {task.id} ({task.func_name}) cannot be retried: its function or "
                "arguments lived only in the memory of the process that scheduled it; "
                "schedule it again from your code"
            )
        return await self._intake.rerun(task)

    async def delete(self, task_id: str) -> bool:
        """Delete a final task with its logs; False if it is unknown or not final.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        return await self._runtime.db.delete_task(task_id)
