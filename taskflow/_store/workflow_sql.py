"""Tasks that wait for other tasks: dependencies and workflows, in SQL.

A task with dependencies is stored ``blocked`` with one ``taskflow_task_deps`` row per
dependency. When every dependency has ended, it is *released*: ``pending`` (owned by the
releasing instance when that instance serves its queue, else claimable by any), or, when
a dependency did not succeed and the task says ``on_dependency_failure="cancel"``, ended
``cancelled`` with the reason, which in turn releases its own dependents. A release is an
``UPDATE ... WHERE status = 'blocked'``, so two instances releasing the same task at once
release it once.

Releases happen in the transaction that inserts a task whose dependencies have all ended
already, right after an attempt ends in the process that watches it
(:meth:`WorkflowSQL.release_dependents`), and in every instance's periodic sweep of
blocked tasks whose dependencies have all ended (the same method with no ids), which is
what makes a crash between a dependency's end and its release harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.dependencies import RETRIED_STATUSES, SWEEP_BATCH, dependency_verdict
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import (
    Dependency,
    DependencyLink,
    NewTask,
    NewWorkflow,
    TaskRow,
    WorkflowRow,
)
from taskflow._store.schema import TERMINAL_STATUSES, task_deps, tasks, workflows
from taskflow._store.task_sql import TaskSQL
from taskflow.errors import TaskNotFound

_ENDED = frozenset(TERMINAL_STATUSES)
# A workflow's counts leave out the tasks that were run again: their copies count.
_NOT_RETRIED = sa.or_(tasks.c.resolution.is_(None), tasks.c.resolution != "retried")


class WorkflowSQL(TaskSQL):
    """Dependencies and workflows on SQLite and PostgreSQL."""

    async def insert_dependent(
        self,
        new: Sequence[NewTask],
        edges: Sequence[Dependency],
        *,
        workflow: NewWorkflow | None,
        instance: str,
        queues: Sequence[str],
        now: datetime,
        retried: Mapping[str, str] | None = None,
    ) -> list[TaskRow]:
        """Insert ``new`` (some ``blocked``), their ``edges`` and ``workflow`` in one
        transaction, then release the blocked ones whose dependencies have all ended.
        ``retried`` maps new tasks to the tasks they run again: each copy records
        ``retry_of`` and its original (failed, interrupted, cancelled or rejected) is
        resolved as ``retried``, so the workflow's counts leave it out.

        Returns the tasks released and owned by ``instance`` (to start them).

        Raises:
            TaskNotFound: a dependency is neither in ``new`` nor stored (nothing is
                written).
            DatabaseError: the database refused the write.
        """
        async with self.write() as conn:
            inside = {task.id for task in new}
            stored = await self._existing(
                conn, [e.depends_on for e in edges if e.depends_on not in inside]
            )
            resolved = [
                Dependency(e.task_id, stored.get(e.depends_on, e.depends_on), e.position)
                for e in edges
            ]
            missing = sorted({e.depends_on for e in resolved} - inside - set(stored.values()))
            if missing:
                raise TaskNotFound(f"depends_on names no stored task: {', '.join(missing)}")
            if workflow is not None:
                await conn.execute(
                    workflows.insert(),
                    [
                        {
                            "id": workflow.id,
                            "name": workflow.name,
                            "kind": workflow.kind,
                            "created_at": workflow.created_at,
                        }
                    ],
                )
            await conn.execute(tasks.insert(), [task.columns() for task in new])
            if resolved:
                await conn.execute(
                    task_deps.insert(),
                    [
                        {"task_id": e.task_id, "depends_on": e.depends_on, "position": e.position}
                        for e in resolved
                    ],
                )
            for copy, original in (retried or {}).items():
                await self._link_retry(conn, copy, original, now=now)
            blocked = [task.id for task in new if task.blocked]
            return await self._release(conn, blocked, instance=instance, queues=queues, now=now)

    @staticmethod
    async def _link_retry(
        conn: AsyncConnection, copy: str, original: str, *, now: datetime
    ) -> None:
        await conn.execute(tasks.update().where(tasks.c.id == copy).values(retry_of=original))
        await conn.execute(
            tasks.update()
            .where(
                tasks.c.id == original,
                tasks.c.resolution.is_(None),
                tasks.c.status.in_(RETRIED_STATUSES),
            )
            .values(resolution="retried", resolved_at=now)
        )

    async def _existing(self, conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
        """The stored id of each of ``ids`` that exists, by the id given (either shape).
        On PostgreSQL the rows are share-locked, so a dependency ending meanwhile commits
        first and its end is seen, or waits for this insert and then sees its dependents."""
        wanted = {form: given for given in ids for form in task_id_forms(given)}
        if not wanted:
            return {}
        query = sa.select(tasks.c.id).where(tasks.c.id.in_(list(wanted)))
        if self.dialect == "postgresql":
            query = query.with_for_update(read=True)
        found = (await conn.execute(query)).scalars().all()
        return {wanted[stored]: stored for stored in found}

    async def release_dependents(
        self,
        ended: Sequence[str] | None,
        *,
        instance: str,
        queues: Sequence[str],
        now: datetime,
    ) -> list[TaskRow]:
        """Release the blocked dependents of the ``ended`` tasks whose dependencies have
        all ended; with ``ended`` None, any blocked tasks in that state (the sweep, at
        most :data:`SWEEP_BATCH`). Cancelled dependents release their own, in the same
        transaction.

        Returns the tasks released and owned by ``instance`` (to start them).
        """
        if ended is not None and not ended:
            return []
        async with self.read() as conn:  # most sweeps find nothing: no write transaction
            if ended is None:
                candidates = await self._sweep_candidates(conn)
            else:
                forms = [form for task_id in ended for form in task_id_forms(task_id)]
                candidates = await self._dependents(conn, forms)
        if not candidates:
            return []
        async with self.write() as conn:  # each release checks again that it is blocked
            return await self._release(conn, candidates, instance=instance, queues=queues, now=now)

    async def _sweep_candidates(self, conn: AsyncConnection) -> list[str]:
        dep = tasks.alias("dep")
        open_dependency = (
            sa.select(sa.literal(1))
            .select_from(task_deps.join(dep, dep.c.id == task_deps.c.depends_on))
            .where(task_deps.c.task_id == tasks.c.id, dep.c.status.not_in(list(_ENDED)))
        )
        query = (
            sa.select(tasks.c.id)
            .where(tasks.c.status == "blocked", ~sa.exists(open_dependency))
            .order_by(tasks.c.created_at)
            .limit(SWEEP_BATCH)
        )
        return list((await conn.execute(query)).scalars())

    async def _dependents(self, conn: AsyncConnection, ids: Sequence[str]) -> list[str]:
        query = (
            sa.select(task_deps.c.task_id)
            .distinct()
            .join(tasks, tasks.c.id == task_deps.c.task_id)
            .where(task_deps.c.depends_on.in_(list(ids)), tasks.c.status == "blocked")
        )
        return list((await conn.execute(query)).scalars())

    async def _release(
        self,
        conn: AsyncConnection,
        candidates: Sequence[str],
        *,
        instance: str,
        queues: Sequence[str],
        now: datetime,
    ) -> list[TaskRow]:
        """Release what can be released among ``candidates``, then their dependents when
        some were cancelled, until nothing more changes."""
        mine: list[TaskRow] = []
        claimable: set[str] = set()
        while candidates:
            run, cancel = await self._verdicts(conn, candidates)
            if run:
                rows = await conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(run), tasks.c.status == "blocked")
                    .values(
                        status="pending",
                        next_attempt_at=now,
                        owner=sa.case(
                            (tasks.c.queue.in_(list(queues) or [""]), instance), else_=None
                        ),
                    )
                    .returning(*tasks.c)
                )
                for row in rows.mappings():
                    task = TaskRow.of(row)
                    if task.owner == instance:
                        mine.append(task)
                    else:
                        claimable.add(task.queue)
            cancelled: list[str] = []
            for task_id, reason in cancel.items():
                done = await conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id, tasks.c.status == "blocked")
                    .values(status="cancelled", finished_at=now, error=reason)
                )
                if done.rowcount:
                    cancelled.append(task_id)
            candidates = await self._dependents(conn, cancelled) if cancelled else []
        if claimable:
            await self._notify(conn, claimable)
        return mine

    async def _verdicts(
        self, conn: AsyncConnection, candidates: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Which of the blocked ``candidates`` run, and which are cancelled (with why)."""
        dep = tasks.alias("dep")
        query = (
            sa.select(
                task_deps.c.task_id,
                task_deps.c.depends_on,
                dep.c.status,
                tasks.c.on_dependency_failure,
            )
            .join(tasks, tasks.c.id == task_deps.c.task_id)
            .outerjoin(dep, dep.c.id == task_deps.c.depends_on)
            .where(task_deps.c.task_id.in_(list(candidates)), tasks.c.status == "blocked")
            .order_by(task_deps.c.task_id, task_deps.c.position)
        )
        edges: dict[str, list[tuple[str, str | None]]] = {}
        modes: dict[str, str | None] = {}
        for task_id, depends_on, status, mode in await conn.execute(query):
            edges.setdefault(task_id, []).append((depends_on, status))
            modes[task_id] = mode
        run: list[str] = []
        cancel: dict[str, str] = {}
        for task_id, statuses in edges.items():
            verdict = dependency_verdict(statuses, modes[task_id])
            if verdict == "":
                run.append(task_id)
            elif verdict is not None:
                cancel[task_id] = verdict
        return run, cancel

    async def dependency_results(self, task_id: str) -> list[tuple[str, str | None, bool]]:
        """The results of ``task_id``'s dependencies in ``depends_on`` order: id, stored
        result (None for none, or a deleted dependency) and whether it is encrypted."""
        query = (
            sa.select(task_deps.c.depends_on, tasks.c.result, tasks.c.encrypted)
            .outerjoin(tasks, tasks.c.id == task_deps.c.depends_on)
            .where(task_deps.c.task_id.in_(task_id_forms(task_id)))
            .order_by(task_deps.c.position)
        )
        async with self.read() as conn:
            return [
                (dep, result, bool(encrypted))
                for dep, result, encrypted in await conn.execute(query)
            ]

    async def dependency_links(
        self, task_id: str
    ) -> tuple[list[DependencyLink], list[DependencyLink]]:
        """What ``task_id`` waits for (in order) and what waits for it (oldest first)."""
        forms = task_id_forms(task_id)
        up = (
            sa.select(
                task_deps.c.depends_on.label("id"),
                tasks.c.func_name,
                tasks.c.status,
                task_deps.c.position,
            )
            .outerjoin(tasks, tasks.c.id == task_deps.c.depends_on)
            .where(task_deps.c.task_id.in_(forms))
            .order_by(task_deps.c.position)
        )
        down = (
            sa.select(tasks.c.id, tasks.c.func_name, tasks.c.status, task_deps.c.position)
            .join(tasks, tasks.c.id == task_deps.c.task_id)
            .where(task_deps.c.depends_on.in_(forms))
            .order_by(tasks.c.created_at, tasks.c.id)
        )
        async with self.read() as conn:
            upstream = [DependencyLink.of(row) for row in (await conn.execute(up)).mappings()]
            downstream = [DependencyLink.of(row) for row in (await conn.execute(down)).mappings()]
        return upstream, downstream

    async def get_workflow(self, workflow_id: str) -> WorkflowRow | None:
        """A workflow with the count of its tasks by status, or None."""
        async with self.read() as conn:
            row = (
                (await conn.execute(sa.select(workflows).where(workflows.c.id == workflow_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            counts = await self._counts(conn, [workflow_id])
        return WorkflowRow(**{**row, "counts": counts.get(workflow_id, {})})

    async def list_workflows(
        self, *, limit: int = 50, before: datetime | None = None
    ) -> list[WorkflowRow]:
        """Workflows, newest first (``before``: created before that moment), with the
        count of their tasks by status."""
        query = sa.select(workflows).order_by(workflows.c.created_at.desc()).limit(limit)
        if before is not None:
            query = query.where(workflows.c.created_at < before)
        async with self.read() as conn:
            rows = list((await conn.execute(query)).mappings())
            counts = await self._counts(conn, [row["id"] for row in rows])
        return [WorkflowRow(**{**row, "counts": counts.get(row["id"], {})}) for row in rows]

    async def _counts(self, conn: AsyncConnection, ids: Sequence[str]) -> dict[str, dict[str, int]]:
        if not ids:
            return {}
        query = (
            sa.select(tasks.c.workflow_id, tasks.c.status, sa.func.count())
            .where(tasks.c.workflow_id.in_(list(ids)), _NOT_RETRIED)
            .group_by(tasks.c.workflow_id, tasks.c.status)
        )
        counts: dict[str, dict[str, int]] = {}
        for workflow_id, status, count in await conn.execute(query):
            counts.setdefault(workflow_id, {})[status] = count
        return counts

    async def workflow_edges(self, workflow_id: str) -> list[Dependency]:
        """The dependencies of a workflow's tasks."""
        query = (
            sa.select(task_deps.c.task_id, task_deps.c.depends_on, task_deps.c.position)
            .join(tasks, tasks.c.id == task_deps.c.task_id)
            .where(tasks.c.workflow_id == workflow_id)
            .order_by(task_deps.c.task_id, task_deps.c.position)
        )
        async with self.read() as conn:
            return [Dependency(*row) for row in await conn.execute(query)]

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRow]:
        """The tasks of a workflow, in the order they were created."""
        query = (
            sa.select(tasks)
            .where(tasks.c.workflow_id == workflow_id)
            .order_by(tasks.c.created_at, tasks.c.id)
        )
        async with self.read() as conn:
            return [TaskRow.of(row) for row in (await conn.execute(query)).mappings()]
