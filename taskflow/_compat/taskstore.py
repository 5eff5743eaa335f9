"""``task_manager.store``: reading tasks from sync code, as fastapi-taskflow allowed."""

from __future__ import annotations

from taskflow._engine.reader import TaskReader
from taskflow.records import TaskRecord


class TaskStore:
    """Sync read access to tasks (``task_manager.store.get(task_id)``).

    Works from sync routes (a worker thread waits on the manager's loop) and from the
    event loop thread itself (a helper thread runs the query and this call blocks for
    it). In async code prefer ``await task_manager.get_task(task_id)``.
    """

    def __init__(self, reader: TaskReader) -> None:
        self._reader = reader

    def get(self, task_id: str) -> TaskRecord | None:
        """The task with this id, with its logs, or None.

        Raises:
            NotStarted: the manager is not running.
        """
        return self._reader.get_sync(task_id)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[TaskRecord]:
        """Newest tasks first (sync; see :meth:`TaskManager.list_tasks`).

        Raises:
            NotStarted: the manager is not running.
            RuntimeError: called from async code on the manager's loop.
        """
        return self._reader.list_sync(status=status, limit=limit)
