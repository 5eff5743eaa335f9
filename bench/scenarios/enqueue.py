"""Enqueue overhead: requests/s of a route that enqueues one task, per variant, in
alternating rounds; the durable variants ÷ FastAPI's plain ``BackgroundTasks``.

``taskflow_worker`` is taskflow with the task on a queue the web process does not serve:
a standalone ``taskflow worker`` process on the same machine runs it, so the web
process only stores it (the two processes share the machine's two cores)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from bench.context import Context, rotated, running
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, Worker, load
from bench.stats import median, rounded

TITLE = "Enqueue overhead"
# The task runs in the web process / in a standalone worker.
GOAL = 0.6
WORKER_GOAL = 0.85
WANTED = ("plain", "fastapi_taskflow", "taskflow", "taskflow_worker")


def measure(
    server: Server, ctx: Context, seconds: float, worker: Worker | None = None
) -> dict[str, Any]:
    """Closed-loop load on ``POST /enqueue`` for ``seconds``, then wait until every
    enqueued task has run (so the next measurement starts from a quiet server)."""
    cpu = server.cpu_seconds()
    worker_cpu = worker.cpu_seconds() if worker else 0.0
    out = load(
        server,
        "/enqueue",
        connections=ctx.settings.enqueue_connections,
        requests=int(seconds * 50_000),
        duration=seconds,
    )
    server.wait_idle(rows=worker is not None)
    out["cpu_ms_per_request"] = (server.cpu_seconds() - cpu) * 1000 / max(out["ok"], 1)
    if worker is not None:
        out["worker_cpu_ms_per_task"] = (
            (worker.cpu_seconds() - worker_cpu) * 1000 / max(out["ok"], 1)
        )
    return out


def ratios(rounds: list[dict[str, float]], variant: str) -> list[float]:
    """Per-round ratio of ``variant``'s requests/s to the floor's."""
    return [r[variant] / r["plain"] for r in rounds if variant in r and r.get("plain")]


def run(ctx: Context) -> dict[str, Any]:
    """Alternate the variants round by round; report medians and ratios."""
    settings = ctx.settings
    variants = ctx.variants(*WANTED)
    servers, workers = _servers(ctx, variants)
    rounds: list[dict[str, float]] = []
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    worker_cpu: list[float] = []
    errors: dict[str, int] = dict.fromkeys(variants, 0)
    with ExitStack() as stack, running(*servers.values()):
        for worker in workers.values():
            worker.start()
            stack.callback(worker.stop)
        for variant in variants:
            measure(servers[variant], ctx, settings.enqueue_warmup, workers.get(variant))
        for number in range(settings.enqueue_rounds):
            result: dict[str, float] = {}
            for variant in rotated(variants, number):
                out = measure(servers[variant], ctx, settings.enqueue_seconds, workers.get(variant))
                result[variant] = out["rps"]
                cpu[variant].append(out["cpu_ms_per_request"])
                if "worker_cpu_ms_per_task" in out:
                    worker_cpu.append(out["worker_cpu_ms_per_task"])
                errors[variant] += out["errors"] + out["requests"] - out["ok"]
            ctx.log(
                f"enqueue round {number + 1}: "
                + ", ".join(f"{v} {rps:,.0f} req/s" for v, rps in result.items())
            )
            rounds.append(result)
    medians = {v: rounded(median([r[v] for r in rounds]), 1) for v in variants}
    ratio = {v: rounded(median(ratios(rounds, v))) for v in variants if v != "plain"}
    cpu_ms = {v: rounded(median(values)) for v, values in cpu.items()}
    notes = skipped_variants(ctx.unavailable, WANTED)
    rows = [
        row("requests/s, route enqueues 1 task (median of rounds)", "req/s", medians, notes),
        row(
            "÷ plain BackgroundTasks (median of per-round ratios)",
            "ratio",
            {v: ratio.get(v) for v in variants if v not in ("plain", "taskflow_worker")},
            {**notes, "plain": "1 (the floor)"},
            _target(ratio, "taskflow", GOAL),
        ),
        row(
            "server CPU ms per request (web process; it runs the task unless a worker does)",
            "ms",
            cpu_ms,
            {
                **notes,
                **(
                    {
                        "taskflow_worker": f"worker process: "
                        f"{rounded(median(worker_cpu))} ms per task"
                    }
                    if worker_cpu
                    else {}
                ),
            },
        ),
    ]
    if "taskflow_worker" in ratio:
        rows.insert(
            2,
            row(
                "÷ plain, the task run by a standalone worker (median of per-round ratios)",
                "ratio",
                {"taskflow_worker": ratio["taskflow_worker"]},
                {},
                _target(ratio, "taskflow_worker", WORKER_GOAL),
            ),
        )
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL) for the durable variants",
        "route": "async def, one add_task(noop, token) per request",
        "taskflow_worker": "the task's queue is served by `taskflow worker bench.app:manager "
        "--queues worker` on the same machine, not by the web process",
        "connections": settings.enqueue_connections,
        "rounds": settings.enqueue_rounds,
        "seconds_per_measurement": settings.enqueue_seconds,
    }
    data = {
        "rounds": rounds,
        "cpu_ms_per_request": cpu,
        "worker_cpu_ms_per_task": worker_cpu,
        "non_2xx_or_errors": errors,
    }
    return scenario(TITLE, setup, rows, data)


def _servers(ctx: Context, variants: list[str]) -> tuple[dict[str, Server], dict[str, Worker]]:
    """A server per variant, and the standalone worker of ``taskflow_worker``."""
    servers: dict[str, Server] = {}
    workers: dict[str, Worker] = {}
    for v in variants:
        database = str(ctx.sqlite(f"enqueue-{v}"))
        if v == "taskflow_worker":
            env = {"BENCH_WORKER": "1"}
            servers[v] = ctx.server("taskflow", database, f"enqueue-{v}", **env)
            workers[v] = Worker(
                "bench.app:manager",
                ["worker"],
                ctx.work / "enqueue-worker.log",
                {"BENCH_VARIANT": "taskflow", "BENCH_DB": database, **env},
            )
        else:
            servers[v] = ctx.server(v, database, f"enqueue-{v}")
    return servers, workers


def _target(ratio: dict[str, float], variant: str, goal: float) -> dict[str, Any] | None:
    if variant not in ratio:
        return None
    return target(f"{variant} ÷ plain", ratio[variant], f"≥ {goal}", ratio[variant] >= goal)
