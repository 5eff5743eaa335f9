"""``Tasks`` and ``add_tasks``: fastapi-tasks' API on top of a TaskManager."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTasks

from taskflow.background import ManagedBackgroundTasks, patch_fastapi
from taskflow.errors import NotStarted
from taskflow.timing import TaskOptions

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow.manager import TaskManager


class Tasks(ManagedBackgroundTasks):
    """The per-request task scheduler, for use as a parameter annotation.

    ``tasks: Tasks`` in a route or dependency, and ``tasks: Tasks = Depends()``, both
    receive the request's :class:`ManagedBackgroundTasks` once ``add_tasks(app)`` (or
    ``task_manager.install(app)``) has run.
    """

    def __new__(cls, background_tasks: BackgroundTasks) -> Any:  # type: ignore[misc]
        if isinstance(background_tasks, ManagedBackgroundTasks):
            return background_tasks
        raise NotStarted(
            "Tasks needs taskflow's injection: call add_tasks(app) (or task_manager.install(app))"
        )


def add_tasks(
    app: FastAPI,
    config: TaskOptions | dict[str, Any] | None = None,
    *,
    task_manager: TaskManager | None = None,
) -> TaskManager:
    """Enable ``Tasks`` on ``app``: installs the injection and the manager's lifespan.

    Args:
        app: the FastAPI application.
        config: default :class:`TaskOptions` (or a dict of them) for ``Tasks``.
        task_manager: the manager to use; default: the one already on the app
            (``init_app``), else a new ``TaskManager`` on ``TASKFLOW_DATABASE_URL`` or,
            without it, a private temporary SQLite database.

    Returns:
        The TaskManager in use.
    """
    from taskflow.manager import TaskManager

    manager = task_manager or getattr(app.state, "taskflow_manager", None)
    if manager is None:
        manager = TaskManager(database_url=os.environ.get("TASKFLOW_DATABASE_URL"))
    if config is not None:
        manager.task_options = config if isinstance(config, TaskOptions) else TaskOptions(**config)
    patch_fastapi(manager)
    manager.init_app(app)
    return manager
