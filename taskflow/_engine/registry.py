"""Registered task functions and their configuration."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from taskflow._engine.retry import validate as validate_retry
from taskflow._engine.settings import RetryDefaults
from taskflow._engine.throttle import check_concurrency, check_limit_key, check_rate
from taskflow._engine.unique import check_states, check_window
from taskflow.errors import ConfigurationError, DuplicateTaskName, UnknownTaskFunction

F = TypeVar("F", bound=Callable[..., Any])
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
    unique_for: timedelta | None = None
    unique_states: tuple[str, ...] | None = None
    concurrency: int | None = None
    rate_limit: str | None = None
    limit_key: Callable[..., Any] | None = None

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
    func: Callable[..., Any] = target
    return func


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


# The options of an importable function that was never registered.
AUTO_OPTIONS: dict[str, Any] = {
    "retries": None,
    "delay": None,
    "backoff": None,
    "max_delay": None,
    "jitter": 0.0,
    "retry_on": (Exception,),
    "timeout": None,
    "persist": False,
    "requeue_on_interrupt": False,
    "eager": False,
    "priority": None,
    "queue": "default",
    "unique_for": None,
    "unique_states": None,
    "concurrency": None,
    "rate_limit": None,
    "limit_key": None,
}


class TaskRegistry:
    """Task functions by name (the name stored on every task record), and the
    configuration a stored task runs with.

    Args:
        defaults: retry settings for functions registered without their own (and for
            importable functions that were never registered); shared with the manager,
            so a later change applies to later registrations.
    """

    def __init__(self, defaults: RetryDefaults | None = None) -> None:
        self._by_name: dict[str, TaskConfig] = {}
        self._by_func: dict[Any, TaskConfig] = {}
        self.defaults: RetryDefaults = defaults or RetryDefaults(
            retries=0, delay=0.0, backoff=1.0, max_delay=None
        )

    def make_config(
        self, func: Callable[..., Any], *, name: str | None, executor: str | None, **options: Any
    ) -> TaskConfig:
        """The config of ``@task(...)`` options for ``func`` (retry options left None
        take the defaults).

        Raises:
            ConfigurationError: ``func`` is not callable, or an option is invalid.
        """
        if not callable(func):
            raise ConfigurationError(f"@task needs a function, got {type(func).__name__}")
        for key in ("retries", "delay", "backoff", "max_delay"):
            if options[key] is None:
                options[key] = self.defaults[key]
        validate_retry(
            retries=options["retries"],
            delay=options["delay"],
            backoff=options["backoff"],
            max_delay=options["max_delay"],
            jitter=options["jitter"],
        )
        if options["timeout"] is not None and options["timeout"] <= 0:
            raise ConfigurationError(f"timeout must be > 0, got {options['timeout']}")
        options["unique_for"] = check_window(options["unique_for"])
        options["unique_states"] = check_states(options["unique_states"])
        if options["unique_states"] is not None and options["unique_for"] is None:
            raise ConfigurationError("unique_states needs unique_for", field="unique_states")
        options["concurrency"] = check_concurrency(options["concurrency"])
        options["rate_limit"] = check_rate(options["rate_limit"])
        options["limit_key"] = check_limit_key(
            options["limit_key"],
            concurrency=options["concurrency"],
            rate_limit=options["rate_limit"],
        )
        retry_on = options.pop("retry_on")
        options["retry_on"] = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        kind = detect_executor(func, executor)
        path = import_path(func) or f"{getattr(func, '__module__', '?')}:{func!r}"
        return TaskConfig(
            name=name or func.__name__, func=func, path=path, executor=kind, **options
        )

    def decorator(
        self,
        retries: int | None = None,
        delay: float | None = None,
        backoff: float | None = None,
        persist: bool = False,
        name: str | None = None,
        requeue_on_interrupt: bool = False,
        eager: bool = False,
        priority: int | None = None,
        executor: str | None = None,
        *,
        timeout: float | None = None,
        max_delay: float | None = None,
        jitter: float = 0.0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
        queue: str = "default",
        unique_for: float | timedelta | None = None,
        unique_states: tuple[str, ...] | None = None,
        concurrency: int | None = None,
        rate_limit: str | None = None,
        limit_key: Callable[..., Any] | None = None,
    ) -> Callable[[F], F]:
        """Register a function as a task; the function is returned unchanged.

        Args:
            retries: attempts after the first failure (default: the manager's).
            delay: seconds before the first retry; backoff: its multiplier per retry.
            persist: accepted for compatibility (every task is persisted).
            name: the name stored on records (default: the function's name).
            requeue_on_interrupt: re-run the task if its process dies while it runs.
            eager: start as soon as ``add_task`` is called, not after the response.
            priority: higher runs first when tasks wait for a free slot.
            executor: ``"async"``, ``"thread"``, ``"process"`` or None to detect.
            timeout: seconds an attempt may run before it fails with ``TaskTimeout``.
                The attempt is cancelled (async), asked to stop (``is_cancelled()``);
                one that ignores it for 2 more seconds is settled anyway: its process
                worker is killed and replaced, its thread abandoned (threads cannot be
                killed; it no longer takes a pool slot).
            max_delay: cap of the retry delay; jitter: random extra delay (0..1 × delay).
            retry_on: exception types worth a retry (others fail at once).
            queue: the queue the task runs on.
            unique_for: seconds (or a ``timedelta``): while a task of this function
                with equal arguments (or the same ``idempotency_key``) created that
                recently is in one of ``unique_states``, enqueueing it again returns
                that task's id and stores nothing. Enforced by the database, across
                processes. ``enqueue`` and ``add_task`` may override it per call.
            unique_states: the statuses of an earlier task that block a new one
                (default ``("pending", "running", "success")``: a failed, cancelled,
                interrupted or rejected task does not).
            concurrency: at most this many attempts of the function run at once, across
                every process sharing the database (see ``docs/limits.md``).
            rate_limit: at most N starts per second, minute or hour, across every
                process: ``"N/s"``, ``"N/m"`` or ``"N/h"``. Retries count as starts.
            limit_key: a callable of the task's arguments: the limits then apply per
                key (``str()`` of what it returns when the task is enqueued), e.g.
                one running task per tenant.

        Raises:
            ValueError: incompatible executor, invalid retry settings, an invalid
                ``unique_for`` or ``unique_states``, ``concurrency`` or ``rate_limit``,
                or a ``limit_key`` without a limit (``ConfigurationError``).
            DuplicateTaskName: another function already has this name.
        """

        def register(func: F) -> F:
            self.register(
                self.make_config(
                    func,
                    name=name,
                    executor=executor,
                    retries=retries,
                    delay=delay,
                    backoff=backoff,
                    max_delay=max_delay,
                    jitter=jitter,
                    retry_on=retry_on,
                    timeout=timeout,
                    persist=persist,
                    requeue_on_interrupt=requeue_on_interrupt,
                    eager=eager,
                    priority=priority,
                    queue=queue,
                    unique_for=unique_for,
                    unique_states=unique_states,
                    concurrency=concurrency,
                    rate_limit=rate_limit,
                    limit_key=limit_key,
                )
            )
            return func

        return register

    def config_for(self, func_name: str, func_path: str) -> TaskConfig:
        """The configuration to run a stored task with.

        Raises:
            UnknownTaskFunction: no registered function has this name and its import
                path does not resolve.
        """
        config = self.get(func_name)
        if config is not None:
            return config
        func = resolve(func_path)
        config = self.for_func(func) or self._auto_config(func)
        if config is None:
            raise UnknownTaskFunction(f"task function {func_name!r} is not registered")
        return config

    def config_or_none(self, func_name: str, func_path: str) -> TaskConfig | None:
        """:meth:`config_for`, or None when the function is unknown here."""
        try:
            return self.config_for(func_name, func_path)
        except UnknownTaskFunction:
            return None

    def config_for_callable(self, func: Callable[..., Any]) -> TaskConfig | None:
        """The config of a registered function, an automatic one for an importable
        unregistered function, or None for a callable that cannot be found again."""
        return self.for_func(func) or self._auto_config(func)

    def _auto_config(self, func: Callable[..., Any]) -> TaskConfig | None:
        path = import_path(func)
        if path is None or not callable(func):
            return None
        with contextlib.suppress(Exception):
            if resolve(path) is func:
                return self.make_config(func, name=path, executor=None, **AUTO_OPTIONS)
        return None

    def register(self, config: TaskConfig) -> None:
        """Add ``config``; re-registering the same function under its name replaces it.

        Raises:
            DuplicateTaskName: another function already has this name.
        """
        name = config.name
        if name is None:
            raise ConfigurationError("a registered TaskConfig needs a name")
        existing = self._by_name.get(name)
        if existing is not None and existing.func is not config.func:
            raise DuplicateTaskName(
                f"task name {name!r} is already used by {existing.path}; "
                "pass name=... to tell them apart"
            )
        self._by_name[name] = config
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
