"""The cross-process latency scenario's app: a web process enqueues, a standalone
``taskflow worker`` runs.

Both processes import this module. uvicorn serves ``app`` (its manager runs only the
``web`` queue); ``taskflow worker bench.crossprocess_app:manager --queues remote`` runs
``remote_job``, whose queue the web process does not serve.

- ``BENCH_DB``: the PostgreSQL URL (already migrated).
- ``BENCH_MARKER``: the file each ``remote_job`` appends ``"<seq> <time.time()>"`` to,
  first thing in its body.

``POST /remote?seq=N`` enqueues ``remote_job(N)`` with ``await manager.enqueue()``, which
returns once the row is committed (and the notification sent); it answers with
``time.time()`` just before the call and just after it returned. Both processes run on
the same host, so their ``time.time()`` readings come from the same clock.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI

from taskflow import TaskManager

DATABASE = os.environ.get("BENCH_DB", "")
MARKER = os.environ.get("BENCH_MARKER", "")
WEB_QUEUE, REMOTE_QUEUE = "web", "remote"

manager = TaskManager(database_url=DATABASE or None, queues=(WEB_QUEUE,), auto_upgrade=False)


@manager.task(queue=REMOTE_QUEUE)
async def remote_job(seq: int) -> None:
    """Note when the body started (the worker's clock), then return."""
    started = time.time()
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{seq} {started!r}\n".encode())
    finally:
        os.close(fd)


app = FastAPI()
manager.init_app(app)


@app.post("/remote")
async def remote(seq: int) -> dict[str, object]:
    """Enqueue ``remote_job(seq)`` for the worker; the times around the enqueue call."""
    before = time.time()
    task_id = await manager.enqueue(remote_job, seq)
    return {"seq": seq, "task_id": task_id, "enqueue_at": before, "committed_at": time.time()}


@app.get("/health")
async def health() -> dict[str, bool]:
    """Readiness probe."""
    return {"ok": True}
