"""``ManagedBackgroundTasks`` and the FastAPI wiring: lifespan, durability middleware
and ``BackgroundTasks`` injection.

Durability barrier: on the event loop, ``add_task`` queues its row for the next group
commit and returns at once; the middleware holds the response's first byte until every
row queued by the request is committed. If the commit fails, the client gets a 503
instead of a success for work that was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask, BackgroundTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskflow.errors import DatabaseError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow")

_RESERVED = ("idempotency_key", "tags", "priority", "eager")


class RequestWrites:
    """Writes and task ids queued while handling one request."""

    def __init__(self) -> None:
        self.writes: list[asyncio.Future[Any]] = []
        self.task_ids: list[str] = []

    async def wait(self) -> BaseException | None:
        """Wait for every queued write; the first failure, or None."""
        writes, self.writes = self.writes, []
        results = await asyncio.gather(*writes, return_exceptions=True)
        return next((r for r in results if isinstance(r, BaseException)), None)


_request: ContextVar[RequestWrites | None] = ContextVar("taskflow_request", default=None)


class ManagedBackgroundTasks(BackgroundTasks):
    """FastAPI ``BackgroundTasks`` whose tasks are durable taskflow tasks.

    ``add_task`` stores the task and returns its id; the task starts after the response
    is sent (or at once with ``eager=True``). Callables that cannot be imported back
    (lambdas, closures) run as plain in-memory background tasks, as FastAPI would.

    Args:
        task_manager: the manager that stores and runs the tasks.
        tasks: an existing task list to share (the request's native one).
    """

    _bound_manager: TaskManager | None = None  # set on the class by install()

    def __init__(
        self, task_manager: TaskManager | None = None, tasks: list[BackgroundTask] | None = None
    ) -> None:
        super().__init__()
        if tasks is not None:
            self.tasks = tasks
        manager = task_manager or self._bound_manager
        if manager is None:
            raise TypeError("ManagedBackgroundTasks needs a TaskManager")
        self.task_manager = manager
        self.writes = RequestWrites()

    def add_task(  # type: ignore[override]
        self,
        func: Callable[..., Any],
        *args: Any,
        idempotency_key: str | None = None,
        tags: dict[str, Any] | None = None,
        priority: int | None = None,
        eager: bool | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Store a task calling ``func(*args, **kwargs)``; returns its id.

        With ``idempotency_key``, a task with the same key that has not failed is reused
        and its id returned. ``tags`` label the task; ``priority`` orders waiting tasks;
        ``eager`` starts it before the response is sent.

        Raises:
            TaskArgumentError: an argument cannot be stored faithfully.
            NotStarted: the TaskManager is not running.
        """
        manager = self.task_manager
        config = manager.config_for_callable(func)
        if config is None:
            super().add_task(func, *args, **kwargs)
            return None
        task_id, write, created = manager.submit(
            func,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            priority=priority,
            config=config,
        )
        if created:
            self._track(task_id, write)
            if eager if eager is not None else config.eager:
                manager.release(task_id)
            else:
                self.tasks.append(BackgroundTask(_release, manager, task_id))
        return task_id

    def _track(self, task_id: str, write: asyncio.Future[Any] | None) -> None:
        shared = _request.get()
        for holder in (self.writes, shared):
            if holder is not None:
                holder.task_ids.append(task_id)
                if write is not None:
                    holder.writes.append(write)


async def _release(manager: TaskManager, task_id: str) -> None:
    manager.release(task_id)


def managed_for_request(
    manager: TaskManager, request: Any, native: BackgroundTasks
) -> ManagedBackgroundTasks:
    """The ManagedBackgroundTasks for a request, sharing its native task list; without
    the middleware, its writes are awaited before the response is sent."""
    if isinstance(native, ManagedBackgroundTasks) and native.task_manager is manager:
        return native
    managed = ManagedBackgroundTasks(manager, tasks=native.tasks)
    stack = getattr(request, "scope", {}).get("fastapi_function_astack")
    if _request.get() is None and stack is not None:
        stack.push_async_callback(_barrier, managed.writes)
    return managed


async def _barrier(writes: RequestWrites) -> None:
    problem = await writes.wait()
    if problem is not None:
        from fastapi import HTTPException

        raise HTTPException(503, detail=f"task could not be stored: {problem}")


class DurabilityMiddleware:
    """Holds each HTTP response until the tasks its request enqueued are committed,
    and releases a request's tasks even when the endpoint raised."""

    def __init__(self, app: ASGIApp, manager: TaskManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        writes = RequestWrites()
        token = _request.set(writes)
        try:
            await self.app(scope, receive, _guarded(send, writes))
        finally:
            _request.reset(token)
            for task_id in writes.task_ids:
                self.manager.release(task_id)


def _guarded(send: Send, writes: RequestWrites) -> Send:
    failed = False

    async def guarded_send(message: Message) -> None:
        nonlocal failed
        if failed:
            return
        if message["type"] == "http.response.start":
            problem = await writes.wait()
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
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_on_app(manager: TaskManager, app: FastAPI) -> None:
    """Add the durability middleware and wrap the app's lifespan so the manager starts
    before the app's own startup code and drains before its teardown."""
    app.add_middleware(DurabilityMiddleware, manager=manager)
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


def patch_fastapi(manager: TaskManager) -> None:
    """Make FastAPI build ManagedBackgroundTasks (bound to ``manager``) wherever it
    builds ``BackgroundTasks`` for a route parameter. Process-wide."""
    from fastapi.dependencies import utils

    bound = type("ManagedBackgroundTasks", (ManagedBackgroundTasks,), {"_bound_manager": manager})
    utils.BackgroundTasks = bound  # type: ignore[attr-defined,misc]
