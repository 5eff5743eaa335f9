"""Task groups and dynamic schedules (fastapi-task-manager's ``TaskGroup`` API).

A group names a set of functions that schedules may run. Schedules created at runtime
(``add_dynamic_task``, ``POST /tasks``) are rows in the database like static ones: they
survive restarts and fire on whichever process gets to each slot first.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from taskflow._schedules.scheduler import (
    DEFAULT_MISFIRE_GRACE,
    HIGH_PRIORITY,
    ScheduleOptions,
    ScheduleSpec,
    schedule_row,
)
from taskflow._schedules.triggers import Trigger, make_trigger
from taskflow.errors import (
    ConfigurationError,
    DuplicateScheduleName,
    ScheduleNotFound,
    StaticScheduleError,
    TaskArgumentError,
)
from taskflow.records import ScheduledTask

if TYPE_CHECKING:
    from taskflow._engine.registry import TaskRegistry
    from taskflow._payloads.payloads import Payloads
    from taskflow._schedules.scheduler import Scheduler
    from taskflow._store.protocol import Store
    from taskflow._store.rows import ScheduleRow

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("taskflow")


class ScheduleHost(Protocol):
    """What a task group uses of the manager's schedules once it is added to one."""

    registry: TaskRegistry
    scheduler: Scheduler
    payloads: Payloads

    @property
    def started(self) -> bool: ...

    @property
    def db(self) -> Store: ...

    @property
    def allow_parallel(self) -> bool: ...

    def task(self, **options: Any) -> Callable[[F], F]: ...

    def group_schedules(self, group_name: str) -> list[ScheduledTask]: ...

    def run_schedule_coroutine(self, coro: Coroutine[Any, Any, Any], what: str) -> None: ...

    def run_blocking_schedule_change(
        self,
        change: Callable[[], Coroutine[Any, Any, ScheduledTask]],
        *,
        create: Callable[[Any], ScheduleRow] | None = None,
        delete: tuple[str, str | None] | None = None,
    ) -> ScheduledTask: ...

    async def create_schedule(self, schedule: ScheduleRow) -> ScheduledTask: ...

    async def delete_schedule(
        self, name: str, *, group_name: str | None = None
    ) -> ScheduledTask: ...


def scheduled_task_from_row(row: ScheduleRow, kwargs: dict[str, Any]) -> ScheduledTask:
    """A :class:`ScheduledTask` from a stored schedule row and its decoded kwargs."""
    options = ScheduleOptions.from_json(row.options)
    group = row.group_name
    function = row.func_name
    if group and function.startswith(f"{group}."):
        function = function[len(group) + 1 :]
    return ScheduledTask(
        name=row.name,
        task_group_name=group,
        function_name=function,
        cron_expression=row.cron,
        every=row.every,
        timezone=row.timezone,
        kwargs=kwargs,
        dynamic=row.kind == "dynamic",
        description=row.description,
        tags=list(row.tags or []),
        high_priority=(options.priority or 0) >= HIGH_PRIORITY,
        retry_backoff=options.retry_delay,
        retry_backoff_max=options.retry_max_delay,
        enabled=bool(row.enabled),
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        last_task_id=row.last_task_id,
    )


class TaskGroups:
    """The task groups of a TaskManager: iterates over the groups (as
    fastapi-task-manager's ``task_manager.task_groups`` list does) and finds one by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskGroup] = {}

    def add(self, group: TaskGroup) -> None:
        """Add ``group`` under its name."""
        self._by_name[group.name] = group

    def get(self, name: str, default: TaskGroup | None = None) -> TaskGroup | None:
        """The group called ``name``, or ``default``."""
        return self._by_name.get(name, default)

    def values(self) -> list[TaskGroup]:
        """The groups, in the order they were added."""
        return list(self._by_name.values())

    def names(self) -> list[str]:
        """The groups' names."""
        return list(self._by_name)

    def __iter__(self) -> Iterator[TaskGroup]:
        return iter(self.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __getitem__(self, key: int | str) -> TaskGroup:
        return self.values()[key] if isinstance(key, int) else self._by_name[key]

    def __contains__(self, item: object) -> bool:
        return item in self._by_name or item in self._by_name.values()


@dataclass(slots=True)
class _Pending:
    """A dynamic schedule defined before its manager started (stored at startup)."""

    task: ScheduledTask
    call: dict[str, Any]


class TaskGroup:
    """A named set of functions that schedules can run.

    Args:
        name: the group's name (part of each function's task name: ``"<group>.<fn>"``).
        tags: labels for the group, copied onto its schedules.
        allow_parallel: default ``overlap`` of the group's schedules (None: the
            manager's ``Config.allow_parallel``, else True).
    """

    def __init__(
        self, name: str, tags: list[str] | None = None, allow_parallel: bool | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a TaskGroup needs a non-empty name")
        self.name = name
        self._tags = list(tags or [])
        self.allow_parallel = allow_parallel
        self.functions: dict[str, Callable[..., Any]] = {}
        self.manager: ScheduleHost | None = None  # set by add_task_group
        self._task_options: dict[str, dict[str, Any]] = {}
        self._static: list[tuple[Callable[..., Any], ScheduleSpec]] = []
        self._pending: list[_Pending] = []

    # -- what the group holds ------------------------------------------------------------

    @property
    def tags(self) -> list[str]:
        """The group's tags (a copy)."""
        return list(self._tags)

    @property
    def function_registry(self) -> dict[str, Callable[..., Any]]:
        """The functions dynamic schedules may run, by name (a copy)."""
        return dict(self.functions)

    @property
    def tasks(self) -> list[ScheduledTask]:
        """The group's schedules, static and dynamic. While the manager runs they are
        read from the database (so schedules created by other processes are included);
        before, they are the ones declared in this process."""
        manager = self.manager
        if manager is not None and manager.started:
            return manager.group_schedules(self.name)
        static = [_static_task(spec) for _, spec in self._static]
        return static + [pending.task for pending in self._pending]

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
        cron_expression: str | list[str] | None = None,
        kwargs: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        name: str | None = None,
        every: float | None = None,
        timezone: str = "UTC",
        register: bool = True,
        description: str | None = None,
        tags: list[str] | None = None,
        high_priority: bool = False,
        retry_backoff: float | None = None,
        retry_backoff_max: float | None = None,
        allow_parallel: bool | None = None,
        run_on_startup: bool = False,
        overlap: bool | None = None,
        misfire_grace: float | None = DEFAULT_MISFIRE_GRACE,
        **task_options: Any,
    ) -> Callable[[F], F]:
        """Declare static schedules running the decorated function.

        ``cron_expression`` may be a list, and ``kwargs`` a list of keyword-argument
        dicts: one schedule per expression (or per kwargs dict), named
        ``"<name>_<hash>"``. A single schedule is named ``name`` (default: the
        function's name). With ``register=True`` (the default) the function is also
        registered for dynamic schedules under ``name``. ``allow_parallel`` is
        fastapi-task-manager's name for ``overlap``.

        Raises:
            ValueError: invalid cron expression, interval or timezone.
            TypeError: (``TaskArgumentError``) expression and kwargs lists of different
                lengths, or kwargs that do not fit the function.
        """
        calls = _expand(cron_expression, kwargs)
        triggers = [make_trigger(every=every, cron=cron, timezone=timezone) for cron, _ in calls]
        _check_retry_settings(None, retry_backoff, retry_backoff_max)
        choice = allow_parallel if allow_parallel is not None else overlap

        def declare(func: F) -> F:
            function_name = name or func.__name__
            if register:
                self.functions[function_name] = func
            self._task_options[function_name] = task_options
            for (_, call_kwargs), trigger in zip(calls, triggers, strict=True):
                call_kwargs = _bound_kwargs(func, function_name, call_kwargs)
                schedule_name = (
                    auto_name(function_name, call_kwargs, trigger)
                    if len(calls) > 1
                    else function_name
                )
                spec = ScheduleSpec(
                    name=schedule_name,
                    task_name=self.task_name(function_name),
                    trigger=trigger,
                    run_on_startup=run_on_startup,
                    group_name=self.name,
                    description=description,
                    tags=[*self._tags, *(tags or [])],
                    options=ScheduleOptions(
                        misfire_grace=misfire_grace,
                        overlap=choice,  # type: ignore[arg-type]  # None: resolved at attach
                        priority=HIGH_PRIORITY if high_priority else None,
                        retry_delay=retry_backoff,
                        retry_max_delay=retry_backoff_max,
                    ),
                    kwargs=call_kwargs,
                )
                self._add_static(func, spec)
            return func

        return declare

    def _add_static(self, func: Callable[..., Any], spec: ScheduleSpec) -> None:
        if any(existing.name == spec.name for _, existing in self._static):
            raise DuplicateScheduleName(
                f"Task with name {spec.name!r} already exists inside group {self.name!r}."
            )
        self._static.append((func, spec))
        if self.manager is not None:
            self._declare_static(func, spec)

    def task_name(self, function_name: str) -> str:
        """The task name that records and schedules of this function carry."""
        return f"{self.name}.{function_name}"

    def attach(self, manager: ScheduleHost) -> None:
        """Bind the group to a manager's schedules (done by ``add_task_group``)."""
        self.manager = manager
        for function_name, func in self.functions.items():
            self._register_task(function_name, func)
        for func, spec in self._static:
            self._declare_static(func, spec)
        if self._pending and manager.started:
            manager.run_schedule_coroutine(self.store_pending(), f"store group {self.name}")

    def _register_task(self, function_name: str, func: Callable[..., Any]) -> None:
        assert self.manager is not None
        task_name = self.task_name(function_name)
        if task_name not in self.manager.registry:
            options = self._task_options.get(function_name, {})
            self.manager.task(name=task_name, **options)(func)

    def _declare_static(self, func: Callable[..., Any], spec: ScheduleSpec) -> None:
        assert self.manager is not None
        self._register_task(spec.task_name[len(self.name) + 1 :], func)
        if spec.options.overlap is None:
            spec.options.overlap = self._default_overlap()
        self.manager.scheduler.add(spec)

    def _default_overlap(self) -> bool:
        if self.allow_parallel is not None:
            return self.allow_parallel
        return self.manager.allow_parallel if self.manager is not None else True

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
        allow_parallel: bool | None = None,
        *,
        every: float | None = None,
        timezone: str = "UTC",
        retries: int | None = None,
        overlap: bool | None = None,
        misfire_grace: float | None = DEFAULT_MISFIRE_GRACE,
        now: datetime,
    ) -> ScheduleRow:
        """Validate a dynamic schedule and return it (nothing is stored).

        ``allow_parallel`` is fastapi-task-manager's name for ``overlap``; with neither,
        the group's ``allow_parallel`` (then the manager's) applies.

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
        choice = allow_parallel if allow_parallel is not None else overlap
        options = ScheduleOptions(
            misfire_grace=misfire_grace,
            overlap=self._default_overlap() if choice is None else choice,
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
            tags=[*self._tags, *(tags or [])],
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
        ``tags``, ``retry_backoff``, ``retry_backoff_max``, ``allow_parallel``) plus
        ``every``, ``timezone``, ``retries``, ``overlap`` and ``misfire_grace``. Before
        the manager starts (or before the group is added to one) the schedule is kept
        and stored at startup, replacing a stored dynamic schedule of the same name. In
        async code prefer :meth:`add_dynamic_task_async`.

        Raises:
            RuntimeError: (``ScheduleError``) unknown function or name already taken.
            ValueError: invalid cron expression, interval or timezone.
            TypeError: (``TaskArgumentError``) kwargs that do not fit the function.
        """
        manager = self.manager
        if manager is None or not manager.started:
            return self._add_pending(function_name, cron_expression, kwargs, name, options)
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
        from taskflow._engine.job import utcnow

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
        manager = self.manager
        if manager is None or not manager.started:
            return self._remove_pending(name)
        return manager.run_blocking_schedule_change(
            lambda: self.remove_dynamic_task_async(name), delete=(name, self.name)
        )

    async def remove_dynamic_task_async(self, name: str) -> ScheduledTask:
        """Awaitable :meth:`remove_dynamic_task`."""
        return await self._manager().delete_schedule(name, group_name=self.name)

    # -- dynamic schedules defined before startup ------------------------------------------

    def _add_pending(
        self,
        function_name: str,
        cron_expression: str | None,
        kwargs: dict[str, Any] | None,
        name: str | None,
        options: dict[str, Any],
    ) -> ScheduledTask:
        func = self._function(function_name)
        every, timezone = options.get("every"), options.get("timezone", "UTC")
        trigger = make_trigger(every=every, cron=cron_expression, timezone=timezone)
        kwargs = _bound_kwargs(func, function_name, kwargs)
        _check_retry_settings(
            options.get("retries"), options.get("retry_backoff"), options.get("retry_backoff_max")
        )
        schedule_name = name or auto_name(function_name, kwargs, trigger)
        if any(task.name == schedule_name for task in self.tasks):
            raise DuplicateScheduleName(
                f"Task with name {schedule_name!r} already exists inside group {self.name!r}."
            )
        task = ScheduledTask(
            name=schedule_name,
            task_group_name=self.name,
            function_name=function_name,
            cron_expression=trigger.cron,
            every=trigger.every,
            timezone=trigger.timezone,
            kwargs=kwargs,
            dynamic=True,
            description=options.get("description"),
            tags=[*self._tags, *(options.get("tags") or [])],
            high_priority=bool(options.get("high_priority")),
            retry_backoff=options.get("retry_backoff"),
            retry_backoff_max=options.get("retry_backoff_max"),
            next_run_at=None,
        )
        call = {**options, "cron_expression": cron_expression, "kwargs": kwargs}
        self._pending.append(_Pending(task, {**call, "name": schedule_name}))
        return task

    def _remove_pending(self, name: str) -> ScheduledTask:
        for index, pending in enumerate(self._pending):
            if pending.task.name == name:
                return self._pending.pop(index).task
        if any(spec.name == name for _, spec in self._static):
            raise StaticScheduleError(
                f"Task {name!r} in group {self.name!r} is static and cannot be removed at "
                "runtime (pause it instead)."
            )
        raise ScheduleNotFound(f"Task {name!r} not found in group {self.name!r}.")

    async def store_pending(self) -> None:
        """Store the dynamic schedules defined before startup (done by the scheduler at
        startup). One whose name a static schedule or another group's schedule holds is
        skipped with an error in the log."""
        from taskflow._engine.job import utcnow

        manager = self._manager()
        pending, self._pending = self._pending, []
        for item in pending:
            call = dict(item.call)
            row = self.build_schedule(
                call.pop("function_name", item.task.function_name), now=utcnow(), **call
            )
            existing = await manager.db.get_schedule(row.name)
            if existing is not None and (
                existing.kind != "dynamic" or existing.group_name != self.name
            ):
                logger.error(
                    "dynamic task %r of group %r not stored: another schedule has the name",
                    row.name,
                    self.name,
                )
                continue
            await manager.db.upsert_static_schedule(row)

    def _function(self, function_name: str) -> Callable[..., Any]:
        func = self.functions.get(function_name)
        if func is None:
            raise ScheduleNotFound(
                f"Function {function_name!r} is not registered in group {self.name!r}."
            )
        return func

    def _manager(self) -> ScheduleHost:
        if self.manager is None:
            raise ScheduleNotFound(
                f"task group {self.name!r} is not added to a TaskManager "
                "(call task_manager.add_task_group(group))"
            )
        return self.manager


def _static_task(spec: ScheduleSpec) -> ScheduledTask:
    """A static schedule as :attr:`TaskGroup.tasks` shows it before startup."""
    return ScheduledTask(
        name=spec.name,
        task_group_name=spec.group_name,
        function_name=spec.task_name.split(".", 1)[-1],
        cron_expression=spec.trigger.cron,
        every=spec.trigger.every,
        timezone=spec.trigger.timezone,
        kwargs=dict(spec.kwargs),
        dynamic=False,
        description=spec.description,
        tags=list(spec.tags),
        high_priority=(spec.options.priority or 0) >= HIGH_PRIORITY,
        retry_backoff=spec.options.retry_delay,
        retry_backoff_max=spec.options.retry_max_delay,
    )


def _expand(
    cron: str | list[str] | None, kwargs: dict[str, Any] | list[dict[str, Any]] | None
) -> list[tuple[str | None, dict[str, Any] | None]]:
    """Pair each cron expression with its kwargs (``add_task`` with lists)."""
    if isinstance(cron, list) and isinstance(kwargs, list) and len(cron) != len(kwargs):
        raise TaskArgumentError(
            f"expr and kwargs lists must have the same length ({len(cron)} expressions, "
            f"{len(kwargs)} kwargs)"
        )
    if isinstance(cron, list):
        if not cron:
            raise ConfigurationError("add_task needs at least one cron expression")
        kwargs_list = kwargs if isinstance(kwargs, list) else [kwargs] * len(cron)
        return list(zip(cron, kwargs_list, strict=True))
    if isinstance(kwargs, list):
        if not kwargs:
            raise ConfigurationError("add_task needs at least one kwargs dict")
        return [(cron, item) for item in kwargs]
    return [(cron, kwargs)]


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
