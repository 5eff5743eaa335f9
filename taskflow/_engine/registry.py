"""Registered task functions and their configuration."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from taskflow.errors import ConfigurationError, DuplicateTaskName, UnknownTaskFunction

ExecutorKind = Literal["async", "thread", "process"]
_EXECUTORS = ("async", "thread", "process")


@dataclass(slots=True)
class TaskConfig:
    """How one task function runs: its name, executor, retry policy and defaults.

    ``@task_manager.task()`` builds it; every field has a default so that
    fastapi-taskflow's keyword construction (``TaskConfig(retries=3, delay=1.0)``) works.
    ``name``, ``func`` and ``executor`` are ``None`` only on such hand-made configs
    (``executor=None`` means "detect from the function").

    fastapi-tasks exports a ``TaskConfig`` of its own under the same name (``name``,
    ``shield``, ``on_error`` and the ``shielded`` property); this class takes that form
    too, and ``add_tasks(app, config=...)`` accepts it.
    """

    name: str | None = None
    func: Callable[..., Any] | None = None
    path: str = ""
    executor: ExecutorKind | None = None
    retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    persist: bool = False
    requeue_on_interrupt: bool = False
    eager: bool = False
    priority: int | None = None
    queue: str = "default"
    registered: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    shield: bool | None = None
    on_error: Callable[..., Any] | None = None

    @property
    def shielded(self) -> bool:
        """True when ``shield`` is set (fastapi-tasks' ``TaskConfig.shielded``)."""
        return bool(self.shield)


def import_path(func: Callable[..., Any]) -> str | None:
    """``module:qualname`` of a function that can be imported back, else None."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def resolve(path: str) -> Callable[..., Any]:
    """Import the function at ``module:qualname``.

    Raises:
        UnknownTaskFunction: the module or attribute does not exist.
    """
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UnknownTaskFunction(f"cannot import task function {path!r}: {exc}") from exc
    return target


def detect_executor(func: Callable[..., Any], requested: str | None) -> ExecutorKind:
    """Choose (or validate) the executor for ``func``.

    Raises:
        ValueError: the requested executor cannot run this function.
    """
    is_async = inspect.iscoroutinefunction(func)
    if requested is None:
        return "async" if is_async else "thread"
    if requested not in _EXECUTORS:
        raise ConfigurationError(f"executor must be one of {_EXECUTORS}, got {requested!r}")
    if requested == "async" and not is_async:
        raise ConfigurationError(
            f"executor='async' needs a coroutine function; {_name(func)} is sync"
        )
    if requested == "thread" and is_async:
        raise ConfigurationError(
            f"executor='thread' needs a plain function; {_name(func)} is async"
        )
    if requested == "process":
        _check_process_target(func)
    return requested  # type: ignore[return-value]


def _check_process_target(func: Callable[..., Any]) -> None:
    if getattr(func, "__name__", "") == "<lambda>" or import_path(func) is None:
        raise ConfigurationError(
            f"executor='process' needs a module-level function; {_name(func)} is a lambda, "
            "a nested function or not importable"
        )


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


class TaskRegistry:
    """Task functions by name (the name stored on every task record)."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskConfig] = {}
        self._by_func: dict[Any, TaskConfig] = {}

    def register(self, config: TaskConfig) -> None:
        """Add ``config``; re-registering the same function under its name replaces it.

        Raises:
            DuplicateTaskName: another function already has this name.
        """
        existing = self._by_name.get(config.name)
        if existing is not None and existing.func is not config.func:
            raise DuplicateTaskName(
                f"task name {config.name!r} is already used by {existing.path}; "
                "pass name=... to tell them apart"
            )
        self._by_name[config.name] = config
        # add_task(func) uses the first registration of a function object.
        if self._by_func.get(config.func, config).name == config.name:
            self._by_func[config.func] = config

    def get(self, name: str) -> TaskConfig | None:
        """The config registered under ``name``, or None."""
        return self._by_name.get(name)

    def for_func(self, func: Callable[..., Any]) -> TaskConfig | None:
        """The config of a registered function object, or None."""
        try:
            return self._by_func.get(func)
        except TypeError:  # unhashable callables are never registered
            return None

    def names(self) -> list[str]:
        """Registered task names, sorted."""
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[TaskConfig]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
