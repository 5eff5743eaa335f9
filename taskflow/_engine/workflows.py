"""Workflows: a chain (each step after the previous one) and a group with a callback
(fan-out, then fan-in), stored at once, all rows in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from taskflow._engine.dependencies import Dependencies, failure_mode
from taskflow._engine.intake import Intake
from taskflow._engine.job import utcnow
from taskflow._engine.runtime import Runtime
from taskflow._payloads.payloads import is_memory_only
from taskflow._store.rows import Dependency, NewTask, NewWorkflow, WorkflowRow
from taskflow.errors import (
    ConfigurationError,
    TaskArgumentError,
    TaskNotFound,
    TaskNotRerunnable,
)
from taskflow.records import Workflow

MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Step:
    """One task of a workflow: a function and its arguments, with its options. Made by
    :func:`step`; :meth:`options` returns a copy with other options."""

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    tags: dict[str, Any] | None = None

    def options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        tags: dict[str, Any] | None = None,
    ) -> Step:
        """This step on another ``queue``, with another ``priority`` or ``tags``."""
        return replace(
            self,
            queue=queue if queue is not None else self.queue,
            priority=priority if priority is not None else self.priority,
            tags=tags if tags is not None else self.tags,
        )


def step(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Step:
    """A workflow step that calls ``func(*args, **kwargs)``; pass it to
    ``TaskManager.chain`` or ``TaskManager.group``. A step reads the results of the
    steps it waited for with ``get_task_context().dependency_results``."""
    if not callable(func):
        raise TaskArgumentError(f"step() takes a task function first, got {func!r}")
    return Step(func, args, kwargs)


class Workflows:
    """Builds and reads workflows.

    Args:
        runtime: the manager's running state.
        intake: builds the rows of new tasks.
        dependencies: stores them with their dependencies, and starts them.
        cancel: cancels one task (``TaskActions.cancel``).
    """

    def __init__(
        self,
        runtime: Runtime,
        intake: Intake,
        dependencies: Dependencies,
        cancel: Callable[..., Awaitable[bool]],
    ) -> None:
        self._runtime = runtime
        self._intake = intake
        self._dependencies = dependencies
        self._cancel = cancel

    async def chain(
        self, *steps: Step, name: str | None = None, on_failure: str = "cancel"
    ) -> Workflow:
        """Store ``steps`` as a chain: each starts when the previous one has ended and
        reads its result from ``get_task_context().dependency_results``. When a step
        does not succeed, the rest end ``cancelled`` (``on_failure="run"``: they run
        anyway). All rows are written in one transaction.

        Raises:
            NotStarted: the manager is not running.
            ConfigurationError: no step, or a bad ``on_failure`` (nothing is stored).
            TaskArgumentError: a step's arguments cannot be stored (nothing is stored).
        """
        if not steps:
            raise ConfigurationError("chain() needs at least one step")
        mode = failure_mode(on_failure)
        new = self._rows(steps)
        edges = []
        for before, after in zip(new, new[1:], strict=False):
            self._block(after, mode)
            edges.append(Dependency(after.id, before.id, 0))
        return await self._store("chain", name, new, edges)

    async def group(
        self,
        steps: Iterable[Step],
        *,
        then: Step | None = None,
        name: str | None = None,
        on_failure: str = "cancel",
    ) -> Workflow:
        """Store ``steps`` to run side by side and, with ``then``, a callback that starts
        once every one of them has ended and reads their results, in order, from
        ``get_task_context().dependency_results``. When a member does not succeed the
        callback ends ``cancelled`` (``on_failure="run"``: it runs anyway). All rows are
        written in one transaction.

        Raises:
            NotStarted: the manager is not running.
            ConfigurationError: no step, or a bad ``on_failure`` (nothing is stored).
            TaskArgumentError: a step's arguments cannot be stored (nothing is stored).
        """
        members = list(steps)
        if not members:
            raise ConfigurationError("group() needs at least one step")
        mode = failure_mode(on_failure)
        new = self._rows([*members, then] if then is not None else members)
        edges: list[Dependency] = []
        if then is not None:
            callback = new[-1]
            self._block(callback, mode)
            edges = [Dependency(callback.id, task.id, i) for i, task in enumerate(new[:-1])]
        return await self._store("group", name, new, edges)

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """A workflow with the count of its tasks by status, or None when unknown.

        Raises:
            NotStarted: the manager has never started.
        """
        db = self._runtime.db
        row = await db.get_workflow(workflow_id)
        if row is None:
            return None
        return _record(row, [task.id for task in await db.workflow_tasks(workflow_id)])

    async def list_workflows(self, *, limit: int = 50) -> list[Workflow]:
        """The latest workflows, newest first, with their task counts (without task ids:
        read one with :meth:`get_workflow`).

        Raises:
            NotStarted: the manager has never started.
        """
        return [_record(row, []) for row in await self._runtime.db.list_workflows(limit=limit)]

    async def cancel_workflow(self, workflow_id: str) -> int:
        """Cancel every task of a workflow that has not ended (those still blocked end
        ``cancelled``, running ones are asked to stop); how many were cancelled.

        Raises:
            NotStarted: the manager is not running.
        """
        self._runtime.require_loop()
        cancelled = 0
        for task in reversed(await self._runtime.db.workflow_tasks(workflow_id)):
            if task.status in ("pending", "blocked", "running"):
                cancelled += await self._cancel(task.id, reason="workflow cancelled")
        return cancelled

    async def retry_workflow(self, workflow_id: str) -> list[str]:
        """Run the steps of a workflow that did not succeed again: each failed,
        cancelled, interrupted or rejected task gets a copy in the same workflow (linked
        to it, as a retry is), waiting for the copies of its dependencies that are run
        again and for the succeeded ones as they are. All in one transaction; the new
        ids, in workflow order (none when nothing failed).

        Raises:
            NotStarted: the manager is not running.
            TaskNotFound: no such workflow.
            ConfigurationError: a step has not ended yet (cancel the workflow first).
            TaskNotRerunnable: a step ran from memory only.
        """
        self._runtime.require_loop()
        db = self._runtime.db
        if await db.get_workflow(workflow_id) is None:
            raise TaskNotFound(f"no workflow {workflow_id!r}")
        steps = await db.workflow_tasks(workflow_id)
        if any(task.status in ("pending", "blocked", "running") for task in steps):
            raise ConfigurationError(
                f"workflow {workflow_id} is still running: cancel it, or wait for it to end"
            )
        failed = {
            task.id: task
            for task in steps
            if task.status != "success" and task.resolution != "retried"
        }
        copies: dict[str, NewTask] = {}
        for task in failed.values():
            if is_memory_only(task.payload):
                raise TaskNotRerunnable(
                    f"step {task.id} ({task.func_name}) ran from memory only: nothing "
                    "stored to run again"
                )
            copies[task.id] = replace(self._intake.copy_row(task), workflow_id=workflow_id)
        edges: list[Dependency] = []
        for edge in await db.workflow_edges(workflow_id):
            waiting = copies.get(edge.task_id)
            if waiting is None:
                continue
            again = copies.get(edge.depends_on)
            target = again.id if again is not None else edge.depends_on
            edges.append(Dependency(waiting.id, target, edge.position))
            self._block(waiting, failed[edge.task_id].on_dependency_failure or "cancel")
        new = list(copies.values())
        if new:
            await self._dependencies.store(
                new, edges, retried={copy.id: original for original, copy in copies.items()}
            )
        return [copy.id for copy in new]

    # -- building ------------------------------------------------------------------------

    def _rows(self, steps: Sequence[Step | None]) -> list[NewTask]:
        new: list[NewTask] = []
        for given in steps:
            if not isinstance(given, Step):
                raise TaskArgumentError(f"workflows take step(func, ...) items, got {given!r}")
            task, job = self._intake.new_task(
                self._intake.storable(given.func),
                given.args,
                given.kwargs,
                idempotency_key=None,
                tags=given.tags,
                priority=given.priority,
                source="manual",
            )
            self._intake.route(task, job, queue=given.queue, defer=None)
            new.append(task)
        return new

    @staticmethod
    def _block(task: NewTask, mode: str) -> None:
        task.blocked = True
        task.on_dependency_failure = mode

    async def _store(
        self, kind: str, name: str | None, new: list[NewTask], edges: list[Dependency]
    ) -> Workflow:
        self._runtime.require_loop()
        label = (name if name is not None else new[0].func_name)[:MAX_NAME]
        workflow = NewWorkflow(id=str(uuid.uuid4()), name=label, kind=kind, created_at=utcnow())
        for task in new:
            task.workflow_id = workflow.id
        await self._dependencies.store(new, edges, workflow=workflow)
        counts: dict[str, int] = {}
        for task in new:
            status = "blocked" if task.blocked else "pending"
            counts[status] = counts.get(status, 0) + 1
        return Workflow(
            id=workflow.id,
            name=workflow.name,
            kind=kind,
            created_at=workflow.created_at,
            task_ids=tuple(task.id for task in new),
            counts=counts,
        )


def _record(row: WorkflowRow, task_ids: list[str]) -> Workflow:
    return Workflow(
        id=row.id,
        name=row.name,
        kind=row.kind,
        created_at=row.created_at,
        task_ids=tuple(task_ids),
        counts=dict(row.counts),
    )
