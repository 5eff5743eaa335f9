"""Durability: ``kill -9`` right after N acknowledged enqueues, restart, count the
tasks whose work never got done.

Each task sleeps ``durability_sleep`` seconds and then appends its sequence number to a
marker file, so at the moment of the kill no task has finished. A task is lost when its
request was answered 2xx but its number never reaches the marker file, however long the
restarted server is given (up to ``durability_recovery`` seconds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.context import Context, running
from bench.results import row, scenario, skipped_variants, target
from bench.server import Server, load

TITLE = "Durability (kill -9)"
WANTED = ("plain", "fastapi_taskflow", "taskflow")
CONNECTIONS = 8
QUIET_MARGIN = 3.0  # seconds past one task's duration without progress before giving up


def markers(path: Path) -> set[int]:
    """Sequence numbers whose work was done."""
    try:
        return {int(line) for line in path.read_text().split()}
    except FileNotFoundError:
        return set()


def recover(server: Server, marker: Path, acked: set[int], ctx: Context) -> set[int]:
    """Let the restarted server run until every acknowledged task is done, nothing has
    happened for a while, or the recovery time is up; the sequence numbers done."""
    settings = ctx.settings
    quiet_limit = settings.durability_sleep + QUIET_MARGIN
    deadline = time.monotonic() + settings.durability_recovery
    seen = markers(marker)
    with running(server):
        last_change = time.monotonic()
        while time.monotonic() < deadline and not acked <= seen:
            time.sleep(0.1)
            now_seen = markers(marker)
            if now_seen != seen:
                seen, last_change = now_seen, time.monotonic()
            elif time.monotonic() - last_change > quiet_limit:
                break
    return markers(marker)


def one_variant(ctx: Context, variant: str) -> dict[str, Any]:
    """Enqueue, kill, restart, count."""
    settings = ctx.settings
    database = ctx.sqlite(f"durability-{variant}")
    marker = ctx.work / f"durability-{variant}.marker"
    marker.unlink(missing_ok=True)
    env = {"BENCH_MARKER": str(marker), "BENCH_SLEEP": str(settings.durability_sleep)}
    server = ctx.server(variant, database, f"durability-{variant}", **env).start()
    try:
        out = load(
            server,
            "/durable?seq={i}",
            connections=CONNECTIONS,
            requests=settings.durability_enqueues,
            duration=60.0,
            keep_indices=True,
        )
    finally:
        server.kill()
    acked = set(out["ok_indices"])
    done_before = markers(marker)
    done = recover(
        ctx.server(variant, database, f"durability-{variant}", **env), marker, acked, ctx
    )
    result = {
        "acknowledged": len(acked),
        "done_before_kill": len(done_before & acked),
        "done_after_restart": len(done & acked),
        "lost": len(acked - done),
    }
    ctx.log(f"durability {variant}: {result}")
    return result


def run(ctx: Context) -> dict[str, Any]:
    """Every variant in turn."""
    results = {variant: one_variant(ctx, variant) for variant in ctx.variants(*WANTED)}
    notes = skipped_variants(ctx.unavailable, WANTED)
    lost = {v: float(r["lost"]) for v, r in results.items()}
    for variant, result in results.items():
        notes[variant] = f"of {result['acknowledged']} acknowledged"
    check = (
        target("taskflow tasks lost", lost["taskflow"], "0", lost["taskflow"] == 0)
        if "taskflow" in lost
        else None
    )
    rows = [row("tasks lost after kill -9 and restart", "tasks", lost, notes, check)]
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL); fastapi-taskflow with "
        "snapshot_db and requeue_pending=True",
        "acknowledged_enqueues": ctx.settings.durability_enqueues,
        "connections": CONNECTIONS,
        "task": f"async, sleeps {ctx.settings.durability_sleep:g}s then writes a marker "
        "(requeue_on_interrupt=True)",
        "kill": "SIGKILL as soon as the last response arrived",
        "recovery_limit_s": ctx.settings.durability_recovery,
    }
    return scenario(TITLE, setup, rows, {"variants": results})
