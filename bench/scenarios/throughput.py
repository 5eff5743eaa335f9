"""Throughput: no-op tasks completed per second, end to end, enqueued 100 per request.

The clock starts when the load generator sends its first request and stops when the
last task has run; for taskflow, when the last task's ``success`` row is committed.
"""

from __future__ import annotations

import time
from typing import Any

from bench import databases
from bench.context import Context, rotated, running
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, load
from bench.stats import median, rounded

WAIT_LIMIT = 300.0  # seconds one round may take to drain before it is abandoned


def wait_done(server: Server, baseline: dict[str, Any], tasks: int) -> float:
    """Wall time at which ``tasks`` more tasks have run (and, for taskflow, are stored
    as ``success``)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while server.stats()["done"] - baseline["done"] < tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.variant}: tasks still not done after {WAIT_LIMIT}s")
        time.sleep(0.01)
    if server.variant == "taskflow":
        while server.stats(db=True)["success_rows"] - baseline["success_rows"] < tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("taskflow: success rows missing")
            time.sleep(0.01)
    return time.time()


def one_round(server: Server, ctx: Context) -> dict[str, float]:
    """Enqueue ``throughput_tasks`` tasks and time them until all are done."""
    settings = ctx.settings
    baseline = server.stats(db=server.variant == "taskflow")
    per = settings.throughput_per_request
    out = load(
        server,
        f"/enqueue?n={per}",
        connections=settings.throughput_connections,
        requests=settings.throughput_tasks // per,
        duration=WAIT_LIMIT,
    )
    if out["ok"] != settings.throughput_tasks // per:
        raise RuntimeError(f"{server.variant}: {out['ok']} requests answered 2xx: {out}")
    tasks = out["ok"] * per
    finished = wait_done(server, baseline, tasks)
    return {
        "tasks_per_s": tasks / (finished - out["first_sent_at"]),
        "enqueued_per_s": tasks / (out["last_done_at"] - out["first_sent_at"]),
    }


def measure(ctx: Context, servers: dict[str, Server], rounds: int) -> list[dict[str, Any]]:
    """Alternating rounds over ``servers``; per round, each variant's figures."""
    results = []
    with running(*servers.values()):
        for number in range(rounds):
            result = {}
            for variant in rotated(list(servers), number):
                result[variant] = one_round(servers[variant], ctx)
            ctx.log(
                f"throughput round {number + 1}: "
                + ", ".join(f"{v} {r['tasks_per_s']:,.0f} tasks/s" for v, r in result.items())
            )
            results.append(result)
    return results


def summarize(rounds: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median of ``key`` per variant over the rounds."""
    variants = rounds[0].keys() if rounds else []
    return {v: rounded(median([r[v][key] for r in rounds]), 1) for v in variants}


def run_sqlite(ctx: Context) -> dict[str, Any]:
    """All variants on SQLite files (the floor has no database)."""
    settings = ctx.settings
    wanted = ("plain", "fastapi_taskflow", "taskflow")
    servers = {
        v: ctx.server(v, ctx.sqlite(f"throughput-{v}"), f"throughput-{v}")
        for v in ctx.variants(*wanted)
    }
    rounds = measure(ctx, servers, settings.throughput_rounds)
    done = summarize(rounds, "tasks_per_s")
    notes = skipped_variants(ctx.unavailable, wanted)
    goal = 5000
    rows = [
        row(
            "tasks/s completed end to end, 100 per request (median)",
            "tasks/s",
            done,
            notes,
            target("taskflow tasks/s", done["taskflow"], f"≥ {goal:,}", done["taskflow"] >= goal)
            if "taskflow" in done
            else None,
        ),
        row(
            "tasks/s accepted (enqueue side only, median)",
            "tasks/s",
            summarize(rounds, "enqueued_per_s"),
            notes,
        ),
    ]
    return scenario(
        "Throughput (SQLite)",
        _setup(ctx, "SQLite file (WAL, synchronous=FULL)"),
        rows,
        {"rounds": rounds},
    )


def run_postgres(ctx: Context) -> dict[str, Any]:
    """taskflow on PostgreSQL (fastapi-taskflow's PostgreSQL backend only snapshots, and
    needs psycopg2; the floor has no database)."""
    title = "Throughput (PostgreSQL)"
    if ctx.pg_url is None:
        return scenario(
            title,
            {},
            [
                row(
                    "tasks/s",
                    "tasks/s",
                    {},
                    dict.fromkeys(
                        ("plain", "fastapi_taskflow", "taskflow"), "skipped: no PostgreSQL server"
                    ),
                )
            ],
            status="skipped",
            reason="no PostgreSQL server",
        )
    databases.reset_pg(ctx.pg_url)
    servers = {"taskflow": ctx.server("taskflow", ctx.pg_url, "throughput-pg-taskflow")}
    rounds = measure(ctx, servers, ctx.settings.throughput_rounds)
    done = summarize(rounds, "tasks_per_s")
    notes = {
        "plain": "n/a (no database)",
        "fastapi_taskflow": "n/a (PostgreSQL backend only snapshots; needs psycopg2)",
    }
    goal = 3000
    rows = [
        row(
            "tasks/s completed end to end, 100 per request (median)",
            "tasks/s",
            done,
            notes,
            target("taskflow tasks/s", done["taskflow"], f"≥ {goal:,}", done["taskflow"] >= goal),
        ),
        row(
            "tasks/s accepted (enqueue side only, median)",
            "tasks/s",
            summarize(rounds, "enqueued_per_s"),
            notes,
        ),
    ]
    return scenario(
        title, _setup(ctx, "PostgreSQL (local, default settings)"), rows, {"rounds": rounds}
    )


def _setup(ctx: Context, database: str) -> dict[str, Any]:
    settings = ctx.settings
    return {
        "database": database,
        "route": f"async def, {settings.throughput_per_request} × add_task(noop) per request",
        "tasks_per_round": settings.throughput_tasks,
        "connections": settings.throughput_connections,
        "rounds": settings.throughput_rounds,
        "server_processes": 1,
    }
