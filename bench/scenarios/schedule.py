"""Schedule lateness: an every-second schedule on an otherwise idle server; lateness of
each firing is read from its task row (``created_at`` and ``started_at`` minus
``schedule_slot``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench import databases
from bench.context import Context, running
from bench.results import row, scenario, target
from bench.server import ROOT, _env
from bench.stats import distribution, rounded

TITLE = "Schedule lateness"
GOAL_MS = 50.0


def lateness(rows: list[dict[str, Any]], column: str) -> list[float]:
    """Milliseconds between each row's slot and ``column`` (rows without it skipped)."""
    return [(r[column] - r["slot"]).total_seconds() * 1000 for r in rows if r[column]]


def run(ctx: Context) -> dict[str, Any]:
    """Let the schedule fire for ``schedule_seconds``, then read its task rows."""
    seconds = ctx.settings.schedule_seconds
    path = ctx.sqlite("schedule")
    server = ctx.server("taskflow", path, "schedule-taskflow", BENCH_SCHEDULE="1")
    with running(server):
        probe = subprocess.Popen(
            [sys.executable, "-m", "bench.probe", str(seconds)],
            cwd=ROOT,
            env=_env({}),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(seconds)
        noise = json.loads(probe.communicate(timeout=seconds + 30)[0])
    rows = databases.scheduled_rows(path)
    fired = {k: rounded(v) for k, v in distribution(lateness(rows, "created")).items()}
    started = {k: rounded(v) for k, v in distribution(lateness(rows, "started")).items()}
    ctx.log(
        f"schedule: {len(rows)} firings, created p99 {fired['p99']:.1f} ms, "
        f"started p99 {started['p99']:.1f} ms"
    )
    if not rows:
        raise RuntimeError("the every-second schedule never fired")
    noise = {k: rounded(v) for k, v in noise.items()}
    worst = max(fired["p99"], started["p99"])
    notes = {
        "plain": "n/a (no schedules)",
        "fastapi_taskflow": "n/a (no task rows to read lateness from)",
    }
    table = [
        row(
            "p99 ms, task row created_at − schedule_slot",
            "ms",
            {"taskflow": fired["p99"]},
            {**notes, "taskflow": f"p50 {fired['p50']:.1f}, max {fired['max']:.1f}"},
        ),
        row(
            "p99 ms, task row started_at − schedule_slot",
            "ms",
            {"taskflow": started["p99"]},
            {**notes, "taskflow": f"p50 {started['p50']:.1f}, max {started['max']:.1f}"},
            target("taskflow p99 (worse of the two)", worst, f"≤ {GOAL_MS:g} ms", worst <= GOAL_MS),
        ),
        row(
            "control: p99 ms a bare asyncio process wakes late at each second, same time",
            "ms",
            {"taskflow": noise["p99"]},
            {
                "plain": "n/a",
                "fastapi_taskflow": "n/a",
                "taskflow": f"p50 {noise['p50']:.1f}, max {noise['max']:.1f}; machine noise",
            },
        ),
    ]
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL)",
        "schedule": "@task_manager.schedule(every=1), async no-op",
        "seconds": seconds,
        "firings": len(rows),
        "load": "none (idle server)",
        "control": "bench/probe.py wakes at each whole second beside the server",
    }
    data = {"created": fired, "started": started, "control_process": noise}
    return scenario(TITLE, setup, table, data)
