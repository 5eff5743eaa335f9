"""Tasks read back as :class:`~taskflow.records.TaskRecord`: the one decoder of task
rows, and reads for async and sync callers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from taskflow._engine.bridge import SYNC_TIMEOUT, running_loop
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._payloads.payloads import Payloads
from taskflow._store.protocol import Store
from taskflow._store.rows import AttemptRow, LogRow, TaskRow
from taskflow.errors import DecryptionError, TaskArgumentError
from taskflow.records import Attempt, LogLine, TaskProgress, TaskRecord, TaskStatus


class TaskReader:
    """Reads tasks with their logs and attempts, decoded with the configured keys.

    Args:
        runtime: the manager's running state.
        payloads: decodes (and decrypts) arguments and results.
        registry: fills ``executor`` from the registered function, when known here.
    """

    def __init__(self, runtime: Runtime, payloads: Payloads, registry: TaskRegistry) -> None:
        self._runtime = runtime
        self._payloads = payloads
        self._registry = registry

    async def get_task(self, task_id: str, *, logs: bool = True) -> TaskRecord | None:
        """The task with this id read from the database (with its logs and attempts),
        or None. Like every method taking a task id, it accepts the id as a 36-character
        UUID string or as 32 hex digits, in any case, whichever shape the task was stored
        with (new ids are UUID strings).

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        return await self._read(self._runtime.db, task_id, logs=logs)

    async def status(self, task_id: str) -> tuple[str, str] | None:
        """The stored id and status of a task (one row read, nothing decoded), or None.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        row = await self._runtime.db.get_task(task_id)
        return None if row is None else (row.id, row.status)

    async def list_tasks(
        self, *, status: str | None = None, func_name: str | None = None, limit: int | None = 100
    ) -> list[TaskRecord]:
        """Newest tasks first (without logs); ``limit=None`` lists them all.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        rows = await self._runtime.db.list_tasks(status=status, func_name=func_name, limit=limit)
        return [self._with_executor(record_from_row(row, self._payloads, [], [])) for row in rows]

    def get_sync(self, task_id: str) -> TaskRecord | None:
        """:meth:`get_task` from sync code: from another thread it waits on the loop; on the
        loop's own thread a helper thread runs the query and this call blocks for it."""
        loop = self._runtime.require_loop()
        if running_loop() is loop:
            bridge = self._runtime.bridge
            assert bridge is not None
            return bridge.call(lambda db: self._read(db, task_id, logs=True))
        return asyncio.run_coroutine_threadsafe(self.get_task(task_id), loop).result(SYNC_TIMEOUT)

    def list_sync(self, *, status: str | None, limit: int) -> list[TaskRecord]:
        """:meth:`list_tasks` from another thread than the loop's.

        Raises:
            RuntimeError: called on the loop's own thread (use the async form there).
        """
        loop = self._runtime.require_loop()
        if running_loop() is loop:
            raise RuntimeError("use `await task_manager.list_tasks()` in async code")
        reading = self.list_tasks(status=status, func_name=None, limit=limit)
        return asyncio.run_coroutine_threadsafe(reading, loop).result(SYNC_TIMEOUT)

    async def _read(self, db: Store, task_id: str, *, logs: bool) -> TaskRecord | None:
        row = await db.get_task(task_id)
        if row is None:
            return None
        log_rows = await db.get_logs(row.id) if logs else []
        attempts = await db.get_attempts(row.id)
        return self._with_executor(record_from_row(row, self._payloads, log_rows, attempts))

    def record(self, row: TaskRow) -> TaskRecord:
        """A task row (without logs) as a :class:`TaskRecord`."""
        return self._with_executor(record_from_row(row, self._payloads, [], []))

    def _with_executor(self, record: TaskRecord) -> TaskRecord:
        config = self._registry.get(record.func_name)
        record.executor = config.executor if config is not None else None
        return record


def record_from_row(
    row: TaskRow,
    payloads: Payloads,
    logs: Sequence[LogRow],
    attempts: Sequence[AttemptRow],
) -> TaskRecord:
    """A :class:`TaskRecord` from stored rows, decoding what the configured keys allow."""
    args, kwargs, result = decode_values(row, payloads)
    return TaskRecord(
        task_id=row.id,
        func_name=row.func_name,
        func_path=row.func_path,
        status=TaskStatus(row.status),
        args=args,
        kwargs=kwargs,
        result=result,
        created_at=row.created_at,
        start_time=row.started_at,
        end_time=row.finished_at,
        error=row.error,
        stacktrace=row.traceback,
        attempts=row.attempts,
        max_retries=row.max_retries,
        priority=row.priority,
        queue=row.queue,
        tags=dict(row.tags or {}),
        idempotency_key=row.idempotency_key,
        source=row.source,
        schedule_id=row.schedule_id,
        schedule_slot=row.schedule_slot,
        owner=row.owner,
        encrypted=bool(row.encrypted),
        encrypted_payload=str(row.payload).encode() if row.encrypted else None,
        next_attempt_at=row.next_attempt_at,
        cancel_requested=bool(row.cancel_requested),
        progress=TaskProgress.from_json(row.progress),
        workflow_id=row.workflow_id,
        logs=[
            LogLine(
                at=line.at,
                level=line.level,
                message=line.message,
                extra=dict(line.extra or {}),
            )
            for line in logs
        ],
        history=[
            Attempt(
                attempt=a.attempt,
                started_at=a.started_at,
                finished_at=a.finished_at,
                status=a.status,
                error=a.error,
                traceback=a.traceback,
                instance=a.instance,
            )
            for a in attempts
        ],
    )


class StoredValues(Protocol):
    """What :func:`decode_values` reads of a stored task: a :class:`TaskRow`, or a list
    row that carries the payload and result."""

    @property
    def payload(self) -> str: ...

    @property
    def result(self) -> str | None: ...

    @property
    def encrypted(self) -> bool: ...


def decode_values(row: StoredValues, payloads: Payloads) -> tuple[Any, Any, Any]:
    """A task row's ``(args, kwargs, result)``, or three Nones when the configured keys
    cannot decrypt or decode them."""
    encrypted = bool(row.encrypted)
    try:
        args, kwargs = payloads.decode_call(row.payload, encrypted=encrypted)
        result = payloads.decode_result(row.result, encrypted=encrypted)
    except (DecryptionError, TaskArgumentError, ValueError):
        return None, None, None
    return args, kwargs, result
