"""``Tasks``: fastapi-tasks' per-request scheduler, and what FastAPI injects before
``add_tasks`` has run."""

from __future__ import annotations

from typing import Any

from fastapi import background as fastapi_background
from fastapi.dependencies import utils as fastapi_utils
from starlette.background import BackgroundTasks

from taskflow._fastapi.background import UNINITIALIZED, ManagedBackgroundTasks
from taskflow.errors import FastAPITasksUninitializedAppError


class Tasks(ManagedBackgroundTasks):
    """The per-request task scheduler, for use as a parameter annotation.

    ``tasks: Tasks`` in a route or dependency, and ``tasks: Tasks = Depends()``, both
    receive the request's :class:`ManagedBackgroundTasks` once ``add_tasks(app)`` (or
    ``task_manager.install(app)``) has run.
    """

    def __new__(cls, background_tasks: BackgroundTasks) -> Any:
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
    # FastAPI's dependency solver builds the class named BackgroundTasks in its module.
    if fastapi_utils.BackgroundTasks is fastapi_background.BackgroundTasks:  # type: ignore[attr-defined]
        fastapi_utils.BackgroundTasks = UnwiredBackgroundTasks  # type: ignore[attr-defined]


_inject_unwired()
