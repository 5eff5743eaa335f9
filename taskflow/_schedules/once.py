"""One-off scheduled tasks: run a registered function once at a time computed at runtime.

``await task_manager.schedule_once(func, *args, run_at=..., run_key=...)`` stores the
firing as a pending task row, unowned, due at ``run_at`` (see
:mod:`taskflow._store.once_sql`). From the moment the call returns the firing is in the
database: it survives restarts and deploys, and with several processes on one database
whichever process serving its queue claims it first runs it, exactly once. When it runs
it is an ordinary task with ``source="scheduled"``.

``run_key`` names the pending firing: scheduling the same key again replaces it (one
firing, at the new time, with the new arguments), :meth:`OneOffs.cancel_scheduled`
removes it, :meth:`OneOffs.list_scheduled` lists what is pending.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._payloads.payloads import Payloads
from taskflow._store.rows import TaskRow
from taskflow.errors import ScheduleError, TaskArgumentError, TaskflowError, UnknownTaskFunction
from taskflow.records import ScheduledOnce

RUN_KEY_MAX = 255  # the run_key column is VARCHAR(255)


class OneOffs:
    """One-off firings: scheduling, cancelling and listing them.

    Args:
        runtime: the manager's running state.
        registry: the functions firings may run.
        intake: builds the firing's task row.
        payloads: decodes the arguments of listed firings.
        durable: False when the manager runs on a private temporary database, where a
            firing could not survive a restart (then every method refuses).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        registry: TaskRegistry,
        intake: Intake,
        payloads: Payloads,
        durable: bool,
    ) -> None:
        self._runtime = runtime
        self._registry = registry
        self._intake = intake
        self._payloads = payloads
        self._durable = durable

    async def schedule_once(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        run_at: datetime,
        run_key: str,
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
        priority: int | None = None,
        queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Run ``func(*args, **kwargs)`` once, at ``run_at``.

        The firing is committed to the database before this returns. Scheduling a
        ``run_key`` that is pending again replaces that firing atomically (also when
        several processes race): one firing is left, the last call's.

        Args:
            func: a function registered with ``@task_manager.task()`` or
                ``@task_manager.schedule()`` (it is found by name when the firing runs,
                possibly in another process).
            run_at: when to run; naive datetimes are UTC; a past time runs at once.
            run_key: identity of the pending firing (at most 255 characters).
            idempotency_key, tags, priority, queue: as for ``add_task``; the key is
                taken when the firing is scheduled: if a live task holds it already,
                nothing is scheduled.

        Raises:
            NotStarted: the manager is not started.
            ScheduleError: the manager has no database of its own (a firing in the
                temporary database would not survive a restart).
            UnknownTaskFunction: ``func`` is not registered.
            TaskArgumentError: ``run_at``/``run_key`` are invalid, or an argument or
                tag cannot be stored.
        """
        self._check()
        config = self._registry.for_func(func)
        if config is None:
            raise UnknownTaskFunction(
                f"schedule_once() needs a registered function: decorate "
                f"{getattr(func, '__qualname__', func)!r} with @task_manager.task() so the "
                "firing can find it by name when it is due, in whichever process runs it"
            )
        task, _job = self._intake.new_task(
            config,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            source="scheduled",
        )
        task.run_key = _check_run_key(run_key)
        task.next_attempt_at = _as_utc(run_at)
        task.owner = None
        if queue is not None:
            task.queue = queue
        await self._runtime.db.replace_once(task, now=utcnow())

    async def cancel_scheduled(self, run_key: str) -> bool:
        """Remove the pending one-off firing ``run_key``.

        Returns:
            True if a pending firing was removed; False if there was none (it already
            fired, was cancelled, or was never scheduled).

        Raises:
            NotStarted: the manager is not started.
            ScheduleError: the manager has no database of its own.
        """
        self._check()
        return await self._runtime.db.cancel_once(run_key)

    async def list_scheduled(self, before: datetime | None = None) -> list[ScheduledOnce]:
        """Pending one-off firings, soonest first.

        Args:
            before: only firings due at or before this time (naive: UTC); None lists
                every pending firing.

        Raises:
            NotStarted: the manager is not started.
            ScheduleError: the manager has no database of its own.
        """
        self._check()
        bound = None if before is None else _as_utc(before)
        rows = await self._runtime.db.pending_once(before=bound)
        return [scheduled_once_from_row(row, self._payloads) for row in rows]

    def _check(self) -> None:
        self._runtime.require_loop()
        if not self._durable:
            raise ScheduleError(
                "one-off schedules need a database that outlives this process, so the "
                "firing survives a restart: configure one with "
                "TaskManager(snapshot_db='tasks.db') or database_url=..."
            )


def scheduled_once_from_row(row: TaskRow, payloads: Payloads) -> ScheduledOnce:
    """The :class:`ScheduledOnce` view of a pending firing's task row."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    encrypted = bool(row.encrypted)
    if not encrypted:  # unreadable: shown without arguments; running it reports why
        with contextlib.suppress(TaskflowError):
            args, kwargs = payloads.decode_call(row.payload, encrypted=False)
    return ScheduledOnce(
        run_key=row.run_key or "",
        func_name=row.func_name,
        fire_at=row.next_attempt_at,
        args=tuple(args),
        kwargs=dict(kwargs),
        encrypted_payload=row.payload.encode() if encrypted else None,
        queue=row.queue,
        priority=row.priority,
        idempotency_key=row.idempotency_key,
        tags=dict(row.tags or {}),
        created_at=row.created_at,
        task_id=row.id,
    )


def _as_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TaskArgumentError(f"run_at must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_run_key(run_key: str) -> str:
    valid = isinstance(run_key, str) and 0 < len(run_key) <= RUN_KEY_MAX
    if not valid or "\x00" in run_key:
        raise TaskArgumentError(
            f"run_key must be a non-empty string of at most {RUN_KEY_MAX} characters "
            "(without NUL), "
            f"got {run_key!r:.80}"
        )
    return run_key
