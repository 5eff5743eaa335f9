"""Memory: growth of the server's resident set over many processed tasks.

Tasks are enqueued 100 per request in chunks; after each chunk the harness waits until
every task has run, so the figure is what stays behind, not a backlog. The baseline is
taken after a warm-up (caches, statement caches and the pools are full by then).
"""

from __future__ import annotations

import time
from typing import Any

from bench.context import Context, running
from bench.results import row, scenario, target
from bench.server import Server, load

TITLE = "Memory"
GOAL_MB = 50.0
PER_REQUEST = 100


def push(server: Server, ctx: Context, tasks: int) -> None:
    """Enqueue ``tasks`` no-op tasks and wait until they have all run."""
    out = load(
        server,
        f"/enqueue?n={PER_REQUEST}",
        connections=ctx.settings.throughput_connections,
        requests=tasks // PER_REQUEST,
        duration=600.0,
    )
    if out["ok"] * PER_REQUEST != tasks:
        raise RuntimeError(f"memory: only {out['ok']} requests answered 2xx: {out}")
    if not server.wait_idle(timeout=600.0):
        raise RuntimeError("memory: tasks did not drain")


def run(ctx: Context) -> dict[str, Any]:
    """Warm up, note RSS, process ``memory_tasks`` more tasks, note RSS again."""
    settings = ctx.settings
    server = ctx.server("taskflow", ctx.sqlite("memory"), "memory-taskflow")
    samples: list[dict[str, float]] = []
    with running(server):
        start_kb = server.memory_kb()["rss_kb"]
        push(server, ctx, settings.memory_warmup)
        baseline = server.memory_kb()
        began = time.monotonic()
        processed = 0
        while processed < settings.memory_tasks:
            chunk = min(settings.memory_chunk, settings.memory_tasks - processed)
            push(server, ctx, chunk)
            processed += chunk
            rss = server.memory_kb()["rss_kb"]
            samples.append({"tasks": processed, "rss_mb": round(rss / 1024, 1)})
            ctx.log(f"memory: {processed:,} tasks, RSS {rss / 1024:.1f} MB")
        elapsed = time.monotonic() - began
        final = server.memory_kb()
    growth = round((final["rss_kb"] - baseline["rss_kb"]) / 1024, 1)
    notes = {"plain": "n/a", "fastapi_taskflow": "n/a (keeps every task in memory by design)"}
    label = f"RSS growth after {settings.memory_tasks:,} tasks (MB)"
    if settings.memory_tasks < 1_000_000:
        label += f" — {settings.mode} mode, not 1,000,000"
    rows = [
        row(
            label,
            "MB",
            {"taskflow": growth},
            notes,
            target("taskflow RSS growth (MB)", growth, f"≤ {GOAL_MB:g} MB", growth <= GOAL_MB),
        )
    ]
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL)",
        "tasks": settings.memory_tasks,
        "warmup_tasks": settings.memory_warmup,
        "chunk": settings.memory_chunk,
        "per_request": PER_REQUEST,
        "connections": settings.throughput_connections,
    }
    data = {
        "rss_mb_at_start": round(start_kb / 1024, 1),
        "rss_mb_after_warmup": round(baseline["rss_kb"] / 1024, 1),
        "rss_mb_final": round(final["rss_kb"] / 1024, 1),
        "peak_rss_mb": round(final["peak_kb"] / 1024, 1),
        "seconds": round(elapsed, 1),
        "tasks_per_s": round(settings.memory_tasks / elapsed, 1) if elapsed else 0.0,
        "samples": samples,
    }
    return scenario(TITLE, setup, rows, data)
