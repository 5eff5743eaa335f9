"""Idempotent enqueue: requests/s of ``add_task`` with a fresh idempotency key ÷ without
a key, on a SQLite file that already holds many task rows, each with its own key (seeded
with one bulk SQL statement, not through the API)."""

from __future__ import annotations

from typing import Any

from bench import databases
from bench.context import Context, running
from bench.results import row, scenario, target
from bench.server import Server, load
from bench.stats import median, rounded

TITLE = "Idempotent enqueue"
GOAL = 0.5


def measure(server: Server, ctx: Context, path: str) -> float:
    """Requests/s of ``path`` under closed-loop load, then wait for its tasks."""
    seconds = ctx.settings.idempotency_seconds
    out = load(
        server,
        path,
        connections=ctx.settings.enqueue_connections,
        requests=int(seconds * 50_000),
        duration=seconds,
    )
    if out["ok"] != out["requests"] or out["errors"]:
        raise RuntimeError(f"idempotency load had failures: {out}")
    server.wait_idle()
    return out["rps"]


def run(ctx: Context) -> dict[str, Any]:
    """Seed, then alternate keyed and unkeyed rounds on one taskflow server."""
    settings = ctx.settings
    path = ctx.sqlite("idempotency")
    databases.migrate_sqlite(path)
    seconds = databases.seed_tasks(path, settings.idempotency_rows)
    ctx.log(f"idempotency: seeded {settings.idempotency_rows:,} rows in {seconds:.1f}s")
    rounds = []
    server = ctx.server("taskflow", path, "idempotency-taskflow")
    with running(server):
        measure(server, ctx, "/enqueue?key=warm-{i}")
        for number in range(settings.idempotency_rounds):
            keyed_path = f"/enqueue?key=r{number}-{{i}}"
            order = [("no_key", "/enqueue"), ("key", keyed_path)]
            result = {name: measure(server, ctx, p) for name, p in order[:: 1 - 2 * (number % 2)]}
            result["ratio"] = result["key"] / result["no_key"]
            ctx.log(
                f"idempotency round {number + 1}: no key {result['no_key']:,.0f}, "
                f"key {result['key']:,.0f} req/s"
            )
            rounds.append(result)
    ratio = rounded(median([r["ratio"] for r in rounds]))
    notes = {
        "plain": "n/a (no idempotency)",
        "fastapi_taskflow": "n/a (keys are checked in memory only)",
    }
    rows = [
        row(
            "requests/s without a key (median)",
            "req/s",
            {"taskflow": rounded(median([r["no_key"] for r in rounds]), 1)},
            notes,
        ),
        row(
            "requests/s with a fresh key (median)",
            "req/s",
            {"taskflow": rounded(median([r["key"] for r in rounds]), 1)},
            notes,
        ),
        row(
            f"with key ÷ without, {settings.idempotency_rows:,} rows exist",
            "ratio",
            {"taskflow": ratio},
            notes,
            target("taskflow key ÷ no key", ratio, f"≥ {GOAL}", ratio >= GOAL),
        ),
    ]
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL)",
        "existing_rows": settings.idempotency_rows,
        "seed": "one INSERT … SELECT (recursive CTE), each row with its own key",
        "seed_seconds": rounded(seconds, 1),
        "route": "async def, add_task(noop, idempotency_key=<fresh key>)",
        "connections": settings.enqueue_connections,
        "rounds": settings.idempotency_rounds,
        "seconds_per_measurement": settings.idempotency_seconds,
    }
    return scenario(TITLE, setup, rows, {"rounds": rounds})
