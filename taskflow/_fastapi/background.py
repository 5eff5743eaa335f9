"""``ManagedBackgroundTasks`` (and ``Tasks``) and the FastAPI wiring: lifespan,
durability middleware and ``BackgroundTasks`` injection.

Durability barrier: on the event loop, ``add_task`` queues its row for the next group
commit and returns at once; the middleware holds the response's first byte until every
row queued by the request is committed. If the commit fails, the client gets a 503
instead of a success for work that was not stored: JSON ``{"detail": "task could not be
stored: <what is wrong and what to do>"}`` with ``Retry-After``, whether the route is
``async def`` (the middleware answers) or ``def`` (the ``DatabaseError`` handler does).

Timing: tasks start now (``schedule``), when the endpoint returns (``after_route``, before
the response is sent) or after the response (``after_response``, ``add_task``). If the
endpoint raises or the request is cancelled, tasks that have not started yet run anyway
(``endpoint_error="run"``, the default) or end ``cancelled`` with the reason
(``endpoint_error="cancel"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskflow._engine.job import JobHooks
from taskflow._engine.registry import TaskConfig, detect_executor
from taskflow._engine.submit_options import SubmitOptions
from taskflow._engine.unique import check_states, check_window
from taskflow._fastapi.timing import (
    ConfiguredScheduler,
    Task,
    TaskOptions,
    TimingBatch,
    When,
    merge,
)
from taskflow._store.ids import new_task_id
from taskflow.errors import (
    DatabaseError,
    FastAPITasksUninitializedAppError,
    QueueFullError,
    TaskflowError,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow._fastapi.host import ManagerHost

logger = logging.getLogger("taskflow")

AFTER_ROUTE_START_TIMEOUT = 5.0  # seconds the response waits for after-route tasks to start
RETRY_AFTER = "5"  # seconds, in every 503 for a task that could not be stored
UNINITIALIZED = (
    "Tasks is used in an app that taskflow was not added to: call add_tasks(app) "
    "(or task_manager.install(app)) on the FastAPI app before it serves requests"
)


@dataclass(slots=True)
class RequestContext:
    """What one HTTP request (or WebSocket session) enqueued."""

    manager: ManagerHost | None = None
    scope: Scope | None = None
    writes: list[asyncio.Future[Any]] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    after_route: list[Task] = field(default_factory=list)
    hooked: bool = False

    async def wait(self) -> BaseException | None:
        """Wait for every queued write; the first failure, or None."""
        writes, self.writes = self.writes, []
        if not writes:
            return None
        if len(writes) == 1:  # the usual request: no gather (a future and callbacks less)
            write = writes[0]
            try:
                await write
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and not write.cancelled():
                    raise  # this request was cancelled, not its write
                return exc
            return None
        results = await asyncio.gather(*writes, return_exceptions=True)
        return next((r for r in results if isinstance(r, BaseException)), None)


_request: ContextVar[RequestContext | None] = ContextVar("taskflow_request", default=None)


class ManagedBackgroundTasks(FastAPIBackgroundTasks):
    """FastAPI ``BackgroundTasks`` whose tasks are durable taskflow tasks.

    ``add_task`` stores the task and returns its id; in a request it starts after the
    response is sent (or at once with ``eager=True``), outside a request at once.
    Before the manager has started, the call is kept in memory under the returned id:
    ``startup()`` stores and starts it, unless the object was awaited first (as a test
    may do), which runs the function right there as a plain background task.
    ``schedule``, ``after_route`` and ``after_response`` give fastapi-tasks' three
    timing modes on the same object.

    Args:
        task_manager: the manager that stores and runs the tasks (default: the one
            serving the current request).
        background_tasks: the request's native ``BackgroundTasks`` (or its task list)
            to share, as in fastapi-taskflow.
        tasks: same as ``background_tasks`` given as a list.
    """

    _bound_manager: ManagerHost | None = None  # set by install()/add_tasks()

    def __init__(
        self,
        task_manager: ManagerHost | None = None,
        background_tasks: BackgroundTasks | list[BackgroundTask] | None = None,
        *,
        tasks: list[BackgroundTask] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(background_tasks, BackgroundTasks):
            background_tasks = background_tasks.tasks
        shared = tasks if tasks is not None else background_tasks
        if shared is not None:
            self.tasks = shared
        current = _request.get()
        # Built outside any request and without a request's task list: nothing will run
        # the list after a response, so add_task starts tasks at once.
        self._detached = current is None and shared is None
        manager = task_manager or (current.manager if current else None) or self._bound_manager
        if manager is None:
            raise TypeError("ManagedBackgroundTasks needs a TaskManager")
        self.task_manager = manager
        # False when FastAPI built this for an app without taskflow's middleware (no
        # add_tasks(app) there): add_task then behaves as FastAPI's, and fastapi-tasks'
        # methods raise its error.
        self._wired = task_manager is not None or current is not None
        self.context = current if current is not None else RequestContext(manager=manager)
        self.after_route = TimingBatch(self, "after_route")
        self.after_response = TimingBatch(self, "after_response")

    # -- fastapi-taskflow style --------------------------------------------------------

    def add_task(  # type: ignore[override]
        self,
        func: Callable[..., Any],
        *args: Any,
        idempotency_key: str | None = None,
        tags: dict[str, Any] | None = None,
        priority: int | None = None,
        eager: bool | None = None,
        queue: str | None = None,
        unique_for: float | timedelta | None = None,
        unique_states: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Store a task calling ``func(*args, **kwargs)``; returns its id.

        With ``idempotency_key``, a task with the same key that has not failed is reused
        and its id returned. With ``unique_for`` (seconds or a ``timedelta``; default:
        the function's), a task of the same function with equal arguments (or the same
        key) created that recently, whose status is one of ``unique_states`` (default
        ``("pending", "running", "success")``), is reused the same way. ``tags`` label
        the task; ``priority`` orders waiting tasks; ``eager`` starts it before the
        response is sent; ``queue`` overrides the function's queue. Callables that
        cannot be imported back (lambdas, closures) and arguments the codec cannot
        store (locks, open connections) run from memory in this process: the task is
        stored and visible, but if the process dies first it ends ``interrupted``
        instead of running again, and it cannot be retried.

        Raises:
            TaskArgumentError: an argument cannot be stored faithfully and the function
                runs in a worker process (``executor="process"``).
            NotStarted: the TaskManager is not running.
            QueueFullError: the queue is at its ``max_size``; the task is stored as
                ``rejected`` and does not run.
            ConfigurationError: ``unique_for`` or ``unique_states`` is invalid.
        """
        if not self._wired:  # an app without taskflow: FastAPI's own behaviour
            super().add_task(func, *args, **kwargs)
            return None
        manager = self.task_manager
        if not manager.started:
            early = _EarlyTask(
                func=func,
                args=args,
                kwargs=kwargs,
                options=SubmitOptions(
                    idempotency_key=idempotency_key,
                    tags=tags,
                    priority=priority,
                    queue=queue,
                    in_memory=True,
                    unique_for=check_window(unique_for),
                    unique_states=check_states(unique_states),
                ),
            )
            return self._add_before_start(early)
        config = manager.config_for_callable(func) or _adhoc_config(func)
        try:
            options = SubmitOptions(
                idempotency_key=idempotency_key,
                tags=tags,
                priority=priority,
                config=config,
                queue=queue,
                in_memory=True,
                unique_for=unique_for,
                unique_states=unique_states,
            )
            task_id, write, created = manager.submit(func, args, kwargs, options)
        except QueueFullError as exc:
            if exc.record_write is not None:  # the response waits for the rejected record
                self.context.writes.append(exc.record_write)
            raise
        if not created and write is not None:
            # The key's task is queued here but not committed yet: answer with its id
            # only once it is.
            self.context.writes.append(write)
            self._hook_endpoint_exit()
        if created:
            self._track(task_id, write)
            if self._detached:
                # Outside a request: start now; the list entry stays (a no-op by then)
                # for code that awaits it, as fastapi-taskflow's examples do.
                self._release_at("now", task_id)
                self._release_at("after_response", task_id)
            else:
                eager_now = eager if eager is not None else config.eager
                self._release_at("now" if eager_now else "after_response", task_id)
        return task_id

    def _add_before_start(self, early: _EarlyTask) -> str:
        """Keep a call made before startup; returns the id it will be stored under."""
        manager = self.task_manager
        manager.when_started(lambda: _store_early(manager, early))
        self.tasks.append(BackgroundTask(_run_early, manager, early))
        return early.task_id

    # -- fastapi-tasks style -----------------------------------------------------------

    def schedule(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
        """Store a task and start it now, concurrently with the endpoint."""
        return self.schedule_at("now", func, args, kwargs, None)

    def task(
        self,
        *,
        name: str | None = None,
        shield: bool | None = None,
        on_error: Callable[[Task, BaseException], Any] | None = None,
    ) -> ConfiguredScheduler:
        """The three timing modes with these options (``tasks.task(on_error=h).schedule(f)``)."""
        options = merge(self.default_options(), name=name, shield=shield, on_error=on_error)
        return ConfiguredScheduler(self, options)

    def default_options(self) -> TaskOptions:
        """The options set by ``add_tasks(app, config=...)`` (or the defaults)."""
        options: TaskOptions = self.task_manager.task_options
        return options

    def schedule_at(
        self,
        when: When,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> Task:
        """Store a task and start it at ``when``; returns its :class:`Task`. A callable
        that cannot be imported back, or arguments the codec cannot store, run from
        memory in this process (see :meth:`add_task`).

        Raises:
            FastAPITasksUninitializedAppError: the app serving the request never
                called ``add_tasks(app)`` (nor ``install``/``init_app``).
        """
        if not self._wired:
            raise FastAPITasksUninitializedAppError(UNINITIALIZED)
        manager = self.task_manager
        options = options or self.default_options()
        config = manager.config_for_callable(func) or _adhoc_config(func)
        hooks = JobHooks(
            started=manager.new_event(), on_error=options.on_error, done=None, shield=options.shield
        )
        tags = {"name": options.name} if options.name else None
        storing = SubmitOptions(tags=tags, config=config, hooks=hooks, in_memory=True)
        task_id, write, _ = manager.submit(func, args, kwargs, storing)
        handle = Task(
            task_id=task_id,
            func=func,
            args=args,
            kwargs=kwargs,
            config=options,
            started=hooks.started,
            manager=manager,
        )
        hooks.handle = handle
        manager.attach_done(task_id, hooks, handle)
        self._track(task_id, write)
        if when == "after_route":
            self.context.after_route.append(handle)
        self._release_at(when, task_id)
        return handle

    # -- plumbing -------------------------------------------------------------------

    def _track(self, task_id: str, write: asyncio.Future[Any] | None) -> None:
        self.context.task_ids.append(task_id)
        if write is not None:
            self.context.writes.append(write)
        self._hook_endpoint_exit()

    def _release_at(self, when: When, task_id: str) -> None:
        if when == "now":
            self.task_manager.release(task_id)
        elif when == "after_response":
            self.tasks.append(BackgroundTask(_release, self.task_manager, task_id))

    def _hook_endpoint_exit(self) -> None:
        """Once per request: run after-route tasks (and apply the endpoint-error policy)
        when the endpoint's dependency scope closes, before the response is sent."""
        context = self.context
        stack = (context.scope or {}).get("fastapi_function_astack")
        if context.hooked or stack is None:
            return
        context.hooked = True
        stack.push_async_exit(_EndpointExit(self.task_manager, context))


class _EndpointExit:
    """Exit callback of FastAPI's per-endpoint exit stack."""

    def __init__(self, manager: ManagerHost, context: RequestContext) -> None:
        self.manager = manager
        self.context = context

    async def __call__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and self.manager.endpoint_error == "cancel":
            await self._cancel_unstarted(exc)
            return False
        await self._start_after_route()
        return False

    async def _start_after_route(self) -> None:
        handles, self.context.after_route = self.context.after_route, []
        if not handles:
            return
        for handle in handles:
            self.manager.release(handle.task_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(AFTER_ROUTE_START_TIMEOUT):
                await asyncio.gather(*(h.started.wait() for h in handles))

    async def _cancel_unstarted(self, exc: BaseException) -> None:
        reason = f"the endpoint raised {type(exc).__name__}: {exc}"[:500]
        if isinstance(exc, asyncio.CancelledError):
            reason = "the request was cancelled before the task started"
        for task_id in self.manager.held_ids(self.context.task_ids):
            await self.manager.cancel(task_id, reason=reason)


async def _release(manager: ManagerHost, task_id: str) -> None:
    manager.release(task_id)


@dataclass(slots=True, eq=False)
class _EarlyTask:
    """An ``add_task`` call made before the manager started. Whichever comes first
    takes it: ``startup()`` (stored and started durably) or awaiting the
    ``ManagedBackgroundTasks`` (the function runs there, in memory, once)."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: SubmitOptions  # without the config, found at startup
    task_id: str = field(default_factory=new_task_id)
    taken: bool = False

    def take(self) -> bool:
        """True for the first caller only."""
        if self.taken:
            return False
        self.taken = True
        return True


def _store_early(manager: ManagerHost, early: _EarlyTask) -> None:
    """At startup: store an early task under its promised id and start it."""
    if not early.take():
        return
    config = manager.config_for_callable(early.func) or _adhoc_config(early.func)
    options = replace(early.options, config=config, task_id=early.task_id)
    task_id, _write, created = manager.submit(early.func, early.args, early.kwargs, options)
    if created:
        manager.release(task_id)


async def _run_early(manager: ManagerHost, early: _EarlyTask) -> None:
    """Awaited from the task list: run the call now if startup has not stored it."""
    if early.take():
        await BackgroundTask(early.func, *early.args, **early.kwargs)()
    else:
        manager.release(early.task_id)


def _adhoc_config(func: Callable[..., Any]) -> TaskConfig:
    """A configuration for a callable that cannot be imported back by name: its task is
    stored and visible, but only this process can run it."""
    if not callable(func):
        raise TaskflowError(f"cannot schedule {func!r}: not callable")
    name = getattr(func, "__qualname__", None) or type(func).__name__
    path = f"{getattr(func, '__module__', '?')}:{name}"
    return TaskConfig(
        name=name, func=func, path=path, executor=detect_executor(func, None), registered=False
    )


def managed_for_request(
    manager: ManagerHost, request: Any, native: BackgroundTasks
) -> ManagedBackgroundTasks:
    """The ManagedBackgroundTasks for a request, sharing its native task list; without
    the middleware, its writes are awaited before the response is sent."""
    if isinstance(native, ManagedBackgroundTasks) and native.task_manager is manager:
        return native
    managed = ManagedBackgroundTasks(manager, tasks=native.tasks)
    scope = getattr(request, "scope", None)
    if managed.context.scope is None and scope is not None:
        managed.context.scope = scope
        stack = scope.get("fastapi_function_astack")
        if stack is not None:
            stack.push_async_callback(_barrier, managed.context)
    return managed


async def _barrier(context: RequestContext) -> None:
    problem = await context.wait()
    if problem is not None:
        from fastapi import HTTPException

        raise HTTPException(
            503,
            detail=f"task could not be stored: {problem}",
            headers={"Retry-After": RETRY_AFTER},
        )


class DurabilityMiddleware:
    """Holds each HTTP response until the tasks its request enqueued are committed, and
    releases a request's (or WebSocket session's) tasks when it ends, even on errors."""

    def __init__(self, app: ASGIApp, manager: ManagerHost) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        context = RequestContext(manager=self.manager, scope=scope)
        token = _request.set(context)
        try:
            guarded = _guarded(send, context) if scope["type"] == "http" else send
            await self.app(scope, receive, guarded)
        finally:
            _request.reset(token)
            for task_id in context.task_ids:
                self.manager.release(task_id)


def _guarded(send: Send, context: RequestContext) -> Send:
    failed = False

    async def guarded_send(message: Message) -> None:
        nonlocal failed
        if failed:
            return
        if message["type"] == "http.response.start":
            problem = await context.wait()
            if problem is not None:
                failed = True
                await _send_unavailable(send, problem)
                return
        await send(message)

    return guarded_send


async def _send_unavailable(send: Send, problem: BaseException) -> None:
    logger.error("tasks of a request were not stored: %s", problem)
    reason = str(problem) if isinstance(problem, DatabaseError) else type(problem).__name__
    body = json.dumps({"detail": f"task could not be stored: {reason}"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", RETRY_AFTER.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _database_unavailable(request: Any, exc: Exception) -> Any:
    """A task that could not be stored (or read) is a 503, not an opaque 500."""
    from fastapi.responses import JSONResponse

    logger.error(
        "task database unavailable during %s %s: %s", request.method, request.url.path, exc
    )
    what = (
        "task database could not be read"
        if request.method in ("GET", "HEAD")
        else "task could not be stored"
    )
    return JSONResponse(
        {"detail": f"{what}: {exc}"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER},
    )


def install_on_app(manager: ManagerHost, app: FastAPI) -> None:
    """Add the durability middleware and wrap the app's lifespan so the manager starts
    before the app's own startup code and drains before its teardown (once per app)."""
    if getattr(app.state, "taskflow_manager", None) is manager:
        return
    app.add_middleware(DurabilityMiddleware, manager=manager)
    app.add_exception_handler(DatabaseError, _database_unavailable)
    app.state.taskflow_manager = manager
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        await manager.startup()
        try:
            async with original(app_) as state:
                try:
                    yield state
                finally:
                    await manager.shutdown()
        finally:
            await manager.shutdown()

    app.router.lifespan_context = lifespan


def patch_fastapi(manager: ManagerHost) -> None:
    """Make FastAPI build a ManagedBackgroundTasks wherever it builds ``BackgroundTasks``
    for a route or dependency parameter (process-wide). Each request gets the manager of
    the app serving it; ``manager`` is the fallback outside any taskflow app."""
    from fastapi.dependencies import utils

    bound = type("ManagedBackgroundTasks", (ManagedBackgroundTasks,), {"_bound_manager": manager})
    utils.BackgroundTasks = bound  # type: ignore[attr-defined,assignment]
