"""The management API of fastapi-task-manager: create, list and delete schedules over
REST (``task_manager.get_manager_router()``), plus pause, resume and run-now."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from taskflow.errors import (
    ConfigurationError,
    DuplicateScheduleName,
    ScheduleNotFound,
    StaticScheduleError,
    TaskArgumentError,
)
from taskflow.groups import ScheduledTask, TaskGroup

if TYPE_CHECKING:
    from taskflow.manager import TaskManager


class CreateTaskRequest(BaseModel):
    """Body of ``POST /tasks``: a dynamic schedule of a registered function."""

    task_group_name: str
    function_name: str
    cron_expression: str | None = Field(None, description="five-field cron expression")
    every: float | None = Field(None, description="interval in seconds (instead of cron)")
    timezone: str = "UTC"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    high_priority: bool = False
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    retries: int | None = None
    overlap: bool = True


class TaskResponse(BaseModel):
    """A schedule as returned by the management API."""

    task_group_name: str | None
    task_name: str
    function_name: str
    cron_expression: str | None
    every: float | None = None
    timezone: str = "UTC"
    kwargs: dict[str, Any]
    dynamic: bool
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    high_priority: bool = False
    enabled: bool = True
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None


class TaskListResponse(BaseModel):
    """``GET /tasks``."""

    tasks: list[TaskResponse]
    count: int


class FunctionInfo(BaseModel):
    """A function that dynamic schedules can run."""

    task_group_name: str
    function_name: str


class FunctionListResponse(BaseModel):
    """``GET /functions``."""

    functions: list[FunctionInfo]
    count: int


class TriggerResponse(BaseModel):
    """``POST /tasks/trigger``: the task started now."""

    task_name: str
    task_id: str


def build_router(manager: TaskManager) -> APIRouter:
    """The management router for ``manager``; include it under any prefix."""
    router = APIRouter()
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "static schedules cannot be deleted"},
        404: {"description": "unknown task group, function or schedule"},
        409: {"description": "a schedule with this name exists"},
    }

    @router.post("/tasks", response_model=TaskResponse, responses=errors)
    async def create_task(request: CreateTaskRequest) -> Any:
        group = _group(manager, request.task_group_name)
        options = request.model_dump(
            exclude={"task_group_name", "function_name", "cron_expression", "kwargs", "name"}
        )
        try:
            created = await group.add_dynamic_task_async(
                request.function_name,
                request.cron_expression,
                request.kwargs,
                request.name,
                **options,
            )
        except (ConfigurationError, TaskArgumentError) as exc:
            return _unprocessable(exc)
        except DuplicateScheduleName as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        except ScheduleNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        return _response(created)

    @router.get("/tasks", response_model=TaskListResponse)
    async def list_tasks(task_group_name: str | None = Query(None)) -> Any:
        schedules = [
            _response(item)
            for item in await manager.list_schedules()
            if task_group_name is None or item.task_group_name == task_group_name
        ]
        return {"tasks": schedules, "count": len(schedules)}

    @router.delete("/tasks", response_model=TaskResponse, responses=errors)
    async def delete_task(task_group_name: str = Query(...), task_name: str = Query(...)) -> Any:
        _group(manager, task_group_name)
        try:
            removed = await manager.delete_schedule(task_name, group_name=task_group_name)
        except StaticScheduleError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        except ScheduleNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        return _response(removed)

    @router.get("/functions", response_model=FunctionListResponse)
    async def list_functions(task_group_name: str | None = Query(None)) -> Any:
        functions = [
            {"task_group_name": group.name, "function_name": name}
            for group in manager.task_groups.values()
            if task_group_name is None or group.name == task_group_name
            for name in group.functions
        ]
        return {"functions": functions, "count": len(functions)}

    @router.post("/tasks/pause", response_model=TaskResponse, responses=errors)
    async def pause_task(task_name: str = Query(...)) -> Any:
        return _response(await _found(manager.pause_schedule(task_name)))

    @router.post("/tasks/resume", response_model=TaskResponse, responses=errors)
    async def resume_task(task_name: str = Query(...)) -> Any:
        return _response(await _found(manager.resume_schedule(task_name)))

    @router.post("/tasks/trigger", response_model=TriggerResponse, responses=errors)
    async def trigger_task(task_name: str = Query(...)) -> Any:
        task_id = await _found(manager.trigger_schedule(task_name))
        return {"task_name": task_name, "task_id": task_id}

    return router


def _group(manager: TaskManager, name: str) -> TaskGroup:
    group = manager.task_groups.get(name)
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
