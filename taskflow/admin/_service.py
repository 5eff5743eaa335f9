"""What the dashboard does: every action goes through the TaskManager API and leaves
an audit entry (who, when, action, target).

The JSON API and the HTML pages share these methods; they differ only in how they
answer. Errors are :class:`ActionError` with the HTTP status that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskflow._store.dashboard import Cursor, DashboardStore, TaskFilter
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import NewAuditEntry
from taskflow.admin._util import utcnow
from taskflow.errors import (
    ConfigurationError,
    DuplicateScheduleName,
    ScheduleNotFound,
    StaticScheduleError,
    TaskArgumentError,
    TaskNotRerunnable,
)
from taskflow.records import ScheduledTask

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

RETRYABLE = ("failed", "interrupted", "cancelled", "rejected")
REPLAYABLE = ("failed", "interrupted")
CANCELLABLE = ("pending", "running")
FINAL = ("success", "failed", "cancelled", "interrupted", "rejected")
REPLAY_BATCH = 100
AUDITED_IDS = 20  # task ids an audit entry of a replay keeps (it counts them all)
HISTORY_BATCH = 500


class ActionError(Exception):
    """An action that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for an action, and from where."""

    username: str
    ip: str | None = None


@dataclass(slots=True)
class ReplayResult:
    """Outcome of replaying several tasks: new ids by original id, and skips."""

    dispatched: int = 0
    skipped: int = 0
    results: list[dict[str, str]] = field(default_factory=list)

    @property
    def original_ids(self) -> list[str]:
        """The ids of the tasks replayed, in order."""
        return [item["original_task_id"] for item in self.results]

    @property
    def new_ids(self) -> list[str]:
        """The ids of the tasks the replay created, in the same order."""
        return [item["new_task_id"] for item in self.results]


@dataclass(slots=True)
class NewSchedule:
    """A dynamic schedule as entered in the dashboard's form or the JSON API."""

    task_group_name: str
    function_name: str
    cron_expression: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None


class AdminService:
    """The dashboard's actions on one manager.

    Args:
        manager: the TaskManager whose tasks and schedules are acted on.
        queries: a callable returning the current :class:`DashboardStore`.
    """

    def __init__(self, manager: TaskManager, queries: Callable[[], DashboardStore]) -> None:
        self._manager = manager
        self._queries = queries

    @property
    def queries(self) -> DashboardStore:
        """The dashboard store of the running manager."""
        return self._queries()

    async def audit(
        self, actor: Actor, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record an action."""
        await self.queries.add_audit(
            NewAuditEntry(
                at=utcnow(),
                actor=actor.username[:255],
                action=action,
                target=target[:255],
                detail=detail or {},
                ip=actor.ip,
            )
        )

    # -- tasks -----------------------------------------------------------------------

    async def retry(self, task_id: str, actor: Actor, *, allowed: Sequence[str] = RETRYABLE) -> str:
        """Run a final task again as a new task; returns the new id.

        Raises:
            ActionError: 404 unknown task, 400 a status that cannot be retried, 409 a
                task that ran from memory only (nothing stored to run again).
        """
        task_id, status = await self._stored(task_id)
        if status not in allowed:
            raise ActionError(
                400, f"only {', '.join(allowed)} tasks can be retried; this one is {status}"
            )
        try:
            new_id = await self._manager.retry(task_id)
        except TaskNotRerunnable as exc:
            raise ActionError(409, str(exc)) from None
        if new_id is None:
            raise ActionError(404, f"task {task_id} not found")
        await self.audit(actor, "retry", task_id, {"new_task_id": new_id})
        return new_id

    async def cancel(self, task_id: str, actor: Actor) -> None:
        """Cancel a pending or running task.

        Raises:
            ActionError: 404 unknown task, 400 the task is already final.
        """
        task_id, status = await self._stored(task_id)
        if status not in CANCELLABLE or not await self._manager.cancel(
            task_id, reason=f"cancelled from the dashboard by {actor.username}"
        ):
            raise ActionError(400, f"only pending or running tasks can be cancelled; {status}")
        await self.audit(actor, "cancel", task_id, {"status": status})

    async def delete(self, task_id: str, actor: Actor) -> None:
        """Delete a final task with its logs.

        Raises:
            ActionError: 404 unknown task, 400 the task is not final.
        """
        task_id, status = await self._stored(task_id)
        if status not in FINAL or not await self._manager.delete(task_id):
            raise ActionError(400, f"only finished tasks can be deleted; this one is {status}")
        await self.audit(actor, "delete", task_id, {"status": status})

    async def replay(self, task_ids: Sequence[str], actor: Actor) -> ReplayResult:
        """Retry each failed or interrupted task of ``task_ids``; others are skipped."""
        outcome = ReplayResult()
        # An id with NUL cannot exist (and PostgreSQL refuses it as text): skipped.
        known = [task_id for task_id in dict.fromkeys(task_ids) if "\x00" not in task_id]
        # Either id shape: look up both, then use the one stored.
        statuses = await self.queries.statuses_of(
            [form for task_id in known for form in task_id_forms(task_id)]
        )
        for task_id in task_ids:
            stored = next((form for form in task_id_forms(task_id) if form in statuses), task_id)
            await self._replay_one(stored, statuses.get(stored), outcome)
        await self.audit(
            actor,
            "replay",
            "selection",
            {
                "dispatched": outcome.dispatched,
                "skipped": outcome.skipped,
                "task_ids": list(task_ids)[:AUDITED_IDS],
                "new_task_ids": outcome.new_ids[:AUDITED_IDS],
            },
        )
        return outcome

    async def replay_matching(
        self, filters: TaskFilter, actor: Actor, *, description: dict[str, Any]
    ) -> ReplayResult:
        """Retry every failed or interrupted task matching ``filters``, in batches.

        Only tasks created before the call are replayed, so tasks that the replay itself
        creates (and that may fail meanwhile) are never replayed again.
        """
        outcome = ReplayResult()
        until = min(filters.until or utcnow(), utcnow())
        scope = TaskFilter(
            statuses=tuple(s for s in (filters.statuses or REPLAYABLE) if s in REPLAYABLE),
            func_name=filters.func_name,
            queue=filters.queue,
            source=filters.source,
            tag=filters.tag,
            since=filters.since,
            until=until,
            search=filters.search,
        )
        cursor: Cursor | None = None
        while True:
            page = await self.queries.page_tasks(scope, after=cursor, limit=REPLAY_BATCH)
            for row in page.rows:
                await self._replay_one(row.id, row.status, outcome)
            if page.older is None:
                break
            cursor = page.older
        await self.audit(
            actor,
            "replay",
            "filter",
            {
                **description,
                "dispatched": outcome.dispatched,
                "skipped": outcome.skipped,
                "task_ids": outcome.original_ids[:AUDITED_IDS],
                "new_task_ids": outcome.new_ids[:AUDITED_IDS],
            },
        )
        return outcome

    async def _replay_one(self, task_id: str, status: str | None, outcome: ReplayResult) -> None:
        if status not in REPLAYABLE:
            outcome.skipped += 1
            return
        try:
            new_id = await self._manager.retry(task_id)
        except TaskNotRerunnable:
            new_id = None  # ran from memory only: nothing stored to run again
        if new_id is None:
            outcome.skipped += 1
            return
        outcome.dispatched += 1
        outcome.results.append({"original_task_id": task_id, "new_task_id": new_id})

    async def delete_history(self, before: datetime, actor: Actor, *, label: str) -> int:
        """Delete final tasks that finished before ``before``, in batches; returns how many."""
        deleted = 0
        while True:
            removed = await self._manager.db.prune_finished(before=before, batch_size=HISTORY_BATCH)
            deleted += removed
            if removed < HISTORY_BATCH:
                break
        await self.audit(actor, "delete_history", label, {"deleted": deleted})
        return deleted

    async def _stored(self, task_id: str) -> tuple[str, str]:
        """The task's id as stored (``task_id`` may be in either id shape) and status.

        Raises:
            ActionError: 404 unknown task.
        """
        found = await self.queries.statuses_of(task_id_forms(task_id))
        if not found:
            raise ActionError(404, f"task {task_id} not found")
        return next(iter(found.items()))

    # -- schedules -------------------------------------------------------------------

    async def run_schedule(self, name: str, actor: Actor) -> str:
        """Run a schedule now; returns the new task's id.

        Raises:
            ActionError: 404 no such schedule (or its function is not registered here).
        """
        try:
            task_id = await self._manager.trigger_schedule(name)
        except ScheduleNotFound as exc:
            raise ActionError(404, str(exc)) from exc
        # The scheduler records the runs it fires; a run started by hand is the
        # schedule's last run too.
        await self.queries.note_schedule_run(name, task_id=task_id, at=utcnow())
        await self.audit(actor, "run_now", name, {"task_id": task_id})
        return task_id

    async def pause_schedule(self, name: str, actor: Actor) -> ScheduledTask:
        """Stop firing a schedule.

        Raises:
            ActionError: 404 no such schedule.
        """
        try:
            schedule = await self._manager.pause_schedule(name)
        except ScheduleNotFound as exc:
            raise ActionError(404, str(exc)) from exc
        await self.audit(actor, "pause", name)
        return schedule

    async def resume_schedule(self, name: str, actor: Actor) -> ScheduledTask:
        """Fire a paused schedule again.

        Raises:
            ActionError: 404 no such schedule.
        """
        try:
            schedule = await self._manager.resume_schedule(name)
        except ScheduleNotFound as exc:
            raise ActionError(404, str(exc)) from exc
        await self.audit(actor, "resume", name)
        return schedule

    async def delete_schedule(self, name: str, actor: Actor) -> ScheduledTask:
        """Delete a dynamic schedule.

        Raises:
            ActionError: 404 no such schedule, 400 it is static.
        """
        try:
            schedule = await self._manager.delete_schedule(name)
        except StaticScheduleError as exc:
            raise ActionError(400, str(exc)) from exc
        except ScheduleNotFound as exc:
            raise ActionError(404, str(exc)) from exc
        await self.audit(actor, "delete_schedule", name)
        return schedule

    async def create_schedule(self, request: NewSchedule, actor: Actor) -> ScheduledTask:
        """Create a dynamic schedule of a TaskGroup function; kwargs are checked against
        the function's signature.

        Raises:
            ActionError: 404 unknown group or function, 409 name taken, 422 invalid
                trigger, timezone or kwargs.
        """
        group = self._manager.task_groups.get(request.task_group_name)
        if group is None:
            raise ActionError(404, f"no task group named {request.task_group_name!r}")
        try:
            created = await group.add_dynamic_task_async(
                request.function_name,
                request.cron_expression or None,
                request.kwargs,
                request.name or None,
                every=request.every,
                timezone=request.timezone or "UTC",
                description=request.description or None,
            )
        except (ConfigurationError, TaskArgumentError) as exc:
            raise ActionError(422, str(exc)) from exc
        except DuplicateScheduleName as exc:
            raise ActionError(409, str(exc)) from exc
        except ScheduleNotFound as exc:
            raise ActionError(404, str(exc)) from exc
        await self.audit(
            actor,
            "create_schedule",
            created.name,
            {"function": f"{request.task_group_name}.{request.function_name}"},
        )
        return created
