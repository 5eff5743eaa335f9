"""``Tasks`` and ``add_tasks``: fastapi-tasks' API on top of a TaskManager."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import background as fastapi_background
from fastapi.dependencies import utils as fastapi_utils
from starlette.background import BackgroundTasks

from taskflow._engine.registry import TaskConfig
from taskflow._fastapi.background import UNINITIALIZED, ManagedBackgroundTasks, patch_fastapi
from taskflow._fastapi.timing import TaskOptions
from taskflow.errors import FastAPITasksUninitializedAppError

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
        if isinstance(background_tasks, ManagedBackgroundTasks) and background_tasks._wired:
            return background_tasks
        raise FastAPITasksUninitializedAppError(UNINITIALIZED)


class UnwiredBackgroundTasks(fastapi_background.BackgroundTasks):
    """What FastAPI injects for ``BackgroundTasks`` (and ``tasks: Tasks``) parameters
    while no app of the process has called ``add_tasks``/``install``: FastAPI's own
    ``BackgroundTasks``, unchanged, except that fastapi-tasks' methods raise
    :class:`FastAPITasksUninitializedAppError` instead of ``AttributeError``."""

    def schedule(self, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Raises FastAPITasksUninitializedAppError: ``add_tasks(app)`` was not called."""
        raise FastAPITasksUninitializedAppError(UNINITIALIZED)

    def task(self, **options: Any) -> Any:
        """Raises FastAPITasksUninitializedAppError: ``add_tasks(app)`` was not called."""
        raise FastAPITasksUninitializedAppError(UNINITIALIZED)

    @property
    def after_route(self) -> Any:
        """Raises FastAPITasksUninitializedAppError: ``add_tasks(app)`` was not called."""
        raise FastAPITasksUninitializedAppError(UNINITIALIZED)

    @property
    def after_response(self) -> Any:
        """Raises FastAPITasksUninitializedAppError: ``add_tasks(app)`` was not called."""
        raise FastAPITasksUninitializedAppError(UNINITIALIZED)


def _inject_unwired() -> None:
    """Make FastAPI build :class:`UnwiredBackgroundTasks` where it would build its own
    ``BackgroundTasks`` (left alone once taskflow's injection is installed)."""
    if fastapi_utils.BackgroundTasks is fastapi_background.BackgroundTasks:
        fastapi_utils.BackgroundTasks = UnwiredBackgroundTasks  # type: ignore[misc]


_inject_unwired()


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
    from taskflow.manager import TaskManager

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
