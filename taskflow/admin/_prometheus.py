"""``GET {path}/prometheus``: taskflow's metrics in Prometheus's text format.

Two kinds of figures, as Prometheus expects them:

* **Counters and the histogram are per process**: the attempts this process ran since
  it started (:data:`taskflow._engine.metrics.PROCESS_METRICS`), by function and queue.
  Scrape every process (each instance serving the app) and ``sum`` them: each attempt is
  counted once, by the process that ran it. A restart resets them, which ``rate()`` and
  ``increase()`` handle.
* **Gauges come from the database** (:mod:`taskflow._store.gauges`) and describe the
  whole deployment: every process reports the same values, so aggregate them with
  ``max``, not ``sum``.

Access: the dashboard's own ``auth=`` (a login session cookie, or the app's dependency),
or, when ``TaskAdmin(metrics_token=...)`` is set, only ``Authorization: Bearer <token>``
(what Prometheus's ``authorization`` scrape setting sends).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Request, params
from starlette.responses import Response

from taskflow._engine.metrics import DURATION_BUCKETS, PROCESS_METRICS, MetricsSnapshot
from taskflow._store.gauges import COUNT_CAP, GaugeReader, Gauges
from taskflow._store.sql import SQLStore
from taskflow.admin._context import AdminContext, refuse_nul
from taskflow.admin._exposition import CONTENT_TYPE, Exposition
from taskflow.admin._util import utcnow
from taskflow.errors import ConfigurationError

__all__ = ["build_prometheus_router", "render"]

_FINAL_STATUSES = ("success", "failed", "cancelled")


def build_prometheus_router(
    admin: AdminContext, extra: Sequence[params.Depends], *, token: str | None
) -> APIRouter:
    """The ``/prometheus`` route, behind ``token`` when given, else the dashboard's auth.

    It must be included before the JSON API, whose ``/{task_id}`` would match it.
    """
    if token is None:
        guards = [Depends(admin.viewer_guard("api")), *extra]
    else:
        guards = [Depends(_bearer_guard(token))]
    router = APIRouter(dependencies=guards)

    @router.get(
        "/prometheus",
        name=admin.route_name("prometheus"),
        include_in_schema=False,
        response_class=Response,
    )
    async def prometheus() -> Response:
        if not admin.manager.started:
            raise HTTPException(503, detail="taskflow is not running (the app is not started)")
        db = admin.manager.db
        if not isinstance(db, SQLStore):
            raise ConfigurationError("the dashboard reads a SQLite or PostgreSQL task store")
        now = utcnow()
        gauges = await GaugeReader(db).read(
            queues=admin.manager.queue_configs,
            now=now,
            live_since=now - timedelta(seconds=admin.manager.instance_timeout),
        )
        text = render(
            PROCESS_METRICS.snapshot(),
            gauges,
            now=now.timestamp(),
            functions=_registered(admin),
        )
        return Response(text, media_type=CONTENT_TYPE)

    return router


def _bearer_guard(token: str) -> Callable[[Request], Awaitable[None]]:
    expected = f"Bearer {token}".encode()

    async def bearer(request: Request) -> None:
        refuse_nul(request)
        supplied = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(supplied, expected):
            raise HTTPException(
                401, detail="Not authenticated", headers={"WWW-Authenticate": "Bearer"}
            )

    return bearer


def _registered(admin: AdminContext) -> list[tuple[str, str]]:
    """(function, queue) of each registered function: their counters start at zero."""
    return [
        (config.name, config.queue)
        for config in admin.manager.registry
        if config.name is not None and config.registered
    ]


def render(
    counters: MetricsSnapshot,
    gauges: Gauges,
    *,
    now: float,
    functions: Sequence[tuple[str, str]] = (),
) -> str:
    """The exposition text of ``counters`` (this process) and ``gauges`` (the database).

    Args:
        counters: this process's counters.
        gauges: the database's figures.
        now: the current Unix time (ages and lateness are measured from it).
        functions: (function, queue) pairs whose counters are shown even at zero.
    """
    out = Exposition()
    _counters(out, counters, functions)
    _queue_gauges(out, gauges, now)
    _instances(out, gauges)
    _schedules(out, gauges, now)
    return out.render()


def _counters(
    out: Exposition, counters: MetricsSnapshot, functions: Sequence[tuple[str, str]]
) -> None:
    started = {key: 0 for key in functions} | counters.started
    retries = {key: 0 for key in functions} | counters.retries
    finished = {
        (*key, status): 0 for key in functions for status in _FINAL_STATUSES
    } | counters.finished
    out.family(
        "taskflow_tasks_finished_total",
        "counter",
        "Tasks this process ran to a final status (success, failed, cancelled).",
    )
    for (func, queue, status), value in sorted(finished.items()):
        out.sample(
            "taskflow_tasks_finished_total",
            {"function": func, "queue": queue, "status": status},
            value,
        )
    out.family("taskflow_attempts_started_total", "counter", "Attempts this process started.")
    for (func, queue), value in sorted(started.items()):
        out.sample("taskflow_attempts_started_total", {"function": func, "queue": queue}, value)
    out.family(
        "taskflow_task_retries_total",
        "counter",
        "Failed attempts this process ran that will be retried.",
    )
    for (func, queue), value in sorted(retries.items()):
        out.sample("taskflow_task_retries_total", {"function": func, "queue": queue}, value)
    out.family(
        "taskflow_attempt_duration_seconds",
        "histogram",
        "Seconds each attempt this process ran took, whatever its outcome.",
    )
    for (func, queue), histogram in sorted(counters.durations.items()):
        out.histogram(
            "taskflow_attempt_duration_seconds",
            {"function": func, "queue": queue},
            bounds=DURATION_BUCKETS,
            counts=histogram.counts,
            total=histogram.total,
        )
    out.family(
        "taskflow_metrics_start_time_seconds",
        "gauge",
        "Unix time this process's counters started from.",
    )
    out.sample("taskflow_metrics_start_time_seconds", {}, counters.since)


def _queue_gauges(out: Exposition, gauges: Gauges, now: float) -> None:
    capped = f"counted up to {COUNT_CAP}; the same on every process"
    families = (
        ("taskflow_queue_running", f"Tasks running, by queue ({capped}).", "running"),
        ("taskflow_queue_waiting", f"Pending tasks that are due, by queue ({capped}).", "waiting"),
        (
            "taskflow_queue_deferred",
            f"Pending tasks due later (deferred or waiting out a retry delay) ({capped}).",
            "deferred",
        ),
    )
    for name, help_text, attribute in families:
        out.family(name, "gauge", help_text)
        for queue in gauges.queues:
            out.sample(name, {"queue": queue.name}, getattr(queue, attribute))
    out.family(
        "taskflow_queue_oldest_waiting_seconds",
        "gauge",
        "Seconds the oldest due pending task of each queue has waited (0 when none waits).",
    )
    for queue in gauges.queues:
        age = 0.0 if queue.oldest_due is None else max(now - queue.oldest_due.timestamp(), 0.0)
        out.sample("taskflow_queue_oldest_waiting_seconds", {"queue": queue.name}, round(age, 3))


def _instances(out: Exposition, gauges: Gauges) -> None:
    out.family(
        "taskflow_live_instances",
        "gauge",
        "Processes running taskflow whose heartbeat is recent.",
    )
    out.sample("taskflow_live_instances", {}, len(gauges.live_instances))
    serving: dict[str, int] = {queue.name: 0 for queue in gauges.queues}
    for served in gauges.live_instances:
        for name in set(served):
            serving[name] = serving.get(name, 0) + 1
    out.family(
        "taskflow_queue_live_instances",
        "gauge",
        "Live instances serving each queue (0: nobody runs its tasks).",
    )
    for name, count in sorted(serving.items()):
        out.sample("taskflow_queue_live_instances", {"queue": name}, count)


def _schedules(out: Exposition, gauges: Gauges, now: float) -> None:
    out.family(
        "taskflow_schedule_lateness_seconds",
        "gauge",
        "Seconds an enabled schedule's next run is overdue (0 when it is not due yet).",
    )
    for name, next_run_at in sorted(gauges.schedules):
        late = max(now - next_run_at.timestamp(), 0.0)
        out.sample("taskflow_schedule_lateness_seconds", {"schedule": name}, round(late, 3))
