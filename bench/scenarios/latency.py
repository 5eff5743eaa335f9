"""Latency: enqueue → start of a task in the process that enqueued it.

Inside each server, the route notes ``perf_counter()`` just before ``add_task`` and the
task notes it when its body starts. Measured one request at a time (the target), then
under closed-loop load. taskflow is also measured without HTTP
(``await task_manager.enqueue()``), on SQLite and, when available, PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from bench import databases, inprocess
from bench.context import Context, running
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, load
from bench.stats import distribution, rounded

TITLE = "Latency, enqueue → start (in process)"
GOAL_MS = 5.0
WANTED = ("plain", "fastapi_taskflow", "taskflow")


def sequential(server: Server, ctx: Context) -> list[float]:
    """One connection, one request at a time with a pause: an idle server's latency."""
    settings = ctx.settings
    load(
        server,
        "/enqueue?mark=1",
        connections=1,
        requests=settings.latency_samples,
        pause=settings.latency_pause,
        duration=60.0,
    )
    server.wait_idle()
    return server.get("/latency")["ms"]


def loaded(server: Server, ctx: Context) -> list[float]:
    """Closed-loop load from several connections: latency of a busy server."""
    settings = ctx.settings
    load(
        server,
        "/enqueue?mark=1",
        connections=settings.latency_loaded_connections,
        requests=int(settings.latency_loaded_seconds * 50_000),
        duration=settings.latency_loaded_seconds,
    )
    server.wait_idle()
    return server.get("/latency")["ms"]


def _summary(samples: list[float]) -> dict[str, float]:
    return {key: rounded(value) for key, value in distribution(samples).items()}


def run(ctx: Context) -> dict[str, Any]:
    """Every variant idle and loaded, then taskflow's in-process API."""
    variants = ctx.variants(*WANTED)
    idle: dict[str, dict[str, float]] = {}
    busy: dict[str, dict[str, float]] = {}
    for variant in variants:
        server = ctx.server(variant, ctx.sqlite(f"latency-{variant}"), f"latency-{variant}")
        with running(server):
            load(server, "/enqueue", connections=4, requests=200, duration=10.0)  # warm-up
            server.wait_idle()
            server.get("/latency")
            idle[variant] = _summary(sequential(server, ctx))
            busy[variant] = _summary(loaded(server, ctx))
        ctx.log(
            f"latency {variant}: idle p50 {idle[variant]['p50']:.2f} ms, "
            f"loaded p50 {busy[variant]['p50']:.2f} ms"
        )
    api = {
        "sqlite": _summary(
            inprocess.run(
                f"sqlite:///{ctx.sqlite('latency-api')}",
                ctx.settings.latency_samples,
                ctx.settings.latency_pause,
            )
        )
    }
    if ctx.pg_url is not None:
        databases.reset_pg(ctx.pg_url)
        api["postgresql"] = _summary(
            inprocess.run(ctx.pg_url, ctx.settings.latency_samples, ctx.settings.latency_pause)
        )
    ctx.log(f"latency taskflow enqueue(): {api}")
    return scenario(
        TITLE,
        _setup(ctx),
        _rows(ctx, idle, busy, api),
        {"http_idle": idle, "http_loaded": busy, "api": api},
    )


def _rows(ctx: Context, idle: dict, busy: dict, api: dict) -> list[dict[str, Any]]:
    notes = skipped_variants(ctx.unavailable, WANTED)
    p50 = idle.get("taskflow", {}).get("p50")
    check = (
        target("taskflow p50 (ms)", p50, f"≤ {GOAL_MS:g} ms", p50 <= GOAL_MS)
        if p50 is not None
        else None
    )
    api_notes = {"plain": "n/a", "fastapi_taskflow": "n/a (no enqueue outside a request)"}
    rows = [
        row(
            "p50 ms, HTTP route, one request at a time",
            "ms",
            {v: s["p50"] for v, s in idle.items()},
            notes,
            check,
        ),
        row(
            "p99 ms, HTTP route, one request at a time",
            "ms",
            {v: s["p99"] for v, s in idle.items()},
            notes,
        ),
        row(
            f"p50 ms under load ({ctx.settings.latency_loaded_connections} connections)",
            "ms",
            {v: s["p50"] for v, s in busy.items()},
            {**notes, **{v: f"p99 {s['p99']:.2f}" for v, s in busy.items()}},
        ),
        row(
            "p50 ms, `await enqueue()` without HTTP, SQLite",
            "ms",
            {"taskflow": api["sqlite"]["p50"]},
            {**api_notes, "taskflow": f"p99 {api['sqlite']['p99']:.2f}"},
        ),
    ]
    if "postgresql" in api:
        rows.append(
            row(
                "p50 ms, `await enqueue()` without HTTP, PostgreSQL",
                "ms",
                {"taskflow": api["postgresql"]["p50"]},
                {**api_notes, "taskflow": f"p99 {api['postgresql']['p99']:.2f}"},
            )
        )
    return rows


def _setup(ctx: Context) -> dict[str, Any]:
    settings = ctx.settings
    return {
        "database": "SQLite file (WAL, synchronous=FULL); PostgreSQL for the last row",
        "samples_one_at_a_time": settings.latency_samples,
        "pause_between_requests_s": settings.latency_pause,
        "loaded_connections": settings.latency_loaded_connections,
        "loaded_seconds": settings.latency_loaded_seconds,
        "measured": "perf_counter before add_task → first line of the task body",
    }
