"""Schedules, runs and actions of the management router (fastapi-task-manager's
``schema.task`` models; taskflow's extra fields all have defaults)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from taskflow.records import ScheduledTask

# What ``TaskGroup.tasks`` and ``add_dynamic_task`` return.
Task = ScheduledTask

# The models with a field named ``kwargs`` (the schedule's keyword arguments) carry
# ``type: ignore[no-redef]``: pydantic's mypy plugin gives the ``__init__`` it writes a
# ``**kwargs`` parameter too and reports the clash on the class (pydantic issue 3125).
# pydantic itself accepts the field.


class TaskBase(BaseModel):
    """Fields every schedule has."""

    expression: str | None = Field(description="five-field cron (None: an interval)")
    name: str
    description: str | None = None
    tags: list[str] | None = None
    high_priority: bool = False
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    dynamic: bool = False
    allow_parallel: bool | None = None


class TaskRun(BaseModel):
    """One finished run of a schedule: when it started and how long it took."""

    run_date: datetime
    durations_second: float


class TaskDetailed(TaskBase):  # type: ignore[no-redef]
    """A schedule in ``GET /tasks``.

    ``is_active`` is False while the schedule is paused (``POST /tasks/disable``);
    ``is_running`` is True while one of its runs is running in any process.
    ``retry_after``/``retry_delay`` are always None: a failed run is retried as a task
    (its own retries), never by holding the schedule back.
    """

    task_group_name: str | None
    kwargs: dict[str, Any] | None = None
    function_name: str | None = None
    next_run: datetime | None
    is_active: bool
    is_running: bool = False
    retry_after: datetime | None = None
    retry_delay: float | None = None
    every: float | None = None
    timezone: str = "UTC"
    last_run_at: datetime | None = None


class TaskStatistics(BaseModel):
    """``GET /tasks/{task_group_name}/{task_name}/statistics``: finished runs, oldest
    first (at most ``Config.statistics_history_runs``)."""

    task_group_name: str
    task_name: str
    runs: list[TaskRun]


class AffectedTask(BaseModel):
    """A schedule a bulk action applied to (``task_id``: the run a trigger started)."""

    task_group: str | None
    task: str
    task_id: str | None = None


class TaskActionResponse(BaseModel):
    """Result of disable, enable, trigger, reset-retry and clear-statistics."""

    affected_tasks: list[AffectedTask]
    count: int


class CreateDynamicTaskRequest(BaseModel):  # type: ignore[no-redef]
    """Body of ``POST /tasks``: a dynamic schedule of a registered function.

    taskflow adds ``every`` (seconds, instead of a cron), ``timezone`` (for the cron),
    ``retries`` and ``overlap`` (same as ``allow_parallel``).
    """

    task_group_name: str
    function_name: str
    cron_expression: str | None = Field(None, description="five-field cron expression")
    kwargs: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    high_priority: bool = False
    tags: list[str] | None = None
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    allow_parallel: bool | None = None
    every: float | None = Field(None, description="interval in seconds (instead of cron)")
    timezone: str = "UTC"
    retries: int | None = None
    overlap: bool | None = None


class DynamicTaskResponse(BaseModel):  # type: ignore[no-redef]
    """A schedule as ``POST /tasks`` and ``DELETE /tasks`` return it."""

    task_group_name: str | None
    task_name: str
    function_name: str
    cron_expression: str | None
    kwargs: dict[str, Any] | None = None
    dynamic: bool = True
    every: float | None = None
    timezone: str = "UTC"
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    high_priority: bool = False
    enabled: bool = True
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None


class RegisteredFunctionInfo(BaseModel):
    """A function that dynamic schedules can run."""

    task_group_name: str
    function_name: str


class RegisteredFunctionsResponse(BaseModel):
    """``GET /functions``."""

    functions: list[RegisteredFunctionInfo]
    count: int
