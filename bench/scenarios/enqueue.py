"""Enqueue overhead: requests/s of a route that enqueues one task, per variant, in
alternating rounds; the durable variants ÷ FastAPI's plain ``BackgroundTasks``."""

from __future__ import annotations

from typing import Any

from bench.context import Context, rotated, running
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, load
from bench.stats import median, rounded

TITLE = "Enqueue overhead"
GOAL = 0.8
WANTED = ("plain", "fastapi_taskflow", "taskflow")


def measure(server: Server, ctx: Context, seconds: float) -> dict[str, Any]:
    """Closed-loop load on ``POST /enqueue`` for ``seconds``, then wait until every
    enqueued task has run (so the next measurement starts from a quiet server)."""
    cpu = server.cpu_seconds()
    out = load(
        server,
        "/enqueue",
        connections=ctx.settings.enqueue_connections,
        requests=int(seconds * 50_000),
        duration=seconds,
    )
    server.wait_idle()
    out["cpu_ms_per_request"] = (server.cpu_seconds() - cpu) * 1000 / max(out["ok"], 1)
    return out


def ratios(rounds: list[dict[str, float]], variant: str) -> list[float]:
    """Per-round ratio of ``variant``'s requests/s to the floor's."""
    return [r[variant] / r["plain"] for r in rounds if variant in r and r.get("plain")]


def run(ctx: Context) -> dict[str, Any]:
    """Alternate the variants round by round; report medians and ratios."""
    settings = ctx.settings
    variants = ctx.variants(*WANTED)
    servers = {v: ctx.server(v, ctx.sqlite(f"enqueue-{v}"), f"enqueue-{v}") for v in variants}
    rounds: list[dict[str, float]] = []
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    errors: dict[str, int] = dict.fromkeys(variants, 0)
    with running(*servers.values()):
        for variant in variants:
            measure(servers[variant], ctx, settings.enqueue_warmup)
        for number in range(settings.enqueue_rounds):
            result: dict[str, float] = {}
            for variant in rotated(variants, number):
                out = measure(servers[variant], ctx, settings.enqueue_seconds)
                result[variant] = out["rps"]
                cpu[variant].append(out["cpu_ms_per_request"])
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
            {v: ratio.get(v) for v in variants if v != "plain"},
            {**notes, "plain": "1 (the floor)"},
            target("taskflow ÷ plain", ratio["taskflow"], f"≥ {GOAL}", ratio["taskflow"] >= GOAL)
            if "taskflow" in ratio and "plain" in medians
            else None,
        ),
        row("server CPU ms per request, incl. running the task (median)", "ms", cpu_ms, notes),
    ]
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL) for the durable variants",
        "route": "async def, one add_task(noop, token) per request",
        "connections": settings.enqueue_connections,
        "rounds": settings.enqueue_rounds,
        "seconds_per_measurement": settings.enqueue_seconds,
    }
    data = {"rounds": rounds, "cpu_ms_per_request": cpu, "non_2xx_or_errors": errors}
    return scenario(TITLE, setup, rows, data)
