"""Latency, enqueue → start across processes: a web process enqueues tasks to a queue it
does not serve; a standalone ``taskflow worker`` process serves that queue and runs them
(PostgreSQL: the worker wakes on LISTEN/NOTIFY).

The harness sends ``POST /remote?seq=N`` at a steady rate (not a burst). The route notes
``time.time()`` before ``await manager.enqueue()`` and after it returned (the row is
committed then); the task body, in the worker, notes ``time.time()`` first thing. Same
host, same clock. The figure is committed → body start; enqueue call → body start and
the stored ``started_at − created_at`` are reported too.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from bench import databases
from bench.context import Context, running
from bench.results import row, scenario, target
from bench.server import Server, Worker
from bench.stats import distribution, rounded

TITLE = "Latency, enqueue → start (cross-process, PostgreSQL standalone worker)"
GOAL_MS = 25.0
APP = "bench.crossprocess_app:app"
WORKER_TARGET = "bench.crossprocess_app:manager"
DONE_TIMEOUT = 30.0
NOTES = {
    "plain": "n/a (tasks run in the process of the request)",
    "fastapi_taskflow": "n/a (no standalone worker: tasks run in the process that enqueued them)",
}


def send(port: int, count: int, rate: float, first: int = 0) -> list[dict[str, Any]]:
    """``count`` enqueue requests, one every ``1 / rate`` seconds on a fixed timetable."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    began = time.monotonic()
    try:
        for index in range(count):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.request("POST", f"/remote?seq={first + index}", body=b"")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"enqueue answered {response.status}: {body[:300]!r}")
            answers.append(json.loads(body))
    finally:
        conn.close()
    return answers


def starts(marker: Path) -> dict[int, float]:
    """Body start time of each sequence number written so far."""
    found = {}
    try:
        for line in marker.read_text().splitlines():
            seq, _, moment = line.partition(" ")
            found[int(seq)] = float(moment)
    except FileNotFoundError:
        pass
    return found


def wait_started(marker: Path, wanted: set[int]) -> dict[int, float]:
    """Wait (bounded) until every wanted task has started; the starts seen."""
    deadline = time.monotonic() + DONE_TIMEOUT
    seen = starts(marker)
    while not wanted <= set(seen) and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = starts(marker)
    missing = wanted - set(seen)
    if missing:
        raise RuntimeError(f"{len(missing)} tasks never started in the worker")
    return seen


async def _stored_delays(url: str) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(**databases.pg_params(url), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT id, EXTRACT(EPOCH FROM started_at - created_at) * 1000 AS ms "
            "FROM taskflow_tasks WHERE func_name = 'remote_job' AND started_at IS NOT NULL"
        )
    finally:
        await conn.close()
    return {row["id"]: float(row["ms"]) for row in rows}


def run(ctx: Context) -> dict[str, Any]:
    """Web server + standalone worker on PostgreSQL; steady enqueues; delays."""
    if ctx.pg_url is None:
        return scenario(
            TITLE,
            {},
            [
                row(
                    "p50 ms, enqueue committed → start in the worker",
                    "ms",
                    {},
                    {**NOTES, "taskflow": "skipped: no PostgreSQL server"},
                )
            ],
            status="skipped",
            reason="no PostgreSQL server",
        )
    import asyncio

    from taskflow._store import migrate

    settings = ctx.settings
    databases.reset_pg(ctx.pg_url)
    migrate.upgrade(ctx.pg_url)
    marker = ctx.work / "cross-process.marker"
    marker.unlink(missing_ok=True)
    env = {"BENCH_MARKER": str(marker)}
    server = Server("taskflow", ctx.pg_url, ctx.work / "cross-process-web.log", env, app=APP)
    worker = Worker(
        WORKER_TARGET,
        ["remote"],
        ctx.work / "cross-process-worker.log",
        {"BENCH_DB": ctx.pg_url, "BENCH_MARKER": str(marker)},
    )
    warmup, count = settings.cross_process_warmup, settings.cross_process_tasks
    try:
        worker.start()
        with running(server):
            send(server.port, warmup, settings.cross_process_rate)
            wait_started(marker, set(range(warmup)))
            answers = send(server.port, count, settings.cross_process_rate, first=warmup)
            seen = wait_started(marker, {answer["seq"] for answer in answers})
    finally:
        worker.stop()
    stored = asyncio.run(_stored_delays(ctx.pg_url))
    committed = [(seen[a["seq"]] - a["committed_at"]) * 1000 for a in answers]
    called = [(seen[a["seq"]] - a["enqueue_at"]) * 1000 for a in answers]
    enqueue_call = [(a["committed_at"] - a["enqueue_at"]) * 1000 for a in answers]
    from_rows = [stored[a["task_id"]] for a in answers if a["task_id"] in stored]
    figures = {
        name: {key: rounded(value) for key, value in distribution(values).items()}
        for name, values in (
            ("committed_to_start", committed),
            ("enqueue_call_to_start", called),
            ("enqueue_call", enqueue_call),
            ("stored_started_minus_created", from_rows),
        )
    }
    ctx.log(f"cross-process: {figures}")
    main = figures["committed_to_start"]
    rows = [
        row(
            "p50 ms, enqueue committed → body starts in the worker",
            "ms",
            {"taskflow": main["p50"]},
            {**NOTES, "taskflow": f"p99 {main['p99']:.2f}, max {main['max']:.2f}"},
            target("taskflow p50 (ms)", main["p50"], f"≤ {GOAL_MS:g} ms", main["p50"] <= GOAL_MS),
        ),
        row(
            "p50 ms, enqueue call → body starts in the worker",
            "ms",
            {"taskflow": figures["enqueue_call_to_start"]["p50"]},
            {**NOTES, "taskflow": f"p99 {figures['enqueue_call_to_start']['p99']:.2f}"},
        ),
        row(
            "p50 ms, stored started_at − created_at",
            "ms",
            {"taskflow": figures["stored_started_minus_created"]["p50"]},
            {**NOTES, "taskflow": f"p99 {figures['stored_started_minus_created']['p99']:.2f}"},
        ),
    ]
    setup = {
        "database": "PostgreSQL (local, default settings)",
        "web_process": "uvicorn, 1 process, bench/crossprocess_app.py; its manager serves "
        "only the 'web' queue; the route awaits task_manager.enqueue(remote_job, seq)",
        "worker_process": f"`taskflow worker {WORKER_TARGET} --queues remote` (default "
        "concurrency), woken by LISTEN/NOTIFY (1 s polling as the fallback)",
        "tasks": count,
        "warmup_tasks": warmup,
        "rate_per_s": settings.cross_process_rate,
        "sending": "one request at a time on a fixed timetable (steady, not a burst)",
        "clock": "time.time() in both processes (same host): after enqueue() returned in "
        "the web process, first line of the task body in the worker",
    }
    return scenario(TITLE, setup, rows, figures)
