"""The options of :meth:`~taskflow._engine.intake.Intake.submit`, in one object, so the
signature is written once (the FastAPI integration's structural type names it too)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from taskflow._engine.job import JobHooks
from taskflow._engine.registry import TaskConfig


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """How to store one new task; every field has a default.

    Attributes:
        idempotency_key: a task with this key that has not failed is returned instead.
        tags: string tags stored with the task.
        priority: higher starts first among ready tasks (None: the function's).
        source: why the task exists (``"manual"``, ``"scheduled"``, ``"api"``, ...).
        config: the config to run with (None: the function's registered or automatic one).
        hooks: in-process extras of a task started through the ``Tasks`` API.
        queue: overrides the function's queue.
        in_memory: a callable that cannot be imported back, or arguments the codec
            refuses, run from memory in this process instead of raising.
        task_id: the id to store the task under (one promised before startup).
        unique_for: seconds (or a ``timedelta``) during which an equal call returns
            this task's id instead of storing another (None: the function's setting).
        unique_states: the statuses of an earlier task that block a new one (None:
            the function's setting, else ``("pending", "running", "success")``).
    """

    idempotency_key: str | None = None
    tags: dict[str, Any] | None = None
    priority: int | None = None
    source: str = "manual"
    config: TaskConfig | None = None
    hooks: JobHooks | None = None
    queue: str | None = None
    in_memory: bool = False
    task_id: str | None = None
    unique_for: float | timedelta | None = None
    unique_states: tuple[str, ...] | None = None


DEFAULT_SUBMIT = SubmitOptions()  # shared: the options are frozen
