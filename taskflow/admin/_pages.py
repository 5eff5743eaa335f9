"""The dashboard's HTML pages and their live fragments (``{path}/dashboard/...``).

Pages are plain GET routes: filters and page cursors live in the URL. Parts that
change (counts, the first page of a list, a running task) refresh themselves through
``/dashboard/_/...`` fragment routes, which answer 204 when nothing changed.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, params
from fastapi.responses import FileResponse, RedirectResponse
from markupsafe import Markup
from starlette.responses import Response

from taskflow._store.ids import task_id_forms
from taskflow._store.log_queries import LogFilter
from taskflow._store.rows import LogRow, TaskSummary
from taskflow.admin import _trends, _views
from taskflow.admin._actions import add_action_routes
from taskflow.admin._bulk import PAGE_ACTIONS, add_bulk_routes
from taskflow.admin._compress import accepts_gzip
from taskflow.admin._context import AdminContext, ViewerGuard
from taskflow.admin._login import add_login_routes, add_logout_routes
from taskflow.admin._query import SOURCES, STATUSES, QueryError, RunQuery
from taskflow.admin._queue_routes import add_queue_pages
from taskflow.admin._security import Principal
from taskflow.admin._util import (
    MAX_ROW_ID,
    WINDOWS,
    encode_cursor,
    parse_moment,
    seconds_between,
    utcnow,
)
from taskflow.admin._workflow_routes import add_workflow_pages
from taskflow.records import TaskProgress

FAILURE_STATUSES = ("failed", "interrupted")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_PAGE = 100
TASK_LOG_LINES = 500  # the last lines a task page shows; the Logs page pages through all


def build_auth_router(admin: AdminContext) -> APIRouter:
    """Public routes: static files and, with a login, the login form."""
    router = APIRouter()
    renderer = admin.renderer

    @router.get(
        "/dashboard/static/{filename}",
        name=admin.route_name("static"),
        include_in_schema=False,
    )
    async def static(request: Request, filename: str) -> Response:
        """Bundled CSS, JavaScript and images (public: they hold no data)."""
        path = renderer.static_file(filename)
        if path is None:
            raise HTTPException(404, detail="no such file")
        headers = {
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        }
        packed = renderer.static_gzip.get(path)
        if packed is None:
            return FileResponse(path, headers=headers)
        headers["Vary"] = "Accept-Encoding"
        if not accepts_gzip(request):
            return FileResponse(path, headers=headers)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(
            packed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"}
        )

    add_login_routes(router, admin)
    return router


def build_page_router(admin: AdminContext, extra: Sequence[params.Depends]) -> APIRouter:
    """The dashboard's pages, fragments and actions, all behind the viewer guard."""
    viewer = admin.viewer_guard("page")
    actor = admin.actor_guard(viewer)
    router = APIRouter(include_in_schema=False, dependencies=[Depends(viewer), *extra])
    _add_overview(router, admin, viewer)
    _add_runs(router, admin, viewer)
    _add_task(router, admin, viewer)
    _add_schedules(router, admin, viewer)
    _add_logs(router, admin, viewer)
    _add_functions(router, admin, viewer)
    _add_instances(router, admin, viewer)
    add_queue_pages(router, admin, viewer, actor)
    add_workflow_pages(router, admin, viewer, actor)
    _add_audit(router, admin, viewer)
    add_action_routes(router, admin, actor)
    add_bulk_routes(router, admin, actor)
    add_logout_routes(router, admin, viewer)
    _add_not_found(router, admin, viewer)  # last: it answers every other dashboard path
    return router


# -- overview ------------------------------------------------------------------------------


def _add_overview(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer
    name = admin.route_name

    async def part(request: Request, principal: Principal) -> dict[str, Any]:
        counts = await admin.queries.status_counts(_views.STATUSES, cap=admin.count_cap)
        stats = await admin.cache.get("overview", lambda: _views.overview(admin.queries))
        query, _ = _trends.read_chart_query(request.query_params, now=utcnow())
        found = await admin.cache.get(
            query.key, lambda: _trends.trends(admin.queries, query, now=utcnow())
        )
        return {
            "template": "taskflow/_overview.html",
            "element_id": "overview-live",
            "refresh_url": renderer.url(request, "overview_live", query=query.query_string()),
            "counts": counts,
            "stats": stats,
            "trends": found,
        }

    @router.get("/dashboard", name=name("overview"))
    async def overview(request: Request, principal: Principal = Depends(viewer)) -> Response:
        live, _ = await renderer.live(request, principal, **await part(request, principal))
        recent, _ = await admin.queries.page_audit(limit=8)
        chart_query, problem = _trends.read_chart_query(request.query_params, now=utcnow())
        return await renderer.page(
            request,
            principal,
            "taskflow/overview.html",
            active="overview",
            live=live,
            recent_audit=recent,
            chart_query=chart_query,
            chart_problem=problem,
            chart_windows=_trends.WINDOWS,
            functions=admin.manager.registry.names(),
            queues=sorted({config.queue for config in admin.manager.registry} | {"default"}),
        )

    @router.get("/dashboard/_/overview", name=name("overview_live"))
    async def overview_live(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await renderer.live_response(request, principal, **await part(request, principal))


# -- run lists -------------------------------------------------------------------------------


def read_query(request: Request, page_size: int) -> tuple[RunQuery, str | None]:
    """The run query of a page's URL, and the error that makes it unusable, if any."""
    try:
        query = RunQuery.from_params(request.query_params, default_limit=page_size)
    except QueryError as exc:
        return RunQuery(limit=page_size), str(exc)
    try:
        query.task_filter()
        query.cursors()
    except QueryError as exc:
        return query, str(exc)
    return query, None


def run_row(row: TaskSummary, *, now: datetime | None = None) -> dict[str, Any]:
    """A task row of a list, ready for the template: its fields, its duration (for a
    running task, how long it has run so far: ``elapsed``) and the last line of its
    error."""
    error = (row.error or "").strip()
    running = row.status == "running" and row.finished_at is None
    return {
        **{column.name: getattr(row, column.name) for column in fields(row)},
        "duration": seconds_between(row.started_at, row.finished_at),
        "elapsed": seconds_between(row.started_at, now or utcnow()) if running else None,
        "error_line": error.splitlines()[-1][:200] if error else "",
        "progress": TaskProgress.from_json(row.progress) if running else None,
    }


async def runs_table(
    admin: AdminContext,
    request: Request,
    principal: Principal,
    query: RunQuery,
    error: str | None,
    *,
    page: str,
    live_route: str,
    statuses: tuple[str, ...] = (),
    selectable: bool = False,
    unresolved: bool = False,
) -> dict[str, Any]:
    """Arguments of :meth:`Renderer.live` for a run table (runs or failures page);
    ``unresolved``: only tasks not yet retried or discarded."""
    context: dict[str, Any] = {
        "template": "taskflow/_runs_table.html",
        "element_id": f"{page}-table",
        "refresh_url": None,
        "query": query,
        "error": error,
        "rows": [],
        "count": 0,
        "count_cap": admin.count_cap,
        "newer": None,
        "older": None,
        "page": page,
        "selectable": selectable,
    }
    if error is not None:
        return context
    filters = query.task_filter(statuses=statuses or query.statuses())
    filters = replace(filters, unresolved=unresolved)
    after, before = query.cursors()
    cap = admin.queries.count_cap(filters, admin.count_cap)
    result = await admin.queries.page_tasks(
        filters, sort=query.sort, after=after, before=before, limit=query.limit
    )
    now = utcnow()
    context.update(
        rows=[run_row(row, now=now) for row in result.rows],
        count=await admin.queries.count_tasks(filters, cap=cap, sort=query.sort),
        count_cap=cap,
        newer=encode_cursor(result.newer),
        older=encode_cursor(result.older),
    )
    if query.first_page:
        context["refresh_url"] = admin.renderer.url(request, live_route, query=query.query_string())
    return context


def _filter_choices(admin: AdminContext) -> dict[str, Any]:
    return {
        "functions": admin.manager.registry.names(),
        "queues": sorted({config.queue for config in admin.manager.registry} | {"default"}),
        "statuses": STATUSES,
        "sources": SOURCES,
        "windows": WINDOWS,
        "sorts": (
            ("created", "created"),
            ("started", "started"),
            ("finished", "finished"),
            ("duration", "duration"),
        ),
    }


def _add_runs(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    _add_run_page(router, admin, viewer, "runs", (), True, "Runs")
    _add_run_page(router, admin, viewer, "failures", FAILURE_STATUSES, True, "Failures")


def _add_run_page(
    router: APIRouter,
    admin: AdminContext,
    viewer: ViewerGuard,
    page: str,
    statuses: tuple[str, ...],
    selectable: bool,
    title: str,
) -> None:
    renderer = admin.renderer

    async def table(request: Request, principal: Principal) -> tuple[RunQuery, dict[str, Any]]:
        query, error = read_query(request, admin.page_size)
        if statuses and query.status:
            chosen = [s for s in query.status.split(",") if s.strip() in statuses]
            narrowed = tuple(s.strip() for s in chosen)
        else:
            narrowed = statuses
        context = await runs_table(
            admin,
            request,
            principal,
            query,
            error,
            page=page,
            live_route=f"{page}_live",
            statuses=narrowed,
            selectable=selectable,
            unresolved=bool(statuses) and not query.show_resolved,
        )
        return query, context

    async def show(request: Request, principal: Principal = Depends(viewer)) -> Response:
        query, context = await table(request, principal)
        live, _ = await renderer.live(request, principal, **context)
        return await renderer.page(
            request,
            principal,
            f"taskflow/{page}.html",
            active=page,
            title=title,
            query=query,
            live=live,
            count=context["count"],
            count_cap=context["count_cap"],
            bulk_actions=PAGE_ACTIONS[page],
            **_filter_choices(admin),
        )

    async def refresh(request: Request, principal: Principal = Depends(viewer)) -> Response:
        _, context = await table(request, principal)
        return await renderer.live_response(request, principal, **context)

    router.add_api_route(f"/dashboard/{page}", show, methods=["GET"], name=admin.route_name(page))
    router.add_api_route(
        f"/dashboard/_/{page}", refresh, methods=["GET"], name=admin.route_name(f"{page}_live")
    )


# -- one task --------------------------------------------------------------------------------


def _add_task(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer
    name = admin.route_name

    async def detail(task_id: str) -> _views.TaskDetail:
        found = await _views.task_detail(
            admin.manager,
            admin.queries,
            task_id,
            display_args=admin.display_func_args,
            redactor=admin.redactor,
        )
        if found is None:
            raise HTTPException(404, detail=f"task {task_id} not found")
        return found

    async def summary(
        request: Request, principal: Principal, found: _views.TaskDetail
    ) -> tuple[Markup, str]:
        refresh = renderer.url(request, "task_live", task_id=found.record.task_id)
        return await renderer.live(
            request,
            principal,
            "taskflow/_task_summary.html",
            element_id="task-summary",
            refresh_url=refresh if found.live else None,
            detail=found,
        )

    @router.get("/dashboard/runs/{task_id}", name=name("task"))
    async def task(
        request: Request, task_id: str, principal: Principal = Depends(viewer)
    ) -> Response:
        try:
            found = await detail(task_id)
        except HTTPException:
            return await renderer.page(
                request,
                principal,
                "taskflow/not_found.html",
                status_code=404,
                active="runs",
                what=f"task {task_id}",
                task=True,
            )
        live, _ = await summary(request, principal, found)
        level = log_level(request)
        lines, total = await admin.queries.task_log_tail(
            found.record.task_id, level=level or None, limit=TASK_LOG_LINES
        )
        audit, _ = await admin.queries.page_audit(target=found.record.task_id, limit=20)
        return await renderer.page(
            request,
            principal,
            "taskflow/task.html",
            active="runs",
            detail=found,
            summary=live,
            logs=[_views.log_view(line, admin.redactor) for line in lines],
            log_total=total,
            log_level=level,
            levels=LOG_LEVELS,
            last_log_id=await _last_log_id(admin, found.record.task_id, lines, level),
            audit=audit,
        )

    @router.get("/dashboard/_/runs/{task_id}", name=name("task_live"))
    async def task_live(
        request: Request, task_id: str, principal: Principal = Depends(viewer)
    ) -> Response:
        found = await detail(task_id)
        refresh = renderer.url(request, "task_live", task_id=found.record.task_id)
        return await renderer.live_response(
            request,
            principal,
            "taskflow/_task_summary.html",
            element_id="task-summary",
            refresh_url=refresh if found.live else None,
            detail=found,
        )

    @router.get("/dashboard/_/runs/{task_id}/logs", name=name("task_logs"))
    async def task_logs(
        request: Request,
        task_id: str,
        after: int = Query(0, ge=0, le=MAX_ROW_ID),
        principal: Principal = Depends(viewer),
    ) -> Response:
        lines = await admin.queries.task_logs(task_id, after_id=after)
        statuses = await admin.queries.statuses_of(task_id_forms(task_id))  # either id shape
        live = any(status in ("pending", "blocked", "running") for status in statuses.values())
        level = log_level(request)
        if not lines and live:
            return Response(status_code=204)
        return await renderer.fragment(
            request,
            principal,
            "taskflow/_log_tail.html",
            logs=[
                _views.log_view(line, admin.redactor)
                for line in lines
                if not level or line.level.lower() == level
            ],
            task_id=task_id,
            last_log_id=lines[-1].id if lines else after,
            log_level=level,
            live=live,
        )


def log_level(request: Request) -> str:
    """The level a task page's logs are filtered by (``?level=``), or "" for all."""
    level = (request.query_params.get("level") or "").strip().lower()
    return level if level in LOG_LEVELS else ""


async def _last_log_id(admin: AdminContext, task_id: str, shown: list[LogRow], level: str) -> int:
    """Where a task page's live tail goes on from: its last line of any level (the
    lines shown may be of one level only)."""
    if not level:
        return shown[-1].id if shown else 0
    newest = await admin.queries.task_logs(task_id, limit=1)
    ids = [line.id for line in (*shown, *newest)]
    return max(ids) if ids else 0


# -- schedules -----------------------------------------------------------------------------


def _add_schedules(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer
    name = admin.route_name

    async def part(request: Request) -> dict[str, Any]:
        return {
            "template": "taskflow/_schedules_table.html",
            "element_id": "schedules-table",
            "refresh_url": renderer.url(request, "schedules_live"),
            "schedules": await _views.schedule_rows(admin.manager, admin.queries),
        }

    @router.get("/dashboard/schedules", name=name("schedules"))
    async def schedules(request: Request, principal: Principal = Depends(viewer)) -> Response:
        live, _ = await renderer.live(request, principal, **await part(request))
        return await renderer.page(
            request,
            principal,
            "taskflow/schedules.html",
            active="schedules",
            live=live,
            functions=_views.group_functions(admin.manager),
            form={},
            form_errors={},
        )

    @router.get("/dashboard/_/schedules", name=name("schedules_live"))
    async def schedules_live(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await renderer.live_response(request, principal, **await part(request))


# -- logs ---------------------------------------------------------------------------------


def _add_logs(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer
    name = admin.route_name

    @router.get("/dashboard/logs", name=name("logs"))
    async def logs(request: Request, principal: Principal = Depends(viewer)) -> Response:
        params = request.query_params
        form = {
            key: (params.get(key) or "").strip() for key in ("q", "level", "func", "window", "task")
        }
        error = None
        lines: list[dict[str, Any]] = []
        older = None
        try:
            before = int(params["before"]) if params.get("before") else None
            if before is not None and not 0 <= before <= MAX_ROW_ID:
                raise ValueError(f"invalid page cursor {params['before']!r}")
            filters = LogFilter(
                text=form["q"] or None,
                level=form["level"] or None,
                func_name=form["func"] or None,
                task_id=form["task"] or None,
                since=parse_moment(form["window"], now=utcnow()),
                hidden_fields=admin.redactor.keys,  # masked fields are not searched
            )
        except ValueError as exc:
            error = str(exc)
        else:
            rows, older = await admin.queries.page_logs(filters, before_id=before, limit=LOG_PAGE)
            lines = [_views.log_view(row, admin.redactor) for row in rows]
        kept = {key: value for key, value in form.items() if value}
        return await renderer.page(
            request,
            principal,
            "taskflow/logs.html",
            active="logs",
            form=form,
            error=error,
            lines=lines,
            older=older,
            older_query=urlencode({**kept, "before": older}) if older else "",
            levels=LOG_LEVELS,
            windows=WINDOWS,
            functions=admin.manager.registry.names(),
        )


# -- functions, instances, audit -------------------------------------------------------------


def _add_functions(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer

    @router.get("/dashboard/functions", name=admin.route_name("functions"))
    async def functions(request: Request, principal: Principal = Depends(viewer)) -> Response:
        rows = await admin.cache.get(
            "functions", lambda: _views.function_rows(admin.manager, admin.queries)
        )
        return await renderer.page(
            request,
            principal,
            "taskflow/functions.html",
            active="functions",
            functions=rows,
            sample_size=_views.FUNCTION_SAMPLE,
        )


def _add_instances(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer

    async def part(request: Request) -> dict[str, Any]:
        return {
            "template": "taskflow/_instances_table.html",
            "element_id": "instances-table",
            "refresh_url": renderer.url(request, "instances_live"),
            "instances": await _views.instance_rows(
                admin.queries, stale_after=admin.manager.instance_timeout, cap=admin.count_cap
            ),
            "unowned": await admin.queries.unowned_pending(cap=admin.count_cap),
            "me": admin.manager.instance_id,
        }

    @router.get("/dashboard/instances", name=admin.route_name("instances"))
    async def instances(request: Request, principal: Principal = Depends(viewer)) -> Response:
        live, _ = await renderer.live(request, principal, **await part(request))
        return await renderer.page(
            request, principal, "taskflow/instances.html", active="instances", live=live
        )

    @router.get("/dashboard/_/instances", name=admin.route_name("instances_live"))
    async def instances_live(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await renderer.live_response(request, principal, **await part(request))


def _add_audit(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer

    @router.get("/dashboard/audit", name=admin.route_name("audit"))
    async def audit(
        request: Request,
        before: int | None = Query(None, ge=0, le=MAX_ROW_ID),
        principal: Principal = Depends(viewer),
    ) -> Response:
        rows, older = await admin.queries.page_audit(before_id=before, limit=50)
        return await renderer.page(
            request, principal, "taskflow/audit.html", active="audit", entries=rows, older=older
        )


# -- any other dashboard path ----------------------------------------------------------------


def _add_not_found(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    renderer = admin.renderer

    @router.get("/dashboard/{rest:path}", name=admin.route_name("not_found"))
    async def not_found(
        request: Request, rest: str, principal: Principal = Depends(viewer)
    ) -> Response:
        """The styled 404 page for a dashboard path that names no page."""
        if not rest.strip("/"):  # "/dashboard/": the overview
            return RedirectResponse(renderer.url(request, "overview"), status_code=307)
        return await renderer.page(
            request,
            principal,
            "taskflow/not_found.html",
            status_code=404,
            active="",
            what=f"page at {request.url.path}",
            task=False,
        )
