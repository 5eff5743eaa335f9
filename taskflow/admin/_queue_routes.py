"""The Queues page (``{path}/dashboard/queues``), its Pause and Resume buttons, and its
JSON twin (``GET {path}/queues/overview``, ``POST {path}/queues/{name}/pause`` and
``/resume``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from starlette.responses import Response

from taskflow.admin import _queues
from taskflow.admin._actions import go
from taskflow.admin._context import ActorGuard, AdminContext, ViewerGuard
from taskflow.admin._security import Principal
from taskflow.admin._service import ActionError, Actor


class QueueInstanceOut(BaseModel):
    """A live instance serving a queue."""

    id: str
    hostname: str
    pid: int


class QueueOut(BaseModel):
    """One queue: what waits, what runs, what finished lately, who serves it, whether it
    is paused. Counts stop at 100,000."""

    name: str
    pending: int
    deferred: int
    next_deferred_at: datetime | None
    running: int
    oldest_wait_seconds: float | None
    finished_last_5_minutes: int
    instances: list[QueueInstanceOut]
    unserved: bool
    paused: bool
    paused_at: datetime | None
    paused_by: str | None


class QueuePauseOut(BaseModel):
    """A queue's pause state after an action."""

    name: str
    paused: bool


def queue_out(row: _queues.QueueRow) -> QueueOut:
    """The API view of a queue row."""
    return QueueOut(
        name=row.name,
        pending=row.pending,
        deferred=row.deferred,
        next_deferred_at=row.next_deferred,
        running=row.running,
        oldest_wait_seconds=row.oldest_wait,
        finished_last_5_minutes=row.finished,
        instances=[
            QueueInstanceOut(id=i.id, hostname=i.hostname, pid=i.pid) for i in row.instances
        ],
        unserved=row.unserved,
        paused=row.pause is not None,
        paused_at=row.pause.paused_at if row.pause else None,
        paused_by=row.pause.paused_by if row.pause else None,
    )


def add_queue_pages(
    router: APIRouter, admin: AdminContext, viewer: ViewerGuard, actor: ActorGuard
) -> None:
    """The Queues page, its live table and its buttons."""
    renderer = admin.renderer
    name = admin.route_name

    async def part(request: Request) -> dict[str, Any]:
        return {
            "template": "taskflow/_queues_table.html",
            "element_id": "queues-table",
            "refresh_url": renderer.url(request, "queues_live"),
            "queues": await _queues.queue_rows(admin.manager),
            "me": admin.manager.instance_id,
        }

    @router.get("/dashboard/queues", name=name("queues"))
    async def queues(request: Request, principal: Principal = Depends(viewer)) -> Response:
        live, _ = await renderer.live(request, principal, **await part(request))
        return await renderer.page(
            request, principal, "taskflow/queues.html", active="queues", live=live
        )

    @router.get("/dashboard/_/queues", name=name("queues_live"))
    async def queues_live(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await renderer.live_response(request, principal, **await part(request))

    async def act(request: Request, queue: str, who: Actor, action: Any, said: str) -> Response:
        """Run a pause or resume; back to the Queues page with what happened."""
        back = renderer.url(request, "queues")
        try:
            await action(admin.service, admin.manager, queue, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        return await go(admin, request, back, said)

    @router.post("/dashboard/queues/{queue:path}/pause", name=name("queue_pause"))
    async def pause(request: Request, queue: str, who: Actor = Depends(actor)) -> Response:
        said = f"Paused queue {queue}: no task of it starts."
        return await act(request, queue, who, _queues.pause_queue, said)

    @router.post("/dashboard/queues/{queue:path}/resume", name=name("queue_resume"))
    async def resume(request: Request, queue: str, who: Actor = Depends(actor)) -> Response:
        return await act(request, queue, who, _queues.resume_queue, f"Resumed queue {queue}.")


def add_queue_api(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    """``GET /queues/overview`` and ``POST /queues/{name}/pause`` and ``/resume``."""

    @router.get(
        "/queues/overview",
        response_model=list[QueueOut],
        summary="Queues: waiting, running, throughput, instances, pauses",
    )
    async def overview() -> list[QueueOut]:
        """Every queue that holds pending or running tasks, is served by a live instance,
        is configured here or named by a registered function, or is paused."""
        return [queue_out(row) for row in await _queues.queue_rows(admin.manager)]

    @router.post("/queues/{name:path}/pause", response_model=QueuePauseOut, summary="Pause")
    async def pause(name: str, who: Actor = Depends(actor)) -> QueuePauseOut:
        """Pause a queue: no process starts its tasks until it is resumed (tasks still
        enqueue; running ones finish)."""
        try:
            await _queues.pause_queue(admin.service, admin.manager, name, who)
        except ActionError as exc:
            raise HTTPException(exc.status, detail=exc.message) from exc
        return QueuePauseOut(name=name, paused=True)

    @router.post("/queues/{name:path}/resume", response_model=QueuePauseOut, summary="Resume")
    async def resume(name: str, who: Actor = Depends(actor)) -> QueuePauseOut:
        """Resume a paused queue (404 when it is not paused)."""
        try:
            await _queues.resume_queue(admin.service, admin.manager, name, who)
        except ActionError as exc:
            raise HTTPException(exc.status, detail=exc.message) from exc
        return QueuePauseOut(name=name, paused=False)
