"""``task_manager.store``: reading tasks from sync code, as fastapi-taskflow allowed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskflow._engine.bridge import SYNC_TIMEOUT, running_loop
from taskflow._payloads.payloads import Payloads
from taskflow.errors import DecryptionError, TaskArgumentError
from taskflow.records import Attempt, LogLine, TaskRecord, TaskStatus

if TYPE_CHECKING:
    from taskflow.manager import TaskManager


class TaskStore:
    """Sync read access to tasks (``task_manager.store.get(task_id)``).

    Works from sync routes (a worker thread waits on the manager's loop) and from the
    event loop thread itself (a helper thread runs the query and this call blocks for
    it). In async code prefer ``await task_manager.get_task(task_id)``.
    """

    def __init__(self, manager: TaskManager) -> None:
        self._manager = manager

    def get(self, task_id: str) -> TaskRecord | None:
        """The task with this id, with its logs, or None.

        Raises:
            NotStarted: the manager is not running.
        """
        manager = self._manager
        loop = manager._require_loop()
        if running_loop() is loop:
            assert manager._bridge is not None
            return manager._bridge.call(lambda db: _read_record(db, manager.payloads, task_id))
        future = asyncio.run_coroutine_threadsafe(manager.get_task(task_id), loop)
        return future.result(SYNC_TIMEOUT)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[TaskRecord]:
        """Newest tasks first (sync; see :meth:`TaskManager.list_tasks`)."""
        manager = self._manager
        loop = manager._require_loop()
        if running_loop() is loop:
            raise RuntimeError("use `await task_manager.list_tasks()` in async code")
        future = asyncio.run_coroutine_threadsafe(
            manager.list_tasks(status=status, limit=limit), loop
        )
        return future.result(SYNC_TIMEOUT)


async def _read_record(db: Any, payloads: Payloads, task_id: str) -> TaskRecord | None:
    row = await db.get_task(task_id)
    if row is None:
        return None
    return record_from_row(
        row, payloads, await db.get_logs(row["id"]), await db.get_attempts(row["id"])
    )


def record_from_row(
    row: Mapping[str, Any],
    payloads: Payloads,
    logs: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
) -> TaskRecord:
    """A :class:`TaskRecord` from stored rows, decoding what the configured keys allow."""
    args, kwargs, result = decode_values(row, payloads)
    return TaskRecord(
        task_id=row["id"],
        func_name=row["func_name"],
        func_path=row["func_path"],
        status=TaskStatus(row["status"]),
        args=args,
        kwargs=kwargs,
        result=result,
        created_at=row["created_at"],
        start_time=row["started_at"],
        end_time=row["finished_at"],
        error=row["error"],
        stacktrace=row["traceback"],
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        priority=row["priority"],
        queue=row["queue"],
        tags=dict(row["tags"] or {}),
        idempotency_key=row["idempotency_key"],
        source=row["source"],
        schedule_id=row["schedule_id"],
        schedule_slot=row["schedule_slot"],
        owner=row["owner"],
        encrypted=bool(row["encrypted"]),
        encrypted_payload=str(row["payload"]).encode() if row["encrypted"] else None,
        next_attempt_at=row["next_attempt_at"],
        cancel_requested=bool(row["cancel_requested"]),
        logs=[
            LogLine(
                at=line["at"],
                level=line["level"],
                message=line["message"],
                extra=dict(line["extra"] or {}),
            )
            for line in logs
        ],
        history=[
            Attempt(
                attempt=a["attempt"],
                started_at=a["started_at"],
                finished_at=a["finished_at"],
                status=a["status"],
                error=a["error"],
                traceback=a["traceback"],
                instance=a["instance"],
            )
            for a in attempts
        ],
    )


def decode_values(row: Mapping[str, Any], payloads: Payloads) -> tuple[Any, Any, Any]:
    """A task row's ``(args, kwargs, result)``, or three Nones when the configured keys
    cannot decrypt or decode them."""
    encrypted = bool(row["encrypted"])
    try:
        args, kwargs = payloads.decode_call(row["payload"], encrypted=encrypted)
        result = payloads.decode_result(row["result"], encrypted=encrypted)
    except (DecryptionError, TaskArgumentError, ValueError):
        return None, None, None
    return args, kwargs, result
