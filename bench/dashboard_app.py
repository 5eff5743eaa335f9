"""The dashboard scenario's app: taskflow's ``TaskAdmin`` (with a login, and showing
task arguments, so that its searches look in them too) on a seeded database, served by
uvicorn like :mod:`bench.app`.

``BENCH_DB`` is the SQLite path or PostgreSQL URL (seeded by
:mod:`bench.dashboard_data`). Every function of the dataset is registered here, under the
name and queue its rows carry, and so are the static schedules and the TaskGroup of the
dynamic ones. The manager serves only a queue no task uses, and treats instances as
stale only after a month: starting the app changes nothing in the dataset, so every
page is measured on the rows as they were written (on SQLite the first search fills the
text index of the arguments, as it would on a user's database).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bench.dashboard_data import FUNCTIONS, SCHEDULES, function_attr
from bench.dashboard_pages import PASSWORD, USER
from taskflow import TaskAdmin, TaskGroup, TaskManager

DATABASE = os.environ.get("BENCH_DB", "")
IDLE_QUEUE = "bench-dashboard-idle"
MONTH = 30 * 86400.0


def _body(name: str) -> Callable[..., Any]:
    async def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"ok": True, "fn": name}

    run.__name__ = run.__qualname__ = function_attr(name)
    run.__module__ = __name__
    return run


url = DATABASE if "://" in DATABASE else f"sqlite:///{DATABASE}"
manager = TaskManager(
    database_url=url,
    queues=(IDLE_QUEUE,),
    instance_timeout=MONTH,
    auto_upgrade=False,
)
reports = TaskGroup("reports")
static = {spec.func: spec for spec in SCHEDULES if spec.kind == "static"}
for func in FUNCTIONS:
    body = _body(func.name)
    globals()[body.__name__] = body
    if func.name.startswith("reports."):
        reports.register_function(func.name.split(".", 1)[1], queue=func.queue)(body)
    elif func.name in static:
        spec = static[func.name]
        manager.schedule(every=spec.every, cron=spec.cron, name=spec.name, queue=func.queue)(body)
    else:
        manager.task(queue=func.queue, priority=func.priority or None, retries=2)(body)
manager.add_task_group(reports)

app = FastAPI()
# BENCH_STATS_TTL=0 computes the charts and statistics on every request (no cache).
TaskAdmin(
    app,
    manager,
    auth=(USER, PASSWORD),
    display_func_args=True,
    stats_ttl=float(os.environ.get("BENCH_STATS_TTL", "10")),
)


@app.get("/health")
async def health() -> dict[str, bool]:
    """Readiness probe."""
    return {"ok": True}
