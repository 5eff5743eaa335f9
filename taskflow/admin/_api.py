"""The JSON API under ``{path}``, compatible with fastapi-taskflow's TaskAdmin routes.

fastapi-taskflow's routes and shapes are kept (``GET {path}``, ``/metrics``,
``/{task_id}``, ``/{task_id}/retry``, ``/{task_id}/cancel``, ``/bulk-retry``,
``/retry-failed``, ``DELETE /history``, ``/audit``, ``/queues``); lists are paginated (``limit``,
``after``/``before`` cursors in ``X-Next-Cursor``/``X-Prev-Cursor``) and filtered in
SQL, and schedules have their own endpoints. A mutating call that a browser marks as
cross-site is refused; one without browser marks (curl, scripts) needs the CSRF token of
``GET {path}/auth/session`` in an ``X-CSRF-Token`` header only when a cookie
authenticates it (:meth:`AdminContext.check_cross_site`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from enum import Enum
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response, params

from taskflow._store.dashboard import Cursor, TaskFilter
from taskflow.admin import _views
from taskflow.admin._context import ActorGuard, AdminContext
from taskflow.admin._models import (
    AuditOut,
    BulkRetryBody,
    CancelOut,
    CreateScheduleBody,
    DeleteOut,
    HistoryOut,
    MetricsOut,
    ReplayOut,
    RetryOut,
    ScheduleOut,
    TaskOut,
    TriggerOut,
    audit_out,
    schedule_out,
    task_out_from_record,
    task_out_from_row,
)
from taskflow.admin._query import QueryError, RunQuery
from taskflow.admin._queue_routes import add_queue_api
from taskflow.admin._service import REPLAYABLE, ActionError, Actor, NewSchedule, ReplayResult
from taskflow.admin._trends import SeriesOut, read_chart_query, trends
from taskflow.admin._util import MAX_ROW_ID, capped, encode_cursor, parse_window, utcnow
from taskflow.admin._workflow_routes import add_workflow_api
from taskflow.errors import ConfigurationError

TAGS: list[str | Enum] = ["taskflow dashboard"]
_UNITS = {"min": "minutes", "hour": "hours", "day": "days"}
_BULK_BODY = Body(..., examples=[{"task_ids": ["<id>"]}])
_QUEUE_BODY = Body(..., examples=[{"concurrency": 8, "max_size": 100}])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the task or schedule is in a state that does not allow this"},
    401: {"description": "not logged in"},
    403: {"description": "read-only user, cross-site request, or missing CSRF token"},
    404: {"description": "no such task or schedule"},
}


def build_api_router(admin: AdminContext, extra: Sequence[params.Depends]) -> APIRouter:
    """The JSON routes; fixed paths come before the ``/{task_id}`` catch-all."""
    viewer = admin.viewer_guard("api")
    actor = admin.actor_guard(viewer)
    router = APIRouter(tags=TAGS, dependencies=[Depends(viewer), *extra], responses=_ERRORS)
    _add_lists(router, admin)
    _add_bulk(router, admin, actor)
    _add_schedules(router, admin, actor)
    _add_queues(router, admin, actor)
    add_queue_api(router, admin, actor)
    add_workflow_api(router, admin, actor)
    _add_task(router, admin, actor)
    return router


def _add_queues(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    """fastapi-taskflow's ``GET {path}/queues`` and ``PATCH {path}/queues/{name}``."""

    @router.get("/queues", response_model=None, summary="Named queues with their limits and counts")
    async def list_queues() -> list[dict[str, Any]]:
        """Each configured queue: limits, and pending/running/finished/rejected counts."""
        return await admin.manager.read_queue_stats()

    @router.patch(
        "/queues/{name}", response_model=None, summary="Change a queue's concurrency or max_size"
    )
    async def update_queue(
        name: str,
        body: dict[str, Any] = _QUEUE_BODY,
        who: Actor = Depends(actor),
    ) -> dict[str, Any]:
        """Set ``concurrency`` and/or ``max_size`` (null removes a limit; a missing
        field keeps its value). Applies at once here and to every process at its next
        start."""
        current = admin.manager.queue_configs.get(name)
        if current is None:
            raise HTTPException(404, detail=f"no queue named {name!r}")
        values = {key: body.get(key, getattr(current, key)) for key in ("concurrency", "max_size")}
        try:
            stats = admin.manager.update_queue_config(name, **values)
        except ConfigurationError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        await admin.service.audit(who, "update_queue", name, values)
        return stats


def _found(exc: ActionError) -> HTTPException:
    return HTTPException(exc.status, detail=exc.message)


def _add_lists(router: APIRouter, admin: AdminContext) -> None:
    @router.get("", response_model=list[TaskOut], summary="List tasks (paginated, filtered)")
    async def list_tasks(
        request: Request,
        response: Response,
        status: str | None = Query(None, description="status, or several separated by commas"),
        func_name: str | None = Query(None, description="registered function name"),
        queue: str | None = None,
        tag: str | None = Query(None, description="key=value"),
        source: str | None = Query(None, description="manual, scheduled or retry"),
        since: str | None = Query(None, description="ISO time or window (15m, 6h, 7d)"),
        until: str | None = Query(None, description="ISO time or window"),
        q: str | None = Query(None, description="task id, or text in function name or error"),
        owner: str | None = Query(None, description="id of the instance that holds the task"),
        sort: str = Query("created", description="created, started, finished or duration"),
        after: str | None = Query(None, description="X-Next-Cursor of the previous page"),
        before: str | None = Query(None, description="X-Prev-Cursor of the next page"),
        limit: int = Query(100, ge=1, le=500),
    ) -> list[TaskOut]:
        """Newest tasks first. ``X-Total-Count`` is capped (``"10000+"``)."""
        try:
            query = RunQuery.from_params(request.query_params, default_limit=100)
            filters = query.task_filter()
            after_cursor, before_cursor = query.cursors()
        except QueryError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        page = await admin.queries.page_tasks(
            filters,
            sort=query.sort,
            after=after_cursor,
            before=before_cursor,
            limit=limit,
            with_payload=admin.display_func_args,
        )
        cap = admin.queries.count_cap(filters, admin.count_cap)
        count = await admin.queries.count_tasks(filters, cap=cap, sort=query.sort)
        _page_headers(response, page.older, page.newer, capped(count, cap))
        payloads = admin.manager.payloads
        return [
            task_out_from_row(row, payloads if admin.display_func_args else None, admin.redactor)
            for row in page.rows
        ]

    @router.get("/metrics", response_model=MetricsOut, summary="Counts and recent statistics")
    async def metrics() -> MetricsOut:
        """Exact counts by status, success rate, and the average duration of recent
        successful runs."""
        counts = await admin.queries.exact_status_counts(_views.STATUSES)
        stats = await admin.cache.get("overview", lambda: _views.overview(admin.queries))
        return MetricsOut.build(counts, stats, cap=admin.count_cap)

    @router.get("/stats/series", response_model=SeriesOut, summary="The Overview's chart numbers")
    async def stats_series(request: Request) -> SeriesOut:
        """Per bucket of a window (``window``: ``1h`` per minute, ``24h`` per hour;
        ``end``, an ISO time in the last bucket, default now), of one
        ``queue`` and one ``func`` when given: tasks enqueued, processed, started,
        succeeded and failed, the backlog at each bucket's end, and the median and 95th
        percentile of the wait from creation to start."""
        query, problem = read_chart_query(request.query_params, now=utcnow())
        if problem:
            raise HTTPException(422, detail=problem)
        found = await admin.cache.get(query.key, lambda: trends(admin.queries, query, now=utcnow()))
        return SeriesOut.of(found)

    @router.get("/audit", response_model=list[AuditOut], summary="Audit log of actions")
    async def audit(
        response: Response,
        before: int | None = Query(
            None, ge=0, le=MAX_ROW_ID, description="X-Next-Cursor of the previous page"
        ),
        limit: int = Query(100, ge=1, le=500),
    ) -> list[AuditOut]:
        """Actions taken in the dashboard and API, newest first."""
        rows, older = await admin.queries.page_audit(before_id=before, limit=limit)
        if older is not None:
            response.headers["X-Next-Cursor"] = str(older)
        return [audit_out(row) for row in rows]


def _page_headers(
    response: Response, older: Cursor | None, newer: Cursor | None, total: str
) -> None:
    response.headers["X-Total-Count"] = total
    if older is not None:
        response.headers["X-Next-Cursor"] = encode_cursor(older) or ""
    if newer is not None:
        response.headers["X-Prev-Cursor"] = encode_cursor(newer) or ""


def _add_bulk(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    @router.post("/bulk-retry", response_model=ReplayOut, summary="Retry chosen failed tasks")
    async def bulk_retry(
        body: BulkRetryBody | list[str] = _BULK_BODY,
        who: Actor = Depends(actor),
    ) -> ReplayOut:
        """Retry failed or interrupted tasks by id; others are skipped."""
        ids = body if isinstance(body, list) else body.task_ids
        outcome = await admin.service.replay(ids, who)
        return ReplayOut(**vars_of(outcome))

    @router.post("/retry-failed", response_model=ReplayOut, summary="Retry recent failures")
    async def retry_failed(
        since: str = Query("6h", description="<N>h, <N>d or 'all': tasks created since"),
        func_name: str | None = Query(None, description="only this function"),
        who: Actor = Depends(actor),
    ) -> ReplayOut:
        """Retry every failed or interrupted task created in the window (in batches)."""
        try:
            window = parse_window(since)
        except ValueError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        filters = TaskFilter(
            statuses=REPLAYABLE,
            func_name=func_name,
            since=None if window is None else utcnow() - window,
        )
        outcome = await admin.service.replay_matching(
            filters, who, description={"since": since, "func_name": func_name}
        )
        return ReplayOut(**vars_of(outcome))

    @router.delete("/history", response_model=HistoryOut, summary="Delete old finished tasks")
    async def delete_history(
        value: int = Query(..., gt=0, description="number of units"),
        unit: str = Query(..., description="min, hour or day"),
        who: Actor = Depends(actor),
    ) -> HistoryOut:
        """Delete final tasks that finished longer ago than ``value`` ``unit``s.
        Pending and running tasks are never deleted."""
        if unit not in _UNITS:
            raise HTTPException(400, detail=f"invalid unit {unit!r}: use min, hour or day")
        try:
            before = utcnow() - timedelta(**{_UNITS[unit]: value})
        except OverflowError as exc:
            raise HTTPException(400, detail=f"{value} {unit} is too long ago") from exc
        deleted = await admin.service.delete_history(before, who, label=f"{value} {unit}")
        return HistoryOut(deleted=deleted, store=0, backend=deleted)


def vars_of(outcome: ReplayResult) -> dict[str, Any]:
    """The fields of a :class:`~taskflow.admin._service.ReplayResult`."""
    return {
        "dispatched": outcome.dispatched,
        "skipped": outcome.skipped,
        "results": outcome.results,
    }


def _add_schedules(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    service = admin.service

    @router.get("/schedules", response_model=list[ScheduleOut], summary="List schedules")
    async def list_schedules() -> list[ScheduleOut]:
        """Static and dynamic schedules with their next fire times and last run."""
        rows = await _views.schedule_rows(admin.manager, admin.queries)
        return [schedule_out(row) for row in rows]

    @router.post(
        "/schedules", response_model=ScheduleOut, status_code=201, summary="Create a schedule"
    )
    async def create_schedule(body: CreateScheduleBody, who: Actor = Depends(actor)) -> ScheduleOut:
        """Create a dynamic schedule of a TaskGroup function (kwargs are checked against
        its signature)."""
        try:
            created = await service.create_schedule(NewSchedule(**body.model_dump()), who)
        except ActionError as exc:
            raise _found(exc) from exc
        return await _schedule(admin, created.name)

    @router.post("/schedules/{name:path}/trigger", response_model=TriggerOut, summary="Run now")
    async def trigger(name: str, who: Actor = Depends(actor)) -> TriggerOut:
        """Run a schedule now (``source="manual"``) without moving its next slot."""
        try:
            task_id = await service.run_schedule(name, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return TriggerOut(task_name=name, task_id=task_id)

    @router.post("/schedules/{name:path}/pause", response_model=ScheduleOut, summary="Pause")
    async def pause(name: str, who: Actor = Depends(actor)) -> ScheduleOut:
        """Stop firing a schedule until it is resumed."""
        try:
            await service.pause_schedule(name, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return await _schedule(admin, name)

    @router.post("/schedules/{name:path}/resume", response_model=ScheduleOut, summary="Resume")
    async def resume(name: str, who: Actor = Depends(actor)) -> ScheduleOut:
        """Fire a paused schedule again from its next slot."""
        try:
            await service.resume_schedule(name, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return await _schedule(admin, name)

    @router.delete("/schedules/{name:path}", response_model=DeleteOut, summary="Delete")
    async def delete_schedule(name: str, who: Actor = Depends(actor)) -> DeleteOut:
        """Delete a dynamic schedule (static ones come from code: 400)."""
        try:
            await service.delete_schedule(name, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return DeleteOut(name=name, deleted=True)


async def _schedule(admin: AdminContext, name: str) -> ScheduleOut:
    for row in await _views.schedule_rows(admin.manager, admin.queries):
        if row.name == name:
            return schedule_out(row)
    raise HTTPException(404, detail=f"no schedule named {name!r}")


def _add_task(router: APIRouter, admin: AdminContext, actor: ActorGuard) -> None:
    async def task_out(task_id: str) -> TaskOut:
        record = await admin.manager.get_task(task_id)
        if record is None:
            raise HTTPException(404, detail="Task not found")
        links = await admin.queries.retry_links(record.task_id)
        return task_out_from_record(record, admin.display_func_args, admin.redactor, links)

    @router.get("/{task_id}", response_model=TaskOut, summary="One task")
    async def get_task(task_id: str) -> TaskOut:
        """A task with its logs (arguments only with ``display_func_args``)."""
        return await task_out(task_id)

    @router.post("/{task_id}/retry", response_model=RetryOut, summary="Retry a task")
    async def retry(task_id: str, who: Actor = Depends(actor)) -> RetryOut:
        """Run a failed, interrupted or cancelled task again as a new task."""
        try:
            new_id = await admin.service.retry(task_id, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return RetryOut(task_id=new_id, task=await task_out(new_id))

    @router.post("/{task_id}/discard", response_model=TaskOut, summary="Discard a failure")
    async def discard(task_id: str, who: Actor = Depends(actor)) -> TaskOut:
        """Acknowledge a failed or interrupted task without running it again
        (``resolution="discarded"``): it leaves the Failures list. 400 when it is not
        failed or interrupted, or was retried or discarded already."""
        try:
            await admin.service.discard(task_id, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return await task_out(task_id)

    @router.post("/{task_id}/cancel", response_model=CancelOut, summary="Cancel a task")
    async def cancel(task_id: str, who: Actor = Depends(actor)) -> CancelOut:
        """Cancel a pending task (it never runs) or a running one."""
        try:
            await admin.service.cancel(task_id, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return CancelOut(task_id=task_id, task=await task_out(task_id))

    @router.delete("/{task_id}", response_model=DeleteOut, summary="Delete a finished task")
    async def delete(task_id: str, who: Actor = Depends(actor)) -> DeleteOut:
        """Delete a final task with its logs."""
        try:
            await admin.service.delete(task_id, who)
        except ActionError as exc:
            raise _found(exc) from exc
        return DeleteOut(name=task_id, deleted=True)
