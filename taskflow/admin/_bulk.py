"""Bulk actions of the Runs and Failures pages: cancel, retry, discard or delete the
selected tasks, or every task matching the page's filters.

Acting on everything matching takes two steps: ``GET /dashboard/bulk`` shows how many
tasks the action would touch, and its form posts the same filters back with
``confirmed``. The work itself is :meth:`AdminService.bulk` and
:meth:`AdminService.bulk_matching` (keyset batches, one audit entry).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import RedirectResponse, Response

from taskflow._store.dashboard import TaskFilter
from taskflow.admin._actions import go
from taskflow.admin._context import ActorGuard, AdminContext
from taskflow.admin._forms import FormValues, read_form
from taskflow.admin._login import safe_next
from taskflow.admin._query import QueryError, RunQuery
from taskflow.admin._rendering import LINK_MARK
from taskflow.admin._service import BULK_STATUSES, Actor, BulkResult

FAILURE_STATUSES = ("failed", "interrupted")
# The bulk actions each page offers, with their button labels.
PAGE_ACTIONS = {
    "runs": (
        ("cancel", "Cancel"),
        ("retry", "Retry"),
        ("discard", "Discard"),
        ("delete", "Delete"),
    ),
    "failures": (("retry", "Replay"), ("discard", "Discard"), ("delete", "Delete")),
}
# The form and query fields that carry a run list's filters.
FILTER_FIELDS: tuple[str, ...] = ("status", "func", "queue", "tag", "source", "window")
FILTER_FIELDS += ("since", "until", "q", "owner", "resolved")
WHAT = {
    "cancel": "pending or running",
    "retry": "failed, interrupted, cancelled or rejected",
    "discard": "unresolved failed or interrupted",
    "delete": "finished",
}


def page_filter(query: RunQuery, page: str) -> TaskFilter:
    """The tasks a run list shows: on Failures, failed and interrupted tasks not yet
    retried or discarded (unless ``resolved=1``).

    Raises:
        QueryError: an invalid filter.
    """
    if page != "failures":
        return query.task_filter()
    statuses = tuple(s for s in query.statuses() if s in FAILURE_STATUSES) or FAILURE_STATUSES
    return replace(query.task_filter(statuses=statuses), unresolved=not query.show_resolved)


def filter_values(query: RunQuery) -> dict[str, str]:
    """The filters of ``query`` that are set, by field name."""
    return {name: getattr(query, name) for name in FILTER_FIELDS if getattr(query, name)}


def add_bulk_routes(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    """``GET /dashboard/bulk`` (the count to confirm) and ``POST /dashboard/bulk``."""
    _add_confirm(router, admin)
    _add_act(router, admin, actor)


def _action_of(page: str, action: str) -> str | None:
    """The label of ``action`` on ``page`` (None: not an action of that page)."""
    return dict(PAGE_ACTIONS.get(page, ())).get(action)


def _add_confirm(router: APIRouter, admin: AdminContext) -> None:
    renderer = admin.renderer

    @router.get("/dashboard/bulk", name=admin.route_name("bulk_confirm"))
    async def confirm(request: Request) -> Response:
        principal = request.state.taskflow_principal
        if principal.read_only:
            raise HTTPException(403, detail=f"{principal.username} may look but not act")
        page = "failures" if request.query_params.get("page") == "failures" else "runs"
        action = str(request.query_params.get("action") or "")
        label = _action_of(page, action)
        error = None
        count = total = 0
        cap = admin.count_cap
        try:
            query = RunQuery.from_params(request.query_params, default_limit=admin.page_size)
            filters = page_filter(query, page)
            if label is None:
                choices = ", ".join(name for name, _ in PAGE_ACTIONS[page])
                raise QueryError(f"choose a bulk action of the {page} page: {choices}")
        except QueryError as exc:
            query, error = RunQuery(), str(exc)
        else:
            cap = admin.queries.count_cap(filters, admin.count_cap)
            count = await admin.service.count_matching(action, filters, cap=cap)
            total = await admin.queries.count_tasks(filters, cap=cap)
        back = renderer.url(request, page, query=urlencode(filter_values(query)))
        return await renderer.page(
            request,
            principal,
            "taskflow/bulk_confirm.html",
            active=page,
            page=page,
            action=action,
            label=label or "Act on",
            what=WHAT.get(action, ""),
            error=error,
            count=count,
            total=total,
            count_cap=cap,
            filters=filter_values(query),
            back=back,
        )


def _add_act(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    url = admin.renderer.url

    @router.post("/dashboard/bulk", name=admin.route_name("bulk"))
    async def act(request: Request, who: Actor = Depends(actor)) -> Response:
        form = await read_form(request)
        page = "failures" if form.get("page") == "failures" else "runs"
        action = str(form.get("action") or "")
        back = safe_next(admin, request, str(form.get("next") or url(request, page)))
        if action not in BULK_STATUSES or action not in dict(PAGE_ACTIONS[page]):
            return await go(admin, request, back, f"No bulk action {action!r} here.", "error")
        if form.get("scope") == "all" and not form.get("confirmed"):
            return _to_confirm(admin, request, form, page, action)
        try:
            outcome = await _run(admin, form, who, page, action)
        except QueryError as exc:
            return await go(admin, request, back, str(exc), "error")
        if outcome is None:
            text = f"Select the tasks to {dict(PAGE_ACTIONS[page])[action].lower()} first."
            return await go(admin, request, back, text, "error")
        text, link = said(admin, request, outcome)
        return await go(admin, request, back, text, link=link)


def _to_confirm(
    admin: AdminContext, request: Request, form: FormValues, page: str, action: str
) -> Response:
    """Send an unconfirmed "everything matching" to the page that shows the count."""
    values = {name: str(form.get(name) or "") for name in FILTER_FIELDS}
    query = urlencode({"page": page, "action": action, **{k: v for k, v in values.items() if v}})
    target = admin.renderer.url(request, "bulk_confirm", query=query)
    if request.headers.get("hx-request"):
        return Response(headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _run(
    admin: AdminContext, form: FormValues, who: Actor, page: str, action: str
) -> BulkResult | None:
    if form.get("scope") == "all":
        query = RunQuery.from_params(form, default_limit=admin.page_size)
        filters = page_filter(query, page)
        key = "filter" if page == "failures" else "runs_filter"
        description = {key: urlencode(filter_values(query)) or f"all {page}"}
        return await admin.service.bulk_matching(action, filters, who, description=description)
    ids = [str(value) for value in form.getlist("task_id") if str(value)]
    if not ids:
        return None
    return await admin.service.bulk(action, ids, who)


def said(
    admin: AdminContext, request: Request, outcome: BulkResult
) -> tuple[str, tuple[str, str] | None]:
    """The message after a bulk action, and its link: the new task of a retry, or the
    Runs page of the retries it started."""
    done = BULK_DONE_WORDS[outcome.action]
    text = f"{done} {outcome.done:,} {'task' if outcome.done == 1 else 'tasks'}"
    link = None
    if outcome.action == "retry" and outcome.done == 1:
        new_id = outcome.new_task_ids[0]
        text += f" as {LINK_MARK}"
        link = (admin.renderer.url(request, "task", task_id=new_id), new_id)
    elif outcome.action == "retry" and outcome.done:
        since = outcome.started_at.isoformat()
        query = urlencode({"source": "retry", "since": since})
        text += f"; see {LINK_MARK}"
        link = (admin.renderer.url(request, "runs", query=query), "the new tasks")
    if outcome.skipped:
        text += f"; skipped {outcome.skipped:,} (not {WHAT[outcome.action]})"
    return text + ".", link


BULK_DONE_WORDS = {
    "cancel": "Cancelled",
    "retry": "Retried",
    "discard": "Discarded",
    "delete": "Deleted",
}
