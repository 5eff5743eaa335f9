"""The dashboard's buttons and forms: POST routes that act, then send the browser back.

Every route here needs the actor guard (a user who may act, and the CSRF token). The
answer is a redirect (``HX-Redirect`` for htmx, 303 otherwise) to the page to show
next, with a one-time message about what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from taskflow.admin import _views
from taskflow.admin._context import ActorGuard, AdminContext
from taskflow.admin._forms import FormValues, read_form
from taskflow.admin._login import safe_next
from taskflow.admin._query import QueryError, RunQuery
from taskflow.admin._rendering import LINK_MARK
from taskflow.admin._schedule_form import ScheduleForm, form_values, read_schedule_form
from taskflow.admin._service import ActionError, Actor, ReplayResult
from taskflow.admin._util import utcnow

FAILURE_STATUSES = ("failed", "interrupted")
# What a schedule action says when done: the text, and a link in it (or None).
Said = tuple[str, tuple[str, str] | None]
# One schedule action of the dashboard: acts on the named schedule, says what it did.
ScheduleAction = Callable[[Request, str, Actor], Awaitable[Said]]


async def go(
    admin: AdminContext,
    request: Request,
    target: str,
    text: str,
    kind: str = "ok",
    link: tuple[str, str] | None = None,
) -> Response:
    """Send the browser to ``target`` and show ``text`` there (with ``link``, a
    ``(url, label)`` shown where ``{link}`` stands in ``text``)."""
    response: Response
    if request.headers.get("hx-request"):
        response = Response(headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    await admin.set_flash(request, response, text, kind, link)
    await admin.renderer.finish(request, response)
    return response


def add_action_routes(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    """Task actions, failure replay and schedule actions."""
    _add_task_actions(router, admin, actor)
    _add_replay(router, admin, actor)
    _add_schedule_actions(router, admin, actor)
    _add_schedule_form(router, admin, actor)


def _add_task_actions(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    url = admin.renderer.url
    name = admin.route_name

    @router.post("/dashboard/runs/{task_id}/retry", name=name("task_retry"))
    async def retry(request: Request, task_id: str, who: Actor = Depends(actor)) -> Response:
        try:
            new_id = await admin.service.retry(task_id, who)
        except ActionError as exc:
            return await go(
                admin, request, url(request, "task", task_id=task_id), exc.message, "error"
            )
        return await go(
            admin,
            request,
            url(request, "task", task_id=new_id),
            f"Retried {LINK_MARK} as this new task.",
            link=(url(request, "task", task_id=task_id), task_id),
        )

    @router.post("/dashboard/runs/{task_id}/cancel", name=name("task_cancel"))
    async def cancel(request: Request, task_id: str, who: Actor = Depends(actor)) -> Response:
        back = url(request, "task", task_id=task_id)
        try:
            await admin.service.cancel(task_id, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        return await go(admin, request, back, "Cancelled.")

    @router.post("/dashboard/runs/{task_id}/delete", name=name("task_delete"))
    async def delete(request: Request, task_id: str, who: Actor = Depends(actor)) -> Response:
        try:
            await admin.service.delete(task_id, who)
        except ActionError as exc:
            return await go(
                admin, request, url(request, "task", task_id=task_id), exc.message, "error"
            )
        return await go(admin, request, url(request, "runs"), f"Deleted task {task_id}.")

    @router.post("/dashboard/runs/{task_id}/discard", name=name("task_discard"))
    async def discard(request: Request, task_id: str, who: Actor = Depends(actor)) -> Response:
        # From a Failures row the form says where to go back to; else the task page.
        given = (await read_form(request)).get("next")
        back = safe_next(admin, request, given) if given else url(request, "task", task_id=task_id)
        try:
            await admin.service.discard(task_id, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        return await go(admin, request, back, "Discarded: it no longer shows under Failures.")


def _add_replay(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    url = admin.renderer.url

    @router.post("/dashboard/failures/replay", name=admin.route_name("failures_replay"))
    async def replay(request: Request, who: Actor = Depends(actor)) -> Response:
        form = await read_form(request)
        back = safe_next(admin, request, str(form.get("next") or url(request, "failures")))
        started = utcnow()
        try:
            outcome = await _replay(admin, form, who)
        except QueryError as exc:
            return await go(admin, request, back, str(exc), "error")
        if outcome is None:
            return await go(admin, request, back, "Select the tasks to replay first.", "error")
        text = f"Replayed {outcome.dispatched} task(s)"
        link = None
        if outcome.dispatched == 1:
            text += f" as {LINK_MARK}"
            link = (url(request, "task", task_id=outcome.new_ids[0]), outcome.new_ids[0])
        elif outcome.dispatched:
            text += f"; see {LINK_MARK}"
            query = urlencode({"source": "retry", "since": started.isoformat()})
            link = (url(request, "runs", query=query), "the new tasks")
        if outcome.skipped:
            text += f"; skipped {outcome.skipped} (not failed or interrupted)"
        return await go(admin, request, back, text + ".", link=link)


async def _replay(admin: AdminContext, form: FormValues, who: Actor) -> ReplayResult | None:
    if form.get("scope") == "all":
        query = RunQuery.from_params(form, default_limit=admin.page_size)
        statuses = tuple(s for s in query.statuses() if s in FAILURE_STATUSES) or FAILURE_STATUSES
        filters = query.task_filter(statuses=statuses)
        description = {"filter": query.query_string(limit="") or "all failures"}
        return await admin.service.replay_matching(filters, who, description=description)
    ids = [str(value) for value in form.getlist("task_id") if str(value)]
    if not ids:
        return None
    return await admin.service.replay(ids, who)


def _add_schedule_actions(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    service = admin.service

    async def run(request: Request, name: str, who: Actor) -> Said:
        task_id = await service.run_schedule(name, who)
        link = (admin.renderer.url(request, "task", task_id=task_id), task_id)
        return f"Started task {LINK_MARK} for schedule {name}.", link

    async def pause(request: Request, name: str, who: Actor) -> Said:
        await service.pause_schedule(name, who)
        return f"Paused {name}.", None

    async def resume(request: Request, name: str, who: Actor) -> Said:
        await service.resume_schedule(name, who)
        return f"Resumed {name}.", None

    async def delete(request: Request, name: str, who: Actor) -> Said:
        await service.delete_schedule(name, who)
        return f"Deleted schedule {name}.", None

    for verb, action in (("run", run), ("pause", pause), ("resume", resume), ("delete", delete)):
        router.add_api_route(
            f"/dashboard/schedules/{{name:path}}/{verb}",
            _schedule_route(admin, action, actor),
            methods=["POST"],
            name=admin.route_name(f"schedule_{verb}"),
        )


def _schedule_route(
    admin: AdminContext, action: ScheduleAction, actor: ActorGuard
) -> Callable[..., Awaitable[Response]]:
    async def route(request: Request, name: str, who: Actor = Depends(actor)) -> Response:
        back = admin.renderer.url(request, "schedules")
        try:
            text, link = await action(request, name, who)
        except ActionError as exc:
            return await go(admin, request, back, exc.message, "error")
        return await go(admin, request, back, text, link=link)

    return route


def _add_schedule_form(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    renderer = admin.renderer

    @router.post("/dashboard/schedules", name=admin.route_name("schedule_create"))
    async def create(request: Request, who: Actor = Depends(actor)) -> Response:
        form = await read_schedule_form(admin.manager, form_values(await read_form(request)))
        if form.schedule is None:
            return await _form_error(admin, request, form)
        try:
            created = await admin.service.create_schedule(form.schedule, who)
        except ActionError as exc:
            form.errors["form"] = exc.message
            return await _form_error(admin, request, form)
        return await go(
            admin, request, renderer.url(request, "schedules"), f"Created schedule {created.name}."
        )


async def _form_error(admin: AdminContext, request: Request, form: ScheduleForm) -> Response:
    """The form again with its values and every problem found (422)."""
    principal = request.state.taskflow_principal
    context: dict[str, Any] = {
        "functions": _views.group_functions(admin.manager),
        "form": form.values,
        "form_errors": form.errors,
    }
    if request.headers.get("hx-request"):
        return await admin.renderer.fragment(
            request, principal, "taskflow/_schedule_form.html", **context
        )
    live, _ = await admin.renderer.live(
        request,
        principal,
        "taskflow/_schedules_table.html",
        element_id="schedules-table",
        refresh_url=admin.renderer.url(request, "schedules_live"),
        schedules=await _views.schedule_rows(admin.manager, admin.queries),
    )
    return await admin.renderer.page(
        request,
        principal,
        "taskflow/schedules.html",
        status_code=422,
        active="schedules",
        live=live,
        **context,
    )
