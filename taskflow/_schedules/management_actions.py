"""The read-only and bulk routes of the management router (fastapi-task-manager's
``/task-groups``, statistics, ``/health``, ``/config``, enable, disable, trigger,
reset-retry and clear-statistics).

Bulk actions take the same filters (``task_group_name``, ``task_name``, ``tag``), act on
every matching schedule, and answer 404 when none matches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query

from taskflow._compat.config import response_fields
from taskflow._store.rows import ScheduleRow
from taskflow.records import ScheduledTask
from taskflow.schema.health import ConfigResponse, HealthResponse
from taskflow.schema.task import TaskActionResponse, TaskStatistics
from taskflow.schema.task_group import TaskGroup as TaskGroupSchema

if TYPE_CHECKING:
    from taskflow._compat.config import Config
    from taskflow._schedules.api import Schedules


@dataclass(frozen=True, slots=True)
class Management:
    """What the management router works with.

    Attributes:
        schedules: the manager's schedules.
        health: the manager's ``health_check``.
        config: the fastapi-task-manager ``Config`` in use.
        history_runs: how many runs per schedule the statistics show.
    """

    schedules: Schedules
    health: Callable[[], Awaitable[HealthResponse]]
    config: Callable[[], Config]
    history_runs: Callable[[], int]


def matches(
    item: ScheduledTask, *, task_group_name: str | None, name: str | None, tag: str | None
) -> bool:
    """Whether a schedule passes the management API's filters."""
    return (
        (task_group_name is None or item.task_group_name == task_group_name)
        and (name is None or item.name == name)
        and (tag is None or tag in item.tags)
    )


async def schedules_with_rows(manager: Management) -> list[tuple[ScheduledTask, Any]]:
    """Every stored schedule with its row."""
    return [
        (manager.schedules.scheduled_task(row), row)
        for row in await manager.schedules.db.list_schedules()
    ]


async def _matching(
    manager: Management, task_group_name: str | None, task_name: str | None, tag: str | None
) -> list[tuple[ScheduledTask, Any]]:
    found = [
        (item, row)
        for item, row in await schedules_with_rows(manager)
        if matches(item, task_group_name=task_group_name, name=task_name, tag=tag)
    ]
    if not found:
        raise HTTPException(404, detail="No matching tasks found")
    return found


def _affected(
    pairs: list[tuple[ScheduledTask, ScheduleRow]], ids: list[str | None] | None = None
) -> Any:
    task_ids: list[str | None] = ids or [None] * len(pairs)
    affected = [
        {"task_group": item.task_group_name, "task": item.name, "task_id": task_id}
        for (item, _), task_id in zip(pairs, task_ids, strict=True)
    ]
    return {"affected_tasks": affected, "count": len(affected)}


def add_action_routes(router: APIRouter, manager: Management) -> None:
    """Add the group, statistics, health, config and bulk routes to ``router``."""
    _add_read_routes(router, manager)
    _add_bulk_routes(router, manager)


def _add_read_routes(router: APIRouter, manager: Management) -> None:
    @router.get("/task-groups", response_model=list[TaskGroupSchema])
    async def list_task_groups(
        name: str | None = Query(None), tag: str | None = Query(None)
    ) -> Any:
        counts: dict[str | None, int] = {}
        for row in await manager.schedules.db.list_schedules():
            counts[row.group_name] = counts.get(row.group_name, 0) + 1
        return [
            {
                "name": group.name,
                "tags": group.tags,
                "allow_parallel": group.allow_parallel,
                "task_count": counts.get(group.name, 0),
            }
            for group in manager.schedules.task_groups
            if (name is None or group.name == name) and (tag is None or tag in group.tags)
        ]

    @router.get(
        "/tasks/{task_group_name}/{task_name}/statistics",
        response_model=TaskStatistics,
        responses={404: {"description": "no such schedule"}},
    )
    async def task_statistics(task_group_name: str, task_name: str) -> Any:
        item, row = (await _matching(manager, task_group_name, task_name, None))[0]
        runs = await manager.schedules.db.schedule_runs(row.id, limit=manager.history_runs())
        return {
            "task_group_name": task_group_name,
            "task_name": item.name,
            "runs": [
                {
                    "run_date": run.started_at,
                    "durations_second": (run.finished_at - run.started_at).total_seconds(),
                }
                for run in runs
            ],
        }

    @router.get("/health", response_model=HealthResponse)
    async def health() -> Any:
        return await manager.health()

    @router.get("/config", response_model=ConfigResponse)
    async def config() -> Any:
        return response_fields(manager.config())


def _add_bulk_routes(router: APIRouter, manager: Management) -> None:
    errors: dict[int | str, dict[str, Any]] = {404: {"description": "No matching tasks found"}}

    @router.post("/tasks/disable", response_model=TaskActionResponse, responses=errors)
    async def disable_tasks(
        task_group_name: str | None = None, task_name: str | None = None, tag: str | None = None
    ) -> Any:
        pairs = await _matching(manager, task_group_name, task_name, tag)
        for item, _ in pairs:
            await manager.schedules.pause_schedule(item.name)
        return _affected(pairs)

    @router.post("/tasks/enable", response_model=TaskActionResponse, responses=errors)
    async def enable_tasks(
        task_group_name: str | None = None, task_name: str | None = None, tag: str | None = None
    ) -> Any:
        pairs = await _matching(manager, task_group_name, task_name, tag)
        for item, _ in pairs:
            await manager.schedules.resume_schedule(item.name)
        return _affected(pairs)

    @router.post("/tasks/reset-retry", response_model=TaskActionResponse, responses=errors)
    async def reset_retry(
        task_group_name: str | None = None, task_name: str | None = None, tag: str | None = None
    ) -> Any:
        # A failed run never holds its schedule back in taskflow (it is retried as a
        # task), so there is no backoff state to clear: the matching schedules are
        # reported, as fastapi-task-manager does after clearing its state.
        return _affected(await _matching(manager, task_group_name, task_name, tag))

    @router.post("/tasks/trigger", response_model=TaskActionResponse, responses=errors)
    async def trigger_tasks(
        task_group_name: str | None = None, task_name: str | None = None, tag: str | None = None
    ) -> Any:
        pairs = await _matching(manager, task_group_name, task_name, tag)
        ids = [await _trigger(manager, item.name) for item, _ in pairs]
        return _affected(pairs, ids)

    @router.delete("/tasks/statistics", response_model=TaskActionResponse, responses=errors)
    async def clear_statistics(
        task_group_name: str | None = None, task_name: str | None = None, tag: str | None = None
    ) -> Any:
        pairs = await _matching(manager, task_group_name, task_name, tag)
        for _, row in pairs:
            await manager.schedules.db.clear_schedule_runs(row.id)
        return _affected(pairs)


async def _trigger(manager: Management, name: str) -> str | None:
    """Start a run of schedule ``name`` now; None when its function is not registered
    in this process (nothing can run it here)."""
    from taskflow.errors import ScheduleNotFound

    try:
        return await manager.schedules.trigger_schedule(name)
    except ScheduleNotFound:
        return None
