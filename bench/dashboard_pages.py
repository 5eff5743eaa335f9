"""What the dashboard scenario requests, and the logged-in client that times it.

:func:`pages` lists every GET page, htmx fragment and JSON list of ``TaskAdmin`` with the
filters that change its queries; :func:`admin_get_routes` lists the GET routes the app
really has, so that a route added later and not measured here shows up in the results.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, urlencode

from bench.dashboard_data import COMMON_WORD, RARE_FIELD, RARE_PHRASE, instance_id

# Text that no task, error or log line of the dataset contains: every row is a candidate
# and none matches, the worst case of a search.
NOWHERE = "no such text anywhere"
# Argument values of the dataset (``{"args": [n], "kwargs": {"tenant": "t<k>"}}``, n the
# task's number): one task's number, and one tenant of 40 (common text).
RARE_ARGUMENT = "123457"
COMMON_ARGUMENT = "t17"

PREFIX = "/tasks"
USER, PASSWORD = "bench", "bench-dashboard-password"
# Public or trivial GET routes that read no task data (not measured).
UNMEASURED = {
    f"{PREFIX}/dashboard/static/{{filename}}": "static files (CSS, JavaScript, icon)",
    f"{PREFIX}/auth/login": "login form (redirects once logged in)",
}


@dataclass(frozen=True)
class Page:
    """One URL to time: the route it exercises, what makes it different, the URL."""

    route: str  # the route's path template, e.g. /tasks/dashboard/runs/{task_id}
    label: str  # the route's name in the results
    variant: str  # what this URL adds (filters, which task), "" for the plain page
    path: str


def pages(samples: dict[str, Any], big_lines: int) -> list[Page]:
    """Every page to time, with the seeded tasks in ``samples`` (see
    :data:`bench.dashboard_data.SAMPLES`), three of which have ``big_lines`` log lines."""
    from taskflow._store.dashboard import Cursor
    from taskflow.admin._util import encode_cursor

    d = f"{PREFIX}/dashboard"
    big_success = samples["big_success"]["id"]
    big_failed = samples["big_failed"]["id"]
    running = samples["big_running"]["id"]
    failed = samples["failed"]["id"]
    page_two = samples["page_two"]
    created = datetime.fromtimestamp(page_two["created_us"] / 1e6, tz=UTC)
    cursor = encode_cursor(Cursor(created, page_two["id"]))
    tail_after = max(0, (samples["big_running"].get("last_log_id") or 0) - 50)
    logs_before = max(1, (samples["big_success"].get("last_log_id") or 1))

    def q(**params: str) -> str:
        return "?" + urlencode(params)

    runs = f"{d}/runs"
    run_filters = [
        ("", ""),
        ("status failed", q(status="failed")),
        ("status pending + running", q(status="pending,running")),
        ("function", q(func="send_email")),
        ("function + status", q(func="import_csv", status="failed")),
        ("queue", q(queue="reports")),
        ("tag", q(tag="tenant=t7")),
        ("source scheduled", q(source="scheduled")),
        ("last 24 h", q(window="24h")),
        ("search function name", q(q="report")),
        ("search error text", q(q="ConnectionResetError")),
        ("search common error text ('Error')", q(q="Error")),
        ("search text found nowhere", q(q=NOWHERE)),
        ("search task id", q(q=failed)),
        ("search id prefix", q(q=failed[:12])),
        (f"search an argument value ({RARE_ARGUMENT!r}, 1 task)", q(q=RARE_ARGUMENT)),
        (f"search common argument text ({COMMON_ARGUMENT!r}, 2.5 %)", q(q=COMMON_ARGUMENT)),
        ("sort finished", q(sort="finished")),
        ("sort started", q(sort="started")),
        ("sort duration (last 15 min)", q(sort="duration")),
        ("sort duration, last hour", q(sort="duration", window="1h")),
        ("page 5,001–5,050", q(after=cursor or "")),
    ]
    listed = [
        *(Page(runs, "Runs page", label, runs + query) for label, query in run_filters),
        Page(f"{d}/_/runs", "Runs live fragment", "", f"{d}/_/runs"),
        Page(f"{d}/_/runs", "Runs live fragment", "status failed", f"{d}/_/runs?status=failed"),
        Page(f"{d}/failures", "Failures page", "", f"{d}/failures"),
        Page(
            f"{d}/failures", "Failures page", "function", f"{d}/failures" + q(func="sync_account")
        ),
        Page(
            f"{d}/failures",
            "Failures page",
            "search error text",
            f"{d}/failures" + q(q="ConnectionResetError"),
        ),
        Page(f"{d}/_/failures", "Failures live fragment", "", f"{d}/_/failures"),
        Page(f"{d}/failures", "Failures page", "resolved too", f"{d}/failures" + q(resolved="1")),
        Page(runs, "Runs page", "instance (owner)", runs + q(owner=instance_id(0))),
        # The count an operator confirms before a bulk action on everything matching.
        Page(
            f"{d}/bulk",
            "Bulk action confirmation",
            "cancel pending + running",
            f"{d}/bulk" + q(page="runs", action="cancel", status="pending,running"),
        ),
        Page(
            f"{d}/bulk",
            "Bulk action confirmation",
            "discard failures of a function",
            f"{d}/bulk" + q(page="failures", action="discard", func="sync_account"),
        ),
        Page(
            f"{d}/bulk",
            "Bulk action confirmation",
            "delete every finished task",
            f"{d}/bulk" + q(page="runs", action="delete"),
        ),
    ]
    task = f"{d}/runs/{{task_id}}"
    # The Overview's charts: each window, and filtered by queue, function, or both.
    chart_filters = [
        ("last hour", q(window="1h")),
        ("last 24 h", q(window="24h")),
        ("queue, last hour", q(window="1h", queue="reports")),
        ("queue, last 24 h", q(window="24h", queue="emails")),
        ("function, last hour", q(window="1h", func="send_email")),
        ("function, last 24 h", q(window="24h", func="send_email")),
        ("queue + function, last 24 h", q(window="24h", queue="emails", func="send_email")),
    ]
    tasks = [
        Page(d, "Overview page", "", d),
        Page(d, "Overview page", "queue + function, last 24 h", d + chart_filters[-1][1]),
        Page(f"{d}/_/overview", "Overview live fragment", "", f"{d}/_/overview"),
        *(
            Page(f"{d}/_/overview", "Overview live fragment", label, f"{d}/_/overview" + query)
            for label, query in chart_filters
        ),
        *(
            Page(
                f"{PREFIX}/stats/series",
                "JSON chart series",
                label,
                f"{PREFIX}/stats/series" + query,
            )
            for label, query in chart_filters
        ),
        *listed,
        Page(task, "Task page", f"{big_lines:,} log lines, success", f"{d}/runs/{big_success}"),
        Page(task, "Task page", f"{big_lines:,} log lines, failed", f"{d}/runs/{big_failed}"),
        Page(task, "Task page", f"{big_lines:,} log lines, running", f"{d}/runs/{running}"),
        Page(task, "Task page", "failed, traceback", f"{d}/runs/{failed}"),
        Page(f"{d}/_/runs/{{task_id}}", "Task live fragment", "running", f"{d}/_/runs/{running}"),
        Page(
            f"{d}/_/runs/{{task_id}}/logs",
            "Task log tail fragment",
            "last 500 lines",
            f"{d}/_/runs/{running}/logs",
        ),
        Page(
            f"{d}/_/runs/{{task_id}}/logs",
            "Task log tail fragment",
            "50 new lines",
            f"{d}/_/runs/{running}/logs?after={tail_after}",
        ),
        Page(f"{d}/schedules", "Schedules page", "", f"{d}/schedules"),
        Page(f"{d}/_/schedules", "Schedules live fragment", "", f"{d}/_/schedules"),
    ]
    logs = f"{d}/logs"
    log_filters = [
        ("", ""),
        ("level error", q(level="error")),
        ("function", q(func="import_csv")),
        (f"search common text ({COMMON_WORD!r})", q(q=COMMON_WORD)),
        (f"search rare text ({RARE_PHRASE!r}, 0.2 %)", q(q=RARE_PHRASE)),
        (f"search a structured field ({RARE_FIELD!r}, 0.002 %)", q(q=RARE_FIELD)),
        ("search text found nowhere", q(q=NOWHERE)),
        ("one task", q(task=big_success)),
        ("last hour", q(window="1h")),
        ("older page", q(before=str(logs_before))),
    ]
    rest = [
        *(Page(logs, "Logs page", label, logs + query) for label, query in log_filters),
        Page(f"{d}/functions", "Functions page", "", f"{d}/functions"),
        Page(f"{d}/instances", "Instances page", "", f"{d}/instances"),
        Page(f"{d}/_/instances", "Instances live fragment", "", f"{d}/_/instances"),
        Page(f"{d}/queues", "Queues page", "", f"{d}/queues"),
        Page(f"{PREFIX}/queues/overview", "JSON queues", "", f"{PREFIX}/queues/overview"),
        Page(f"{d}/audit", "Audit page", "", f"{d}/audit"),
        Page(f"{PREFIX}/auth/logout", "Logout page", "", f"{PREFIX}/auth/logout"),
        Page(f"{PREFIX}/auth/session", "JSON session", "", f"{PREFIX}/auth/session"),
        Page(PREFIX, "JSON task list", "", PREFIX),
        Page(PREFIX, "JSON task list", "status failed", PREFIX + q(status="failed")),
        Page(PREFIX, "JSON task list", "function", PREFIX + q(func_name="import_csv")),
        Page(PREFIX, "JSON task list", "search error text", PREFIX + q(q="CardDeclined")),
        Page(PREFIX, "JSON task list", "search text found nowhere", PREFIX + q(q=NOWHERE)),
        Page(PREFIX, "JSON task list", "limit 500", PREFIX + q(limit="500")),
        Page(f"{PREFIX}/metrics", "JSON metrics", "", f"{PREFIX}/metrics"),
        Page(f"{PREFIX}/prometheus", "Prometheus metrics", "", f"{PREFIX}/prometheus"),
        Page(
            f"{PREFIX}/{{task_id}}",
            "JSON task",
            f"with its first 1,000 of {big_lines:,} log lines",
            f"{PREFIX}/{big_success}",
        ),
        Page(f"{PREFIX}/{{task_id}}", "JSON task", "failed", f"{PREFIX}/{failed}"),
        Page(f"{PREFIX}/schedules", "JSON schedules", "", f"{PREFIX}/schedules"),
        Page(f"{PREFIX}/audit", "JSON audit", "", f"{PREFIX}/audit"),
    ]
    return tasks + rest


def admin_get_routes() -> set[str]:
    """Path templates of every GET route TaskAdmin mounts (under ``/tasks``)."""
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    from taskflow import TaskAdmin, TaskManager

    app = FastAPI()
    TaskAdmin(app, TaskManager(database_url="sqlite:///unused-bench.db"), auth=("a", "b"))
    return {
        route.path
        for route in app.routes
        if isinstance(route, APIRoute) and "GET" in route.methods and route.path != "/"
    }


class Client:
    """A logged-in dashboard user on one keep-alive connection; times every GET.

    Args:
        port: the server's loopback port.
        user, password: the dashboard login.
    """

    def __init__(self, port: int, user: str, password: str) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self._login(user, password)

    def _request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        began = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a fresh connection next time
            raise
        elapsed = (time.perf_counter() - began) * 1000
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                self.cookies[name] = morsel.value
        return response.status, data, elapsed

    def _login(self, user: str, password: str) -> None:
        import json

        status, data, _ = self._request("GET", f"{PREFIX}/auth/session")
        if status != 200:
            raise RuntimeError(f"session endpoint answered {status}")
        token = json.loads(data)["csrf_token"]
        form = urlencode(
            {
                "username": user,
                "password": password,
                "csrf_token": token,
                "next": f"{PREFIX}/dashboard",
            }
        )
        status, data, _ = self._request(
            "POST",
            f"{PREFIX}/auth/login",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 303:
            raise RuntimeError(f"login answered {status}: {data[:300]!r}")

    def get(self, path: str) -> tuple[int, int, float]:
        """GET ``path``: its status, body size and the time to the last byte, in ms."""
        status, data, elapsed = self._request("GET", quote(path, safe="/?=&%:,+"))
        return status, len(data), elapsed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
