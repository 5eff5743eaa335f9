"""Throughput: no-op tasks completed per second, end to end, enqueued 100 per request,
and how close taskflow comes to the raw-driver limit.

The clock starts when the load generator sends its first request and stops when the
last task has run; for taskflow, when the last task's ``success`` row is committed. CPU
per task is the server process's CPU time over the round (its ``/stats`` polls
included) divided by the tasks.

Each round also runs the raw-driver limit (:mod:`bench.raw_limit`): the database driver
alone making the same row writes as taskflow, batched as its group commit batches them,
once per batch size in ``raw_limit_batches``. The table shows taskflow's figures as
fractions of the limit at the first batch size, the one taskflow's group commit reaches
under this load (every size is in the scenario's data): its tasks/s ÷ the limit's, and
the limit's CPU per task ÷ its own. Both are 1 at the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from bench import databases
from bench.context import Context, rotated, running
from bench.raw_limit import Figures, PostgresLimit, SQLiteLimit
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, load
from bench.stats import median, rounded

WAIT_LIMIT = 300.0  # seconds one round may take to drain before it is abandoned
RAW = "raw_driver"


class Limit(Protocol):
    """A raw-driver limit (:class:`SQLiteLimit` or :class:`PostgresLimit`)."""

    def prepare(self) -> None: ...

    def run(self, tasks: int, batch: int) -> Figures: ...


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
    cpu = server.cpu_seconds()
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
        "cpu_us_per_task": (server.cpu_seconds() - cpu) * 1e6 / tasks,
    }


def limit_round(limit: Limit, ctx: Context) -> dict[str, Any]:
    """The raw-driver limit once per batch size; the first size's figures on top."""
    by_batch = {}
    for batch in ctx.settings.raw_limit_batches:
        figures = limit.run(ctx.settings.throughput_tasks, batch)
        by_batch[str(batch)] = {
            "tasks_per_s": figures.tasks_per_s,
            "cpu_us_per_task": figures.cpu_us_per_task,
        }
    return {**next(iter(by_batch.values())), "by_batch": by_batch}


def measure(
    ctx: Context, servers: dict[str, Server], limit: Limit, rounds: int
) -> list[dict[str, Any]]:
    """Alternating rounds over ``servers`` and the raw-driver limit; per round, each
    variant's figures."""
    results = []
    limit.prepare()
    with running(*servers.values()):
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            name: (lambda server=server: one_round(server, ctx)) for name, server in servers.items()
        }
        runs[RAW] = lambda: limit_round(limit, ctx)
        for number in range(rounds):
            result = {variant: runs[variant]() for variant in rotated(list(runs), number)}
            ctx.log(
                f"throughput round {number + 1}: "
                + ", ".join(
                    f"{v} {r['tasks_per_s']:,.0f} tasks/s {r['cpu_us_per_task']:,.0f} µs CPU/task"
                    for v, r in result.items()
                )
            )
            results.append(result)
    return results


def summarize(rounds: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median of ``key`` per variant over the rounds (variants that have it)."""
    variants = rounds[0].keys() if rounds else []
    return {
        v: rounded(median([r[v][key] for r in rounds]), 1) for v in variants if key in rounds[0][v]
    }


def fractions(rounds: list[dict[str, Any]], batch: str) -> dict[str, float]:
    """taskflow's figures as fractions of the limit at ``batch`` (medians of the
    per-round fractions): tasks/s completed and accepted ÷ the limit's tasks/s, and the
    limit's CPU per task ÷ taskflow's. 1 means at the limit."""
    per_round: dict[str, list[float]] = {"completed": [], "accepted": [], "cpu": []}
    for result in rounds:
        ours, limit = result["taskflow"], result[RAW]["by_batch"][batch]
        per_round["completed"].append(ours["tasks_per_s"] / limit["tasks_per_s"])
        per_round["accepted"].append(ours["enqueued_per_s"] / limit["tasks_per_s"])
        per_round["cpu"].append(limit["cpu_us_per_task"] / ours["cpu_us_per_task"])
    return {name: rounded(median(values)) for name, values in per_round.items()}


def limit_data(rounds: list[dict[str, Any]], batches: tuple[int, ...]) -> dict[str, Any]:
    """Per batch size: the limit's median figures and taskflow's fractions of them."""
    data = {}
    for batch in map(str, batches):
        limit = [r[RAW]["by_batch"][batch] for r in rounds]
        data[batch] = {
            "tasks_per_s": rounded(median([f["tasks_per_s"] for f in limit]), 1),
            "cpu_us_per_task": rounded(median([f["cpu_us_per_task"] for f in limit]), 1),
            "taskflow_fraction": fractions(rounds, batch),
        }
    return data


def result_rows(
    rounds: list[dict[str, Any]], ctx: Context, notes: dict[str, str], goal: int
) -> list[dict[str, Any]]:
    """The table rows: tasks/s completed and accepted, CPU per task, and taskflow's
    fractions of the raw-driver limit at the first batch size."""
    batch = ctx.settings.raw_limit_batches[0]
    done = summarize(rounds, "tasks_per_s")
    limit_note = {RAW: f"batch {batch}"}
    fraction = fractions(rounds, str(batch))
    limit = f"raw-driver limit's (batch {batch}, median of rounds)"
    return [
        row(
            "tasks/s completed end to end, 100 per request (median)",
            "tasks/s",
            done,
            {**notes, **limit_note},
            target("taskflow tasks/s", done["taskflow"], f"≥ {goal:,}", done["taskflow"] >= goal),
        ),
        row(
            "tasks/s accepted (enqueue side only, median)",
            "tasks/s",
            summarize(rounds, "enqueued_per_s"),
            {**notes, RAW: "n/a (no requests)"},
        ),
        row(
            "CPU µs per task: server process; raw driver: its own process (median)",
            "µs",
            summarize(rounds, "cpu_us_per_task"),
            {**notes, **limit_note},
        ),
        row(
            f"taskflow tasks/s completed ÷ the {limit}",
            "ratio",
            {"taskflow": fraction["completed"]},
        ),
        row(
            f"taskflow tasks/s accepted ÷ the {limit}",
            "ratio",
            {"taskflow": fraction["accepted"]},
        ),
        row(
            f"CPU per task: the {limit} ÷ taskflow's",
            "ratio",
            {"taskflow": fraction["cpu"]},
        ),
    ]


def run_sqlite(ctx: Context) -> dict[str, Any]:
    """All variants on SQLite files (the floor has no database)."""
    settings = ctx.settings
    wanted = ("plain", "fastapi_taskflow", "taskflow")
    servers = {
        v: ctx.server(v, ctx.sqlite(f"throughput-{v}"), f"throughput-{v}")
        for v in ctx.variants(*wanted)
    }
    limit = SQLiteLimit(ctx.sqlite("throughput-raw-driver"))
    rounds = measure(ctx, servers, limit, settings.throughput_rounds)
    notes = skipped_variants(ctx.unavailable, wanted)
    return scenario(
        "Throughput (SQLite)",
        _setup(
            ctx,
            "SQLite file (WAL, synchronous=FULL)",
            "stdlib sqlite3, one thread, executemany with plain tuples",
        ),
        result_rows(rounds, ctx, notes, goal=5000),
        {"rounds": rounds, "raw_limit": limit_data(rounds, settings.raw_limit_batches)},
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
                        ("plain", "fastapi_taskflow", "taskflow", RAW),
                        "skipped: no PostgreSQL server",
                    ),
                )
            ],
            status="skipped",
            reason="no PostgreSQL server",
        )
    databases.reset_pg(ctx.pg_url)
    servers = {"taskflow": ctx.server("taskflow", ctx.pg_url, "throughput-pg-taskflow")}
    limit = PostgresLimit(ctx.pg_url)
    rounds = measure(ctx, servers, limit, ctx.settings.throughput_rounds)
    notes = {
        "plain": "n/a (no database)",
        "fastapi_taskflow": "n/a (PostgreSQL backend only snapshots; needs psycopg2)",
    }
    return scenario(
        title,
        _setup(
            ctx,
            "PostgreSQL (local, default settings)",
            "asyncpg, one connection, one statement per kind of write over arrays (unnest)",
        ),
        result_rows(rounds, ctx, notes, goal=3000),
        {"rounds": rounds, "raw_limit": limit_data(rounds, ctx.settings.raw_limit_batches)},
    )


def _setup(ctx: Context, database: str, driver: str) -> dict[str, Any]:
    settings = ctx.settings
    return {
        "database": database,
        "route": f"async def, {settings.throughput_per_request} × add_task(noop) per request",
        "tasks_per_round": settings.throughput_tasks,
        "connections": settings.throughput_connections,
        "rounds": settings.throughput_rounds,
        "server_processes": 1,
        "raw_driver_limit": f"{driver}; tasks per transaction: "
        + ", ".join(map(str, settings.raw_limit_batches))
        + " (the table uses the first); each transaction inserts one batch, starts the "
        "previous one and finishes the one before, as group commit does",
    }
