"""The Workflows pages (``{path}/dashboard/workflows`` and one workflow's page), their
Cancel and Retry buttons, and their JSON twins (``GET {path}/workflows``,
``GET {path}/workflows/{id}``, ``POST {path}/workflows/{id}/cancel`` and ``/retry``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from starlette.responses import Response

from taskflow._store.rows import Dependency, TaskRow
from taskflow.admin._actions import go
from taskflow.admin._context import ActorGuard, AdminContext, ViewerGuard
from taskflow.admin._security import Principal
from taskflow.admin._service import ActionError, Actor
from taskflow.errors import ConfigurationError, TaskNotFound, TaskNotRerunnable
from taskflow.records import Workflow

LIST_LIMIT = 100  # workflows the list shows, newest first


class WorkflowOut(BaseModel):
    """A workflow and how far it has got (tasks that were run again are left out of the
    counts: their copies count)."""

    id: str
    name: str
    kind: str
    created_at: datetime
    status: str
    total: int
    ended: int
    counts: dict[str, int]
    task_ids: list[str]


class WorkflowActionOut(BaseModel):
    """What a Cancel or Retry did."""

    id: str
    cancelled: int = 0
    retried_as: list[str] = []


@dataclass(slots=True)
class WorkflowStep:
    """One task of a workflow's page: the task, what it waits for, whether it was run
    again by a later copy."""

    task: TaskRow
    waits_for: list[str] = field(default_factory=list)
    superseded: bool = False


def workflow_out(flow: Workflow) -> WorkflowOut:
    """The API view of a workflow."""
    return WorkflowOut(
        id=flow.id,
        name=flow.name,
        kind=flow.kind,
        created_at=flow.created_at,
        status=flow.status,
        total=flow.total,
        ended=flow.ended,
        counts=dict(flow.counts),
        task_ids=list(flow.task_ids),
    )


def workflow_steps(rows: list[TaskRow], edges: list[Dependency]) -> list[WorkflowStep]:
    """A workflow's tasks in order, each with the tasks it waits for."""
    waits: dict[str, list[str]] = {}
    for edge in edges:
        waits.setdefault(edge.task_id, []).append(edge.depends_on)
    return [
        WorkflowStep(
            task=row, waits_for=waits.get(row.id, []), superseded=row.resolution == "retried"
        )
        for row in rows
    ]


async def cancel_workflow(admin: AdminContext, workflow_id: str, who: Actor) -> int:
    """Cancel what has not ended in a workflow, and audit it.

    Raises:
        ActionError: 404 there is no such workflow.
    """
    if await admin.manager.get_workflow(workflow_id) is None:
        raise ActionError(404, f"no workflow {workflow_id!r}")
    cancelled = await admin.manager.cancel_workflow(workflow_id)
    await admin.service.audit(who, "cancel_workflow", workflow_id, {"cancelled": cancelled})
    return cancelled


async def retry_workflow(admin: AdminContext, workflow_id: str, who: Actor) -> list[str]:
    """Run a workflow's failed steps again, and audit it.

    Raises:
        ActionError: 404 no such workflow; 409 it is still running or a step cannot be
            run again.
    """
    try:
        copies = await admin.manager.retry_workflow(workflow_id)
    except TaskNotFound as exc:
        raise ActionError(404, str(exc)) from exc
    except (ConfigurationError, TaskNotRerunnable) as exc:
        raise ActionError(409, str(exc)) from exc
    await admin.service.audit(who, "retry_workflow", workflow_id, {"retried_as": copies[:20]})
    return copies


def add_workflow_pages(
    router: APIRouter, admin: AdminContext, viewer: ViewerGuard, actor: ActorGuard
) -> None:
    """The Workflows list, one workflow's page (both refreshing live) and the buttons."""
    renderer = admin.renderer
    name = admin.route_name

    async def list_part(request: Request) -> dict[str, Any]:
        return {
            "template": "taskflow/_workflows_table.html",
            "element_id": "workflows-table",
            "refresh_url": renderer.url(request, "workflows_live"),
            "workflows": await admin.manager.list_workflows(limit=LIST_LIMIT),
            "limit": LIST_LIMIT,
        }

    async def detail_part(request: Request, workflow_id: str) -> dict[str, Any]:
        flow = await admin.manager.get_workflow(workflow_id)
        if flow is None:
            raise HTTPException(404, detail="no such workflow")
        db = admin.manager.db
        steps = workflow_steps(
            await db.workflow_tasks(workflow_id), await db.workflow_edges(workflow_id)
        )
        return {
            "template": "taskflow/_workflow_steps.html",
            "element_id": "workflow-steps",
            "refresh_url": renderer.url(request, "workflow_live", workflow_id=workflow_id),
            "flow": flow,
            "steps": steps,
        }

    @router.get("/dashboard/workflows", name=name("workflows"))
    async def workflows(request: Request, principal: Principal = Depends(viewer)) -> Response:
        live, _ = await renderer.live(request, principal, **await list_part(request))
        return await renderer.page(
            request, principal, "taskflow/workflows.html", active="workflows", live=live
        )

    @router.get("/dashboard/_/workflows", name=name("workflows_live"))
    async def workflows_live(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await renderer.live_response(request, principal, **await list_part(request))

    @router.get("/dashboard/workflows/{workflow_id}", name=name("workflow"))
    async def workflow(
        request: Request, workflow_id: str, principal: Principal = Depends(viewer)
    ) -> Response:
        part = await detail_part(request, workflow_id)
        live, _ = await renderer.live(request, principal, **part)
        return await renderer.page(
            request,
            principal,
            "taskflow/workflow.html",
            active="workflows",
            live=live,
            flow=part["flow"],
        )

    @router.get("/dashboard/_/workflows/{workflow_id}", name=name("workflow_live"))
    async def workflow_live(
        request: Request, workflow_id: str, principal: Principal = Depends(viewer)
    ) -> Response:
        part = await detail_part(request, workflow_id)
        return await renderer.live_response(request, principal, **part)

    @router.post("/dashboard/workflows/{workflow_id}/cancel", name=name("workflow_cancel"))
    async def cancel(request: Request, workflow_id: str, who: Actor = Depends(actor)) -> Response:
        back = renderer.url(request, "workflow", workflow_id=workflow_id)
        try:
            cancelled = await cancel_workflow(admin, workflow_id, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        plural = "" if cancelled == 1 else "s"
        return await go(admin, request, back, f"Cancelled {cancelled} task{plural}.")

    @router.post("/dashboard/workflows/{workflow_id}/retry", name=name("workflow_retry"))
    async def retry(request: Request, workflow_id: str, who: Actor = Depends(actor)) -> Response:
        back = renderer.url(request, "workflow", workflow_id=workflow_id)
        try:
            copies = await retry_workflow(admin, workflow_id, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        if not copies:
            return await go(admin, request, back, "Nothing to run again: every step succeeded.")
        plural = "" if len(copies) == 1 else "s"
        return await go(admin, request, back, f"Running {len(copies)} step{plural} again.")


def add_workflow_api(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    """``GET /workflows``, ``GET /workflows/{id}`` and ``POST .../cancel`` and ``/retry``."""

    @router.get("/workflows", response_model=list[WorkflowOut], summary="Workflows")
    async def workflows(limit: int = 50) -> list[WorkflowOut]:
        """The latest workflows, newest first, with their progress (``task_ids`` is
        empty here: read one workflow for its tasks)."""
        limit = max(1, min(limit, 500))
        return [workflow_out(flow) for flow in await admin.manager.list_workflows(limit=limit)]

    @router.get("/workflows/{workflow_id}", response_model=WorkflowOut, summary="One workflow")
    async def workflow(workflow_id: str) -> WorkflowOut:
        """A workflow with its tasks' ids, in order (404 when unknown)."""
        flow = await admin.manager.get_workflow(workflow_id)
        if flow is None:
            raise HTTPException(404, detail="no such workflow")
        return workflow_out(flow)

    @router.post(
        "/workflows/{workflow_id}/cancel", response_model=WorkflowActionOut, summary="Cancel"
    )
    async def cancel(workflow_id: str, who: Actor = Depends(actor)) -> WorkflowActionOut:
        """Cancel every task of the workflow that has not ended."""
        try:
            cancelled = await cancel_workflow(admin, workflow_id, who)
        except ActionError as exc:
            raise HTTPException(exc.status, detail=exc.message) from exc
        return WorkflowActionOut(id=workflow_id, cancelled=cancelled)

    @router.post(
        "/workflows/{workflow_id}/retry", response_model=WorkflowActionOut, summary="Retry"
    )
    async def retry(workflow_id: str, who: Actor = Depends(actor)) -> WorkflowActionOut:
        """Run the steps that did not succeed again (409 while it still runs)."""
        try:
            copies = await retry_workflow(admin, workflow_id, who)
        except ActionError as exc:
            raise HTTPException(exc.status, detail=exc.message) from exc
        return WorkflowActionOut(id=workflow_id, retried_as=copies)
