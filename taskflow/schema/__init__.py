"""Pydantic models of the management API, under fastapi-task-manager's module names.

``from fastapi_task_manager.schema.task import TaskDetailed`` becomes
``from taskflow.schema.task import TaskDetailed``; every model is also importable from
``taskflow.schema`` directly.
"""

from taskflow.schema.health import ConfigResponse, HealthResponse
from taskflow.schema.task import (
    AffectedTask,
    CreateDynamicTaskRequest,
    DynamicTaskResponse,
    RegisteredFunctionInfo,
    RegisteredFunctionsResponse,
    Task,
    TaskActionResponse,
    TaskBase,
    TaskDetailed,
    TaskRun,
    TaskStatistics,
)
from taskflow.schema.task_group import TaskGroup

__all__ = [
    "AffectedTask",
    "ConfigResponse",
    "CreateDynamicTaskRequest",
    "DynamicTaskResponse",
    "HealthResponse",
    "RegisteredFunctionInfo",
    "RegisteredFunctionsResponse",
    "Task",
    "TaskActionResponse",
    "TaskBase",
    "TaskDetailed",
    "TaskGroup",
    "TaskRun",
    "TaskStatistics",
]
