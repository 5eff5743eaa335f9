"""fastapi-tasks' API: ``add_tasks(app)``, and its ``tasks`` module, so that
``from fastapi_tasks.tasks import Task`` becomes ``from taskflow.tasks import Task``.

``TasksBatch`` is what ``tasks.after_route`` and ``tasks.after_response`` are.
fastapi-tasks' ``TasksScheduler`` (built by hand from an anyio task group kept on
``request.state``) has no equivalent: every task here is a durable row run by the
TaskManager, so use the ``Tasks`` dependency (see docs/migrating.md).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from taskflow._engine.registry import TaskConfig
from taskflow._fastapi.background import patch_fastapi
from taskflow._fastapi.tasks_api import Tasks
from taskflow._fastapi.timing import Task, TaskErrorHandler, TaskOptions
from taskflow._fastapi.timing import TimingBatch as TasksBatch
from taskflow.manager import TaskManager

__all__ = ["Task", "TaskConfig", "TaskErrorHandler", "Tasks", "TasksBatch", "add_tasks"]


def add_tasks(
    app: FastAPI,
    config: TaskOptions | TaskConfig | dict[str, Any] | None = None,
    *,
    task_manager: TaskManager | None = None,
) -> TaskManager:
    """Enable ``Tasks`` on ``app``: installs the injection and the manager's lifespan.

    Args:
        app: the FastAPI application.
        config: default :class:`TaskOptions` for ``Tasks``, as a ``TaskOptions``, a
            fastapi-tasks style ``TaskConfig(name=, shield=, on_error=)`` or a dict.
        task_manager: the manager to use; default: the one already on the app
            (``init_app``), else a new ``TaskManager`` on ``TASKFLOW_DATABASE_URL`` or,
            without it, a private temporary SQLite database.

    Returns:
        The TaskManager in use.
    """
    manager = task_manager or getattr(app.state, "taskflow_manager", None)
    if manager is None:
        manager = TaskManager(database_url=os.environ.get("TASKFLOW_DATABASE_URL"))
    if config is not None:
        manager.task_options = _options(config)
    patch_fastapi(manager)
    manager.init_app(app)
    return manager


def _options(config: TaskOptions | TaskConfig | dict[str, Any]) -> TaskOptions:
    """``add_tasks``' ``config`` as :class:`TaskOptions`."""
    if isinstance(config, TaskOptions):
        return config
    if isinstance(config, TaskConfig):
        return TaskOptions(name=config.name, shield=config.shielded, on_error=config.on_error)
    return TaskOptions(**config)
