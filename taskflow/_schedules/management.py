"""The management API of fastapi-task-manager (``task_manager.get_manager_router()``):
create, list and delete schedules, list functions and groups, enable, disable, trigger,
statistics, health and config, with its request and response shapes and status codes;
plus taskflow's pause and resume."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from taskflow._schedules.groups import TaskGroup
from taskflow._schedules.management_actions import (
    Management,
    add_action_routes,
    matches,
    schedules_with_rows,
)
from taskflow._schedules.scheduler import ScheduleOptions
from taskflow._store.rows import ScheduleRow
from taskflow.errors import (
    ConfigurationError,
    DuplicateScheduleName,
    ScheduleNotFound,
    StaticScheduleError,
    TaskArgumentError,
)
from taskflow.records import ScheduledTask
from taskflow.schema.task import (
    CreateDynamicTaskRequest,
    DynamicTaskResponse,
    RegisteredFunctionsResponse,
    TaskDetailed,
)

# The request and response models keep the names taskflow used before the
# fastapi-task-manager schema models existed.
CreateTaskRequest = CreateDynamicTaskRequest
TaskResponse = DynamicTaskResponse


class TriggerResponse(BaseModel):
    """``POST /tasks/trigger`` of earlier taskflow versions (kept for imports)."""

    task_name: str
    task_id: str


def build_router(manager: Management) -> APIRouter:
    """The management router for ``manager``; include it under any prefix."""
    router = APIRouter()
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "unregistered function, invalid cron, or a static schedule"},
        404: {"description": "unknown task group or schedule"},
        409: {"description": "a schedule with this name exists"},
    }

    @router.post("/tasks", response_model=DynamicTaskResponse, responses=errors)
    async def create_task(request: CreateDynamicTaskRequest) -> Any:
        group = _group(manager, request.task_group_name)
        options = request.model_dump(
            exclude={"task_group_name", "function_name", "cron_expression", "kwargs", "name"}
        )
        options["tags"] = options["tags"] or []
        try:
            created = await group.add_dynamic_task_async(
                request.function_name,
                request.cron_expression,
                request.kwargs,
                request.name,
                **options,
            )
        except ConfigurationError as exc:
            if exc.field == "cron" and request.cron_expression is not None:
                raise HTTPException(400, detail=str(exc)) from exc
            return _unprocessable(exc)
        except TaskArgumentError as exc:
            return _unprocessable(exc)
        except DuplicateScheduleName as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        except ScheduleNotFound as exc:
            available = sorted(group.functions)
            raise HTTPException(400, detail=f"{exc} Available: {available}") from exc
        return _response(created)

    @router.get("/tasks", response_model=list[TaskDetailed])
    async def list_tasks(
        task_group_name: str | None = Query(None),
        name: str | None = Query(None),
        tag: str | None = Query(None),
    ) -> Any:
        running = await manager.schedules.db.running_schedule_ids()
        return [
            _detailed(item, row, running)
            for item, row in await schedules_with_rows(manager)
            if matches(item, task_group_name=task_group_name, name=name, tag=tag)
        ]

    @router.delete("/tasks", response_model=DynamicTaskResponse, responses=errors)
    async def delete_task(task_group_name: str = Query(...), task_name: str = Query(...)) -> Any:
        _group(manager, task_group_name)
        try:
            removed = await manager.schedules.delete_schedule(task_name, group_name=task_group_name)
        except StaticScheduleError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        except ScheduleNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        return _response(removed)

    @router.get("/functions", response_model=RegisteredFunctionsResponse)
    async def list_functions(task_group_name: str | None = Query(None)) -> Any:
        functions = [
            {"task_group_name": group.name, "function_name": name}
            for group in manager.schedules.task_groups.values()
            if task_group_name is None or group.name == task_group_name
            for name in group.functions
        ]
        return {"functions": functions, "count": len(functions)}

    @router.post("/tasks/pause", response_model=DynamicTaskResponse, responses=errors)
    async def pause_task(task_name: str = Query(...)) -> Any:
        return _response(await _found(manager.schedules.pause_schedule(task_name)))

    @router.post("/tasks/resume", response_model=DynamicTaskResponse, responses=errors)
    async def resume_task(task_name: str = Query(...)) -> Any:
        return _response(await _found(manager.schedules.resume_schedule(task_name)))

    add_action_routes(router, manager)
    return router


def _detailed(item: ScheduledTask, row: ScheduleRow, running: set[str]) -> dict[str, Any]:
    """A schedule as ``GET /tasks`` shows it (fastapi-task-manager's ``TaskDetailed``)."""
    overlap = ScheduleOptions.from_json(row.options).overlap
    return {
        "name": item.name,
        "expression": item.cron_expression,
        "description": item.description,
        "tags": item.tags,
        "high_priority": item.high_priority,
        "retry_backoff": item.retry_backoff,
        "retry_backoff_max": item.retry_backoff_max,
        "dynamic": item.dynamic,
        "allow_parallel": overlap,
        "task_group_name": item.task_group_name,
        "kwargs": item.kwargs,
        "function_name": item.function_name,
        "next_run": item.next_run_at,
        "is_active": item.enabled,
        "is_running": row.id in running,
        "every": item.every,
        "timezone": item.timezone,
        "last_run_at": item.last_run_at,
    }


def _group(manager: Management, name: str) -> TaskGroup:
    group = manager.schedules.task_groups.get(name)
    if group is None:
        raise HTTPException(404, detail=f"no task group named {name!r}")
    return group


async def _found(pending: Any) -> Any:
    from taskflow.errors import TaskNotFound

    try:
        return await pending
    except (ScheduleNotFound, TaskNotFound) as exc:
        raise HTTPException(404, detail=str(exc)) from exc


def _response(item: ScheduledTask) -> dict[str, Any]:
    return {
        "task_group_name": item.task_group_name,
        "task_name": item.name,
        "function_name": item.function_name,
        "cron_expression": item.cron_expression,
        "every": item.every,
        "timezone": item.timezone,
        "kwargs": item.kwargs,
        "dynamic": item.dynamic,
        "description": item.description,
        "tags": item.tags,
        "high_priority": item.high_priority,
        "enabled": item.enabled,
        "next_run_at": item.next_run_at,
        "last_run_at": item.last_run_at,
    }


_FIELDS = {"cron": "cron_expression", "every": "every", "timezone": "timezone"}


def _unprocessable(exc: Exception) -> JSONResponse:
    field = getattr(exc, "field", None) if isinstance(exc, ConfigurationError) else "kwargs"
    location = ["body", _FIELDS.get(field or "", field or "body")]
    detail = [{"loc": location, "msg": str(exc), "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)
