"""Tasks that wait for other tasks: storing them ``blocked`` with their dependencies,
and starting them once every dependency has ended.

A dependent task is released (``pending``, or ``cancelled`` when a dependency did not
succeed and it says ``on_dependency_failure="cancel"``) by whichever comes first:

* the transaction that stores it, when its dependencies have all ended already;
* this process, right after a task it watches ends here (it watches the dependencies of
  the dependents it stored);
* any instance's sweep, once per ``poll_interval`` (at most once a second), of blocked
  tasks whose dependencies have all ended: dependencies that ended in another process,
  or before a crash.

A release is a conditional update in the store, so it happens once whoever races.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskflow._engine.job import Job, utcnow
from taskflow._engine.queues import Queues
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.runtime import Runtime
from taskflow._engine.submission import job_from_row
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import Dependency, NewTask, NewWorkflow, TaskRow
from taskflow._store.schema import DEPENDENCY_FAILURE_MODES
from taskflow.errors import ConfigurationError, TaskArgumentError

logger = logging.getLogger("taskflow")

WATCH_LIMIT = 10_000  # watched ids kept; past it the sweep alone releases


class Dependencies:
    """Stores dependent tasks and releases them.

    Args:
        runtime: the manager's running state (the store, this instance, dispatch).
        registry: the config of a released task's function.
        queues: the queues this process serves (it starts released tasks of those).
    """

    def __init__(self, runtime: Runtime, registry: TaskRegistry, queues: Queues) -> None:
        self._runtime = runtime
        self._registry = registry
        self._queues = queues
        self._watched: set[str] = set()

    async def store(
        self,
        new: Sequence[NewTask],
        edges: Sequence[Dependency],
        *,
        workflow: NewWorkflow | None = None,
        retried: Mapping[str, str] | None = None,
    ) -> None:
        """Store ``new`` (the blocked ones wait for their ``edges``) and ``workflow`` at
        once, and start what may start here: the tasks without dependencies owned by this
        instance, and those whose dependencies had all ended. ``retried`` maps copies to
        the tasks they run again.

        Raises:
            TaskNotFound: a dependency is neither in ``new`` nor stored (nothing stored).
        """
        self._watch(edge.depends_on for edge in edges)
        released = await self._runtime.db.insert_dependent(
            new,
            edges,
            workflow=workflow,
            instance=self._runtime.instance_id,
            queues=self._queues.served,
            now=utcnow(),
            retried=retried,
        )
        instance = self._runtime.instance_id
        for task in new:
            if not task.blocked and task.owner == instance:
                self._start_row(task)
        self._start(released)

    def ended(self, job: Job) -> None:
        """A task ended here: release its dependents when this process stored any."""
        if job.task_id in self._watched:
            self._watched.discard(job.task_id)
            self._runtime.spawn(self.release([job.task_id]), "release dependents")

    async def release(self, ended: Sequence[str] | None) -> int:
        """Release the dependents of ``ended`` whose dependencies have all ended (None:
        any blocked task in that state); start those this process owns. How many it
        starts."""
        released = await self._runtime.db.release_dependents(
            ended,
            instance=self._runtime.instance_id,
            queues=self._queues.served,
            now=utcnow(),
        )
        if ended is None and len(self._watched) > WATCH_LIMIT:
            self._watched.clear()
        return self._start(released)

    async def sweep(self) -> int:
        """Release every blocked task whose dependencies have ended (a batch at a time)."""
        return await self.release(None)

    def _watch(self, ids: Iterable[str]) -> None:
        for task_id in ids:
            self._watched.update(task_id_forms(task_id))

    def _start(self, rows: Sequence[TaskRow]) -> int:
        for row in rows:
            self._start_row(row)
        return len(rows)

    def _start_row(self, row: TaskRow | NewTask) -> None:
        config = self._registry.config_or_none(row.func_name, row.func_path)
        self._runtime.dispatch(job_from_row(row, config))


def dependency_ids(depends_on: Any) -> list[str]:
    """The task ids of ``depends_on``: ids, or records and handles with an ``id`` or
    ``task_id`` string attribute, in order, repeats dropped.

    Raises:
        TaskArgumentError: ``depends_on`` is not a sequence of those.
    """
    if isinstance(depends_on, str) or not isinstance(depends_on, Iterable):
        depends_on = [depends_on]
    ids: list[str] = []
    for item in depends_on:
        task_id = item if isinstance(item, str) else getattr(item, "task_id", None)
        if task_id is None and not isinstance(item, str):
            task_id = getattr(item, "id", None)
        if not isinstance(task_id, str) or not task_id:
            raise TaskArgumentError(
                f"depends_on takes task ids (or records with an id), got {item!r}"
            )
        if task_id not in ids:
            ids.append(task_id)
    return ids


def failure_mode(mode: str) -> str:
    """``on_dependency_failure``, checked.

    Raises:
        ConfigurationError: it is neither ``"cancel"`` nor ``"run"``.
    """
    if mode not in DEPENDENCY_FAILURE_MODES:
        raise ConfigurationError(f'on_dependency_failure must be "cancel" or "run", got {mode!r}')
    return mode
