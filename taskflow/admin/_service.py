"""What the dashboard does: every action goes through the TaskManager API and leaves
an audit entry (who, when, action, target).

The JSON API and the HTML pages share these methods; they differ only in how they
answer. Errors are :class:`ActionError` with the HTTP status that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
CANCELLABLE = ("pending", "blocked", "running")
FINAL = ("success", "failed", "cancelled", "interrupted", "rejected")
DISCARDABLE = ("failed", "interrupted")
REPLAY_BATCH = 100
AUDITED_IDS = 20  # task ids an audit entry of a replay keeps (it counts them all)
HISTORY_BATCH = 500
# What each bulk action applies to, and the word that says it was done.
BULK_STATUSES = {
    "cancel": CANCELLABLE,
    "delete": FINAL,
    "retry": RETRYABLE,
    "discard": DISCARDABLE,
}
BULK_DONE = {
    "cancel": "cancelled",
    "delete": "deleted",
    "retry": "retried",
    "discard": "discarded",
}
# Retrying or discarding "everything matching" leaves resolved failures alone.
UNRESOLVED_ONLY = ("retry", "discard")


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
class BulkResult:
    """Outcome of a bulk action: how many tasks it was done to, how many were
    skipped (not in a status it applies to, or changed meanwhile), the first ids done
    and, for a retry, the first new ids. ``started_at`` is when it began: tasks created
    after it were left alone, and the tasks a retry created are the ``retry`` tasks
    created since."""

    action: str
    started_at: datetime
    done: int = 0
    skipped: int = 0
    task_ids: list[str] = field(default_factory=list)
    new_task_ids: list[str] = field(default_factory=list)

    def note(self, task_id: str, new_id: str | None = None) -> None:
        """Count ``task_id`` as done (a retry's copy is ``new_id``)."""
        self.done += 1
        if len(self.task_ids) < AUDITED_IDS:
            self.task_ids.append(task_id)
        if new_id is not None and len(self.new_task_ids) < AUDITED_IDS:
            self.new_task_ids.append(new_id)

    def audit_detail(self) -> dict[str, Any]:
        """What the audit entry keeps: the counts and the first ids."""
        detail: dict[str, Any] = {BULK_DONE[self.action]: self.done, "skipped": self.skipped}
        detail["task_ids"] = self.task_ids
        if self.action == "retry":
            detail["new_task_ids"] = self.new_task_ids
        return detail


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

    async def discard(self, task_id: str, actor: Actor) -> None:
        """Acknowledge a failed or interrupted task without running it again: it leaves
        the Failures list (``resolution="discarded"``).

        Raises:
            ActionError: 404 unknown task, 400 not failed or interrupted, or resolved.
        """
        task_id, status = await self._stored(task_id)
        if status not in DISCARDABLE:
            raise ActionError(
                400, f"only failed or interrupted tasks can be discarded; this one is {status}"
            )
        if not await self.queries.discard_tasks([task_id], statuses=DISCARDABLE, now=utcnow()):
            raise ActionError(400, "this task was already retried or discarded")
        await self.audit(actor, "discard", task_id, {"status": status})

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
        scope = replace(
            filters,
            statuses=tuple(s for s in (filters.statuses or REPLAYABLE) if s in REPLAYABLE),
            until=until,
            unresolved=True,  # a failure retried or discarded already is dealt with
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

    # -- bulk actions ------------------------------------------------------------------

    def bulk_scope(self, action: str, filters: TaskFilter) -> TaskFilter | None:
        """The tasks ``action`` applies to among those ``filters`` match, created up to
        now (None: none can match, such as cancelling failures)."""
        allowed = BULK_STATUSES[action]
        statuses = tuple(s for s in (filters.statuses or allowed) if s in allowed)
        if not statuses:
            return None
        now = utcnow()
        return replace(
            filters,
            statuses=statuses,
            until=min(filters.until or now, now),
            unresolved=filters.unresolved or action in UNRESOLVED_ONLY,
        )

    async def count_matching(self, action: str, filters: TaskFilter, *, cap: int) -> int:
        """How many of the tasks ``filters`` match ``action`` would act on now,
        counted up to ``cap + 1``."""
        scope = self.bulk_scope(action, filters)
        if scope is None:
            return 0
        return await self.queries.count_tasks(scope, cap=cap)

    async def bulk(self, action: str, task_ids: Sequence[str], actor: Actor) -> BulkResult:
        """Do ``action`` (cancel, delete, retry, discard) to each of ``task_ids`` it
        applies to; the others are skipped. One audit entry."""
        outcome = BulkResult(action, started_at=utcnow())
        wanted = [task_id for task_id in dict.fromkeys(task_ids) if "\x00" not in task_id]
        statuses = await self.queries.statuses_of(
            [form for task_id in wanted for form in task_id_forms(task_id)]
        )
        stored = [
            next((form for form in task_id_forms(task_id) if form in statuses), task_id)
            for task_id in wanted
        ]
        rows = [(task_id, statuses.get(task_id)) for task_id in stored]
        await self._bulk_batch(action, rows, outcome, actor)
        outcome.skipped += len(task_ids) - len(stored)  # repeated or impossible ids
        await self.audit(actor, f"bulk_{action}", "selection", outcome.audit_detail())
        return outcome

    async def bulk_matching(
        self, action: str, filters: TaskFilter, actor: Actor, *, description: dict[str, Any]
    ) -> BulkResult:
        """Do ``action`` to every task matching ``filters`` that it applies to, in
        keyset pages of :data:`REPLAY_BATCH`, and only to tasks created before the
        call. One audit entry with the counts and the first ids."""
        outcome = BulkResult(action, started_at=utcnow())
        scope = self.bulk_scope(action, filters)
        cursor: Cursor | None = None
        while scope is not None:
            page = await self.queries.page_tasks(scope, after=cursor, limit=REPLAY_BATCH)
            rows = [(row.id, row.status) for row in page.rows]
            await self._bulk_batch(action, rows, outcome, actor)
            if page.older is None:
                break
            cursor = page.older
        detail = {**description, **outcome.audit_detail()}
        await self.audit(actor, f"bulk_{action}", "filter", detail)
        return outcome

    async def _bulk_batch(
        self,
        action: str,
        rows: Sequence[tuple[str, str | None]],
        outcome: BulkResult,
        actor: Actor,
    ) -> None:
        """Act on one batch: set-based for delete and discard, one task at a time for
        cancel (a running task is stopped wherever it runs) and retry."""
        allowed = BULK_STATUSES[action]
        ids = [task_id for task_id, status in rows if status in allowed]
        outcome.skipped += len(rows) - len(ids)
        if action == "delete":
            done: Sequence[tuple[str, str | None]] = [
                (task_id, None) for task_id in await self.queries.delete_final_tasks(ids)
            ]
        elif action == "discard":
            discarded = await self.queries.discard_tasks(ids, statuses=allowed, now=utcnow())
            done = [(task_id, None) for task_id in discarded]
        else:
            done = [item for item in [await self._act_one(action, i, actor) for i in ids] if item]
        for task_id, new_id in done:
            outcome.note(task_id, new_id)
        outcome.skipped += len(ids) - len(done)

    async def _act_one(
        self, action: str, task_id: str, actor: Actor
    ) -> tuple[str, str | None] | None:
        """Cancel or retry one task: ``(task_id, new id)``, or None if it could not be."""
        if action == "cancel":
            reason = f"cancelled from the dashboard by {actor.username}"
            return (task_id, None) if await self._manager.cancel(task_id, reason=reason) else None
        try:
            new_id = await self._manager.retry(task_id)
        except TaskNotRerunnable:
            return None  # ran from memory only: nothing stored to run again
        return None if new_id is None else (task_id, new_id)

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
