"""What the FastAPI integration uses of a TaskManager (a structural type, so the
integration does not import the manager that installs it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from taskflow._engine.intake import Submitted
from taskflow._engine.job import JobHooks
from taskflow._engine.registry import TaskConfig
from taskflow._engine.submit_options import SubmitOptions
from taskflow.records import TaskRecord


class ManagerHost(Protocol):
    """The TaskManager members ``ManagedBackgroundTasks``, the durability middleware,
    the lifespan and ``Tasks`` call."""

    @property
    def started(self) -> bool: ...

    @property
    def endpoint_error(self) -> str: ...

    task_options: Any

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    def when_started(self, callback: Callable[[], None]) -> None: ...

    def config_for_callable(self, func: Callable[..., Any]) -> TaskConfig | None: ...

    def submit(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: SubmitOptions = ...,
    ) -> Submitted: ...

    def release(self, task_id: str) -> None: ...

    def held_ids(self, task_ids: list[str]) -> list[str]: ...

    def new_event(self) -> Any: ...

    def attach_done(self, task_id: str, hooks: JobHooks, handle: Any) -> None: ...

    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool: ...

    async def get_task(self, task_id: str, *, logs: bool = True) -> TaskRecord | None: ...
