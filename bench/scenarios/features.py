"""What a feature costs when it is used: tasks/s (or ms) of a workload that uses it
against the same workload without it, in one process through the public API, on a
SQLite file and PostgreSQL (see :mod:`bench.features` for the workloads). What the
features cost when they are *not* used is what the other scenarios measure."""

from __future__ import annotations

from typing import Any

from bench import databases, features
from bench.context import Context
from bench.results import row, scenario
from bench.stats import rounded

TITLE = "Features: what each costs when used"
NOTES = {"plain": "n/a", "fastapi_taskflow": "n/a (no such feature)"}
RATES = (
    ("unique", "`unique_for=60`, every call distinct"),
    ("group", "one `group()` of all the tasks with a callback"),
    ("session", "each task in its own application transaction (`session=`)"),
    ("limited", "`concurrency=4` on the function"),
)


def run(ctx: Context) -> dict[str, Any]:
    """Every workload on SQLite, then on PostgreSQL when there is one."""
    settings = ctx.settings
    size = (settings.feature_tasks, settings.feature_steps, settings.feature_samples)
    measured = {"sqlite": features.run(f"sqlite:///{ctx.sqlite('features')}", *size)}
    if ctx.pg_url is not None:
        databases.reset_pg(ctx.pg_url)
        measured["postgresql"] = features.run(ctx.pg_url, *size)
    for name, figures in measured.items():
        ctx.log(f"features {name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()))
    rows = []
    for name, figures in measured.items():
        label = "SQLite" if name == "sqlite" else "PostgreSQL"
        rows.append(
            row(f"{label}: tasks/s, plain `enqueue()`", "tasks/s", _only(figures["plain"], 1))
        )
        for key, what in RATES:
            ratio = figures[key] / figures["plain"]
            rows.append(
                row(
                    f"{label}: {what} ÷ plain",
                    "ratio",
                    _only(ratio),
                    {**NOTES, "taskflow": f"{figures[key]:,.0f} tasks/s"},
                )
            )
        rows.append(
            row(
                f"{label}: ms from a chain step's end to the next one's start (p50)",
                "ms",
                _only(figures["chain_ms"]),
                {
                    **NOTES,
                    "taskflow": f"one enqueue after another: {figures['sequential_ms']:.2f} ms",
                },
            )
        )
        rows.append(
            row(
                f"{label}: ms until `wait()` returns after `enqueue()` (p50)",
                "ms",
                _only(figures["wait_ms"]),
                {**NOTES, "taskflow": f"the task's own event: {figures['event_ms']:.2f} ms"},
            )
        )
        rows.append(
            row(f"{label}: µs per `task_progress()` call", "µs", _only(figures["progress_us"]))
        )
    setup = {
        "database": "SQLite file (WAL, synchronous=FULL), then PostgreSQL",
        "tasks_per_workload": settings.feature_tasks,
        "chain_steps": settings.feature_steps,
        "wait_samples": settings.feature_samples,
        "callers": features.CALLERS,
        "progress_calls": features.PROGRESS_CALLS,
        "task": "async no-op (progress: a thread task)",
    }
    return scenario(TITLE, setup, rows, measured)


def _only(value: float, digits: int = 2) -> dict[str, float | None]:
    return {"taskflow": rounded(value, digits)}
