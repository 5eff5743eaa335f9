"""Task groups and dynamic schedules (fastapi-task-manager's ``TaskGroup`` API).

A group names a set of functions that schedules may run. Schedules created at runtime
(``add_dynamic_task``, ``POST /tasks``) are rows in the database like static ones: they
survive restarts and fire on whichever process gets to each slot first.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from taskflow.errors import ConfigurationError, ScheduleNotFound, TaskArgumentError
from taskflow.scheduler import (
    DEFAULT_MISFIRE_GRACE,
    HIGH_PRIORITY,
    ScheduleOptions,
    ScheduleSpec,
    schedule_row,
)
from taskflow.triggers import Trigger, make_trigger

if TYPE_CHECKING:
    from sqlalchemy.engine import RowMapping

    from taskflow.manager import TaskManager

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class ScheduledTask:
    """A schedule as users see it: static (from code) or dynamic (created at runtime)."""

    name: str
    task_group_name: str | None
    function_name: str
    cron_expression: str | None
    every: float | None
    timezone: str
    kwargs: dict[str, Any]
    dynamic: bool
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    high_priority: bool = False
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    enabled: bool = True
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO 8601)."""
        data = asdict(self)
        for key in ("next_run_at", "last_run_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


def scheduled_task_from_row(
    row: RowMapping | Mapping[str, Any], kwargs: dict[str, Any]
) -> ScheduledTask:
    """A :class:`ScheduledTask` from a stored schedule row and its decoded kwargs."""
    options = ScheduleOptions.from_json(row["options"])
    group = row["group_name"]
    function = row["func_name"]
    if group and function.startswith(f"{group}."):
        function = function[len(group) + 1 :]
    return ScheduledTask(
        name=row["name"],
        task_group_name=group,
        function_name=function,
        cron_expression=row["cron"],
        every=row["every"],
        timezone=row["timezone"],
        kwargs=kwargs,
        dynamic=row["kind"] == "dynamic",
        description=row["description"],
        tags=list(row["tags"] or []),
        high_priority=(options.priority or 0) >= HIGH_PRIORITY,
        retry_backoff=options.retry_delay,
        retry_backoff_max=options.retry_max_delay,
        enabled=bool(row["enabled"]),
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        last_task_id=row["last_task_id"],
    )


class TaskGroup:
    """A named set of functions that schedules can run.

    Args:
        name: the group's name (part of each function's task name: ``"<group>.<fn>"``).
        tags: labels for the group, copied onto its schedules.
    """

    def __init__(self, name: str, tags: list[str] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a TaskGroup needs a non-empty name")
        self.name = name
        self.tags = list(tags or [])
        self.functions: dict[str, Callable[..., Any]] = {}
        self.manager: TaskManager | None = None
        self._task_options: dict[str, dict[str, Any]] = {}
        self._static: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    # -- registration ----------------------------------------------------------------

    def register_function(self, name: str | None = None, **task_options: Any) -> Callable[[F], F]:
        """Make a function available to dynamic schedules under ``name`` (default: its
        ``__name__``). Extra keyword arguments are :meth:`TaskManager.task` options
        (``retries``, ``timeout``, ``executor``...). Returns the function unchanged."""

        def register(func: F) -> F:
            function_name = name or func.__name__
            self.functions[function_name] = func
            self._task_options[function_name] = task_options
            if self.manager is not None:
                self._register_task(function_name, func)
            return func

        return register

    def add_task(
        self,
        cron_expression: str | None = None,
        *,
        name: str | None = None,
        every: float | None = None,
        timezone: str = "UTC",
        register: bool = True,
        description: str | None = None,
        tags: list[str] | None = None,
        high_priority: bool = False,
        run_on_startup: bool = False,
        overlap: bool = True,
        misfire_grace: float | None = DEFAULT_MISFIRE_GRACE,
        **task_options: Any,
    ) -> Callable[[F], F]:
        """Declare a static schedule running the decorated function.

        With ``register=True`` (the default) the function is also registered for dynamic
        schedules under ``name``.

        Raises:
            ValueError: invalid cron expression, interval or timezone.
        """
        trigger = make_trigger(every=every, cron=cron_expression, timezone=timezone)

        def declare(func: F) -> F:
            function_name = name or func.__name__
            if register:
                self.functions[function_name] = func
            self._task_options[function_name] = task_options
            spec = ScheduleSpec(
                name=function_name,
                task_name=self.task_name(function_name),
                trigger=trigger,
                run_on_startup=run_on_startup,
                group_name=self.name,
                description=description,
                tags=[*self.tags, *(tags or [])],
                options=ScheduleOptions(
                    misfire_grace=misfire_grace,
                    overlap=overlap,
                    priority=HIGH_PRIORITY if high_priority else None,
                ),
            )
            self._static.append((func, spec))
            if self.manager is not None:
                self._declare_static(func, spec)
            return func

        return declare

    def task_name(self, function_name: str) -> str:
        """The task name that records and schedules of this function carry."""
        return f"{self.name}.{function_name}"

    def attach(self, manager: TaskManager) -> None:
        """Bind the group to ``manager`` (done by ``add_task_group``)."""
        self.manager = manager
        for function_name, func in self.functions.items():
            self._register_task(function_name, func)
        for func, spec in self._static:
            self._declare_static(func, spec)

    def _register_task(self, function_name: str, func: Callable[..., Any]) -> None:
        assert self.manager is not None
        task_name = self.task_name(function_name)
        if task_name not in self.manager.registry:
            options = self._task_options.get(function_name, {})
            self.manager.task(name=task_name, **options)(func)

    def _declare_static(self, func: Callable[..., Any], spec: ScheduleSpec) -> None:
        assert self.manager is not None
        self._register_task(spec.name, func)
        self.manager.scheduler.add(spec)

    # -- dynamic schedules -------------------------------------------------------------

    def build_schedule(
        self,
        function_name: str,
        cron_expression: str | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        high_priority: bool = False,
        tags: list[str] | None = None,
        retry_backoff: float | None = None,
        retry_backoff_max: float | None = None,
        *,
        every: float | None = None,
        timezone: str = "UTC",
        retries: int | None = None,
        overlap: bool = True,
        misfire_grace: float | None = DEFAULT_MISFIRE_GRACE,
        now: datetime,
    ) -> dict[str, Any]:
        """Validate a dynamic schedule and return its row (nothing is stored).

        Raises:
            ScheduleNotFound: no such function in this group.
            ConfigurationError: invalid trigger or retry setting (``field`` says which).
            TaskArgumentError: ``kwargs`` do not fit the function's signature or cannot
                be stored.
        """
        func = self._function(function_name)
        trigger = make_trigger(every=every, cron=cron_expression, timezone=timezone)
        kwargs = _bound_kwargs(func, function_name, kwargs)
        _check_retry_settings(retries, retry_backoff, retry_backoff_max)
        assert self.manager is not None
        options = ScheduleOptions(
            misfire_grace=misfire_grace,
            overlap=overlap,
            priority=HIGH_PRIORITY if high_priority else None,
            retries=retries,
            retry_delay=retry_backoff,
            retry_max_delay=retry_backoff_max,
        )
        return schedule_row(
            name=name or auto_name(function_name, kwargs, trigger),
            task_name=self.task_name(function_name),
            trigger=trigger,
            kind="dynamic",
            payload=self.manager.payloads.encode_call((), kwargs),
            now=now,
            group_name=self.name,
            description=description,
            tags=[*self.tags, *(tags or [])],
            options=options,
        )

    def add_dynamic_task(
        self,
        function_name: str,
        cron_expression: str | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> ScheduledTask:
        """Create and store a dynamic schedule; returns it.

        Takes the parameters of fastapi-task-manager (``description``, ``high_priority``,
        ``tags``, ``retry_backoff``, ``retry_backoff_max``) plus ``every``, ``timezone``,
        ``retries``, ``overlap`` and ``misfire_grace``. In async code prefer
        :meth:`add_dynamic_task_async`.

        Raises:
            RuntimeError: (``ScheduleError``) unknown function or name already taken.
            ValueError: invalid cron expression, interval or timezone.
            TypeError: (``TaskArgumentError``) kwargs that do not fit the function.
        """
        manager = self._manager()
        return manager.run_blocking_schedule_change(
            lambda: self.add_dynamic_task_async(
                function_name, cron_expression, kwargs, name, **options
            ),
            create=lambda now: self.build_schedule(
                function_name, cron_expression, kwargs, name, now=now, **options
            ),
        )

    async def add_dynamic_task_async(
        self,
        function_name: str,
        cron_expression: str | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> ScheduledTask:
        """Awaitable :meth:`add_dynamic_task`."""
        from taskflow.runner import utcnow

        manager = self._manager()
        row = self.build_schedule(
            function_name, cron_expression, kwargs, name, now=utcnow(), **options
        )
        return await manager.create_schedule(row)

    def remove_dynamic_task(self, name: str) -> ScheduledTask:
        """Delete a dynamic schedule of this group; returns it as it was.

        Raises:
            RuntimeError: (``ScheduleError``) no such schedule, or it is static.
        """
        manager = self._manager()
        return manager.run_blocking_schedule_change(
            lambda: self.remove_dynamic_task_async(name), delete=(name, self.name)
        )

    async def remove_dynamic_task_async(self, name: str) -> ScheduledTask:
        """Awaitable :meth:`remove_dynamic_task`."""
        return await self._manager().delete_schedule(name, group_name=self.name)

    def _function(self, function_name: str) -> Callable[..., Any]:
        func = self.functions.get(function_name)
        if func is None:
            raise ScheduleNotFound(
                f"no function {function_name!r} is registered in task group {self.name!r}"
            )
        return func

    def _manager(self) -> TaskManager:
        if self.manager is None:
            raise ScheduleNotFound(
                f"task group {self.name!r} is not added to a TaskManager "
                "(call task_manager.add_task_group(group))"
            )
        return self.manager


def auto_name(function_name: str, kwargs: dict[str, Any], trigger: Trigger) -> str:
    """The function name plus a short hash of its kwargs and trigger."""
    when = trigger.cron if trigger.cron is not None else f"every {trigger.every:g}"
    digest = hashlib.sha256(
        (json.dumps(kwargs, sort_keys=True, default=str) + "|" + when).encode()
    ).hexdigest()[:8]
    return f"{function_name}_{digest}"


def _bound_kwargs(
    func: Callable[..., Any], function_name: str, kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    kwargs = dict(kwargs or {})
    if any(not isinstance(key, str) for key in kwargs):
        raise TaskArgumentError("kwargs keys must be strings")
    try:
        inspect.signature(func).bind(**kwargs)
    except TypeError as exc:
        signature = inspect.signature(func)
        raise TaskArgumentError(f"kwargs do not fit {function_name}{signature}: {exc}") from exc
    return kwargs


def _check_retry_settings(
    retries: int | None, delay: float | None, max_delay: float | None
) -> None:
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigurationError(f"retries must be >= 0, got {retries!r}", field="retries")
    for field_name, value in (("retry_backoff", delay), ("retry_backoff_max", max_delay)):
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ConfigurationError(f"{field_name} must be >= 0, got {value!r}", field=field_name)
