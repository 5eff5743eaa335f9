"""Runs the scenarios and writes the results: ``python -m bench [options]``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import databases, machine, report
from bench.config import MODES, RAW_LIMIT_BATCHES
from bench.context import Context
from bench.results import row, scenario
from bench.scenarios import (
    crossprocess,
    dashboard,
    durability,
    enqueue,
    features,
    idempotency,
    latency,
    memory,
    schedule,
    throughput,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "enqueue_overhead": enqueue.run,
    "throughput_sqlite": throughput.run_sqlite,
    "throughput_postgresql": throughput.run_postgres,
    "latency": latency.run,
    "latency_cross_process": crossprocess.run,
    "idempotent_enqueue": idempotency.run,
    "features": features.run,
    "memory": memory.run,
    "schedule_lateness": schedule.run,
    "durability": durability.run,
    "dashboard": dashboard.run,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller counts, ~2 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny counts (harness check)")
    parser.add_argument(
        "--only", default="", help="comma-separated scenario names: " + ", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TASKFLOW_BENCH_PG_URL", databases.DEFAULT_PG_URL),
        help="PostgreSQL bench database",
    )
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL scenarios")
    parser.add_argument(
        "--no-competitors",
        action="store_true",
        help="skip fastapi-taskflow even when it is installed",
    )
    parser.add_argument(
        "--raw-batches",
        type=batch_sizes,
        default=None,
        help="tasks per transaction of the raw-driver limit, comma-separated; the first "
        "is the one the fractions in the table use (default: "
        + ",".join(map(str, RAW_LIMIT_BATCHES))
        + ")",
    )
    parser.add_argument("--json", type=Path, default=BENCH / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild the Markdown page from the --json results (no measuring)",
    )
    parser.add_argument(
        "--work", type=Path, default=BENCH / ".work", help="scratch folder (emptied first)"
    )
    return parser.parse_args(argv)


def batch_sizes(text: str) -> tuple[int, ...]:
    """``200,16`` → ``(200, 16)``: positive batch sizes, at least one."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 200,16, got {text!r}")
    return sizes


def chosen(only: str) -> list[str]:
    """The scenarios to run, in suite order."""
    if not only:
        return list(SCENARIOS)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return [name for name in SCENARIOS if name in wanted]


def unavailable_variants(no_competitors: bool) -> dict[str, str]:
    """Variants that cannot run in this environment, with the reason."""
    if no_competitors:
        return {"fastapi_taskflow": "--no-competitors"}
    if importlib.util.find_spec("fastapi_taskflow") is None:
        return {"fastapi_taskflow": "fastapi-taskflow not installed"}
    return {}


def run_one(name: str, ctx: Context) -> dict[str, Any]:
    """One scenario; a crash becomes an ``error`` result instead of ending the run."""
    ctx.log(f"== {name}")
    began, load_before = time.monotonic(), machine.load_average()
    try:
        result = SCENARIOS[name](ctx)
    except Exception as exc:  # noqa: BLE001 - report it and go on with the next one
        traceback.print_exc()
        result = scenario(
            name,
            {},
            [row("error", "", {}, {"taskflow": f"error: {exc}"})],
            status="error",
            reason=f"{type(exc).__name__}: {exc}",
        )
    result["seconds"] = round(time.monotonic() - began, 1)
    result["load_average"] = {"before": load_before, "after": machine.load_average()}
    return result


def main(argv: list[str]) -> int:
    """Run the chosen scenarios, write the JSON and Markdown; exit 1 if one crashed."""
    args = parse_args(argv)
    if args.report_only:
        report.write_markdown(json.loads(args.json.read_text()), args.markdown)
        return 0
    settings = MODES["quick" if args.quick else "smoke" if args.smoke else "full"]
    if args.raw_batches:
        settings = dataclasses.replace(settings, raw_limit_batches=args.raw_batches)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    pg_version = None if args.no_pg else databases.prepare_pg(args.pg_url)
    ctx = Context(
        settings=settings,
        work=args.work,
        unavailable=unavailable_variants(args.no_competitors),
        pg_url=args.pg_url if pg_version else None,
    )
    ctx.log(
        f"mode {settings.mode}; unavailable variants: {ctx.unavailable or 'none'}; "
        f"PostgreSQL: {pg_version or 'none'}"
    )
    began = time.monotonic()
    scenarios = {name: run_one(name, ctx) for name in chosen(args.only)}
    results = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": settings.mode,
        "duration_s": round(time.monotonic() - began, 1),
        "setup": machine.describe(pg_version, ROOT),
        "settings": settings.__dict__,
        "scenarios": scenarios,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(results, args.json)
    report.write_markdown(results, args.markdown)
    ctx.log(f"wrote {args.json} and {args.markdown}")
    return 1 if any(r["status"] == "error" for r in scenarios.values()) else 0
