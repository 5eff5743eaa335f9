"""Compatibility module: fastapi-taskflow's documentation imports
``make_background_func`` from ``fastapi_taskflow.executor``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskflow.manager import TaskManager


def make_background_func(
    task_manager: TaskManager, func: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Callable[[], Awaitable[str]]:
    """An awaitable callable that stores and starts ``func(*args, **kwargs)`` as a task
    when called, returning the task id (see :meth:`TaskManager.enqueue`)."""

    async def run() -> str:
        return await task_manager.enqueue(func, *args, **kwargs)

    return run
