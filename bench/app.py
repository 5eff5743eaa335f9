"""The benchmark's HTTP app, one shape for every variant.

uvicorn serves ``bench.app:app``; environment variables choose what backs it:

- ``BENCH_VARIANT``: ``plain`` (FastAPI's own ``BackgroundTasks``, no persistence),
  ``fastapi_taskflow`` (the PyPI package) or ``taskflow`` (this repository).
- ``BENCH_DB``: a SQLite file path or a PostgreSQL URL (taskflow, fastapi-taskflow).
- ``BENCH_MARKER``: a file each ``durable_job`` appends its sequence number to.
- ``BENCH_SLEEP``: seconds ``durable_job`` sleeps before it writes its marker.
- ``BENCH_SCHEDULE``: ``1`` adds an every-second schedule (taskflow only).
- ``BENCH_WORKER``: ``1`` puts the no-op task on the queue ``worker``, which the web
  process does not serve: ``taskflow worker bench.app:manager --queues worker`` runs it
  (taskflow only; ``/stats?db=1`` then tells when the tasks have run).

Routes (all ``async def``, as a FastAPI service would write them):

- ``POST /enqueue?n=1&mark=0&key=``: add ``n`` no-op tasks (``mark=1``: time each one
  from ``add_task`` to the start of its body; ``key``: an idempotency key).
- ``POST /durable?seq=N``: add one ``durable_job(N)``.
- ``GET /stats``: tasks enqueued and run by this process (``db=1``: also the number of
  successful task rows, taskflow only).
- ``GET /latency``: the enqueue → start times collected so far, in ms (then cleared).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI

VARIANT = os.environ.get("BENCH_VARIANT", "plain")
DATABASE = os.environ.get("BENCH_DB", "")
MARKER = os.environ.get("BENCH_MARKER", "")
SLEEP = float(os.environ.get("BENCH_SLEEP", "2.0"))
SCHEDULE = os.environ.get("BENCH_SCHEDULE") == "1"
WORKER = os.environ.get("BENCH_WORKER") == "1"
WORKER_QUEUE = "worker"

counters = {"enqueued": 0, "done": 0}
_marks: dict[int, float] = {}
_latencies: list[float] = []
_tokens = itertools.count()


async def noop(token: int = -1) -> None:
    """A task that does nothing but count itself (and time its start when marked)."""
    if token >= 0:
        enqueued_at = _marks.pop(token, None)
        if enqueued_at is not None:
            _latencies.append((time.perf_counter() - enqueued_at) * 1000)
    counters["done"] += 1


async def durable_job(seq: int) -> None:
    """A task that takes a while, then records that its work was done."""
    await asyncio.sleep(SLEEP)
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{seq}\n".encode())
    finally:
        os.close(fd)
    counters["done"] += 1


async def tick() -> None:
    """The every-second scheduled task (its lateness is read from its task row)."""


def _plain() -> tuple[FastAPI, Any, Any]:
    app = FastAPI()

    async def get_tasks(background_tasks: BackgroundTasks) -> BackgroundTasks:
        return background_tasks

    return app, get_tasks, None


def _fastapi_taskflow() -> tuple[FastAPI, Any, Any]:
    from fastapi_taskflow import TaskManager as LegacyManager

    manager = LegacyManager(snapshot_db=DATABASE, requeue_pending=True)
    manager.task()(noop)
    manager.task(requeue_on_interrupt=True)(durable_job)
    app = FastAPI()
    manager.init_app(app)
    return app, manager.get_tasks, manager


def _taskflow() -> tuple[FastAPI, Any, Any]:
    from taskflow import TaskManager

    url = DATABASE if "://" in DATABASE else f"sqlite:///{DATABASE}"
    manager = TaskManager(database_url=url, auto_upgrade=True, queues=("default",))
    manager.task(queue=WORKER_QUEUE if WORKER else "default")(noop)
    manager.task(requeue_on_interrupt=True)(durable_job)
    if SCHEDULE:
        manager.schedule(every=1)(tick)
    app = FastAPI()
    manager.init_app(app)
    return app, manager.get_tasks, manager


_BUILDERS = {"plain": _plain, "fastapi_taskflow": _fastapi_taskflow, "taskflow": _taskflow}
app, get_tasks, manager = _BUILDERS[VARIANT]()


@app.post("/enqueue")
async def enqueue(n: int = 1, mark: int = 0, key: str = "", tasks=Depends(get_tasks)):
    """Add ``n`` no-op tasks."""
    for _ in range(n):
        token = next(_tokens) if mark else -1
        if mark:
            _marks[token] = time.perf_counter()
        if key:
            tasks.add_task(noop, token, idempotency_key=key)
        else:
            tasks.add_task(noop, token)
    counters["enqueued"] += n
    return {"enqueued": n}


@app.post("/durable")
async def durable(seq: int, tasks=Depends(get_tasks)):
    """Add one ``durable_job``."""
    tasks.add_task(durable_job, seq)
    counters["enqueued"] += 1
    return {"seq": seq}


@app.get("/stats")
async def stats(db: int = 0):
    """Counters of this process (and, for taskflow with ``db=1``, successful rows)."""
    body: dict[str, Any] = {"variant": VARIANT, "pid": os.getpid(), **counters}
    if db and VARIANT == "taskflow":
        body["success_rows"] = (await manager.db.count_by_status()).get("success", 0)
    return body


@app.get("/latency")
async def latency():
    """Enqueue → start times (ms) collected since the last call."""
    values = list(_latencies)
    _latencies.clear()
    return {"ms": values}


@app.get("/health")
async def health():
    """Readiness probe."""
    return {"ok": True}
