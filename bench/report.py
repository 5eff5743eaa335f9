"""``results.json`` and the Markdown page (docs/benchmarks.md) built from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.context import LABELS, SERVER_VARIANTS, VARIANTS

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def write_json(results: dict[str, Any], path: Path) -> None:
    """The full results, pretty-printed."""
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def number(value: float, unit: str) -> str:
    """A figure for the table: thousands separators, sensible decimals."""
    if unit == "ratio":
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    if unit in ("ms", "MB"):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if unit == "µs":
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def cell(row: dict[str, Any], variant: str) -> str:
    """One variant's cell: its value (with a note in parentheses) or its note."""
    value, note = row["values"].get(variant), row["notes"].get(variant)
    if value is None:
        return note or "n/a"
    text = number(value, row["unit"])
    return f"{text} ({note})" if note else text


def target_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The target and whether it was met ("" for rows without a target)."""
    check = row.get("target")
    if not check:
        return "", ""
    return check["goal"], "✅ met" if check["met"] else "❌ missed"


def columns(scenarios: dict[str, Any]) -> list[str]:
    """The variants shown in the main table: every server variant, and the raw-driver
    limit when some row has a figure for it."""
    rows = [row for result in scenarios.values() for row in result["rows"]]
    return [
        v
        for v in VARIANTS
        if v in SERVER_VARIANTS or any(row["values"].get(v) is not None for row in rows)
    ]


def results_table(scenarios: dict[str, Any]) -> list[str]:
    """The main table: one line per row of every scenario."""
    shown = columns(scenarios)
    header = ["Scenario", "Figure", *(LABELS[v] for v in shown), "Target", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in scenarios.values():
        for index, row in enumerate(result["rows"]):
            title = result["title"] if index == 0 else ""
            goal, met = target_cells(row)
            cells = [title, row["figure"], *(cell(row, v) for v in shown), goal, met]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def setup_lines(setup: dict[str, Any]) -> list[str]:
    """The shared setup as a bullet list."""
    packages = ", ".join(f"{k} {v}" for k, v in setup["packages"].items())
    return [
        f"- taskflow revision: {setup['revision']}",
        f"- Machine: {setup['cpu']}, {setup['nproc']} cores (nproc), "
        f"{setup['memory_gib']} GiB memory, {setup['os']}",
        f"- Python {setup['python']}, SQLite {setup['sqlite']}, PostgreSQL {setup['postgresql']}",
        f"- Packages: {packages}",
        f"- Server: {setup['server']}",
        f"- Load generator: {setup['load_generator']}",
    ]


def scenario_details(key: str, result: dict[str, Any]) -> list[str]:
    """Setup and status of one scenario."""
    lines = [f"### {result['title']}", ""]
    if result["status"] != "ok":
        lines += [
            f"Status: {result['status']}"
            + (f" — {result['reason']}" if result.get("reason") else ""),
            "",
        ]
    for name, value in result.get("setup", {}).items():
        lines.append(f"- {name.replace('_', ' ')}: {value}")
    data = result.get("data", {})
    for name, value in data.items():
        if isinstance(value, int | float):
            lines.append(f"- measured {name.replace('_', ' ')}: {value:,}")
    for variant, figures in data.get("variants", {}).items():
        text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items())
        lines.append(f"- {LABELS.get(variant, variant)}: {text}")
    lines += raw_limit_lines(data.get("raw_limit", {}))
    if result["status"] == "ok" and "load_average" in result:
        load = result["load_average"]
        lines.append(
            f"- machine load average (1 min) before / after: "
            f"{load['before']:.2f} / {load['after']:.2f}; took {result['seconds']:.0f} s"
        )
    rounds = result.get("data", {}).get("rounds")
    if rounds:
        lines += [
            "",
            f"Per round (`results.json` → `scenarios.{key}.data`): "
            + "; ".join(_round_text(r) for r in rounds),
        ]
    if data.get("pages"):
        lines += ["", f"Every URL (`results.json` → `scenarios.{key}.data.pages`):", ""]
        lines += pages_table(data["pages"], data.get("target", {}).get("median_ms"))
    return [*lines, ""]


def raw_limit_lines(limits: dict[str, Any]) -> list[str]:
    """One line per batch size of the raw-driver limit, with taskflow's fractions of it."""
    lines = []
    for batch, limit in limits.items():
        share = limit["taskflow_fraction"]
        lines.append(
            f"- raw-driver limit, {batch} tasks per transaction: "
            f"{limit['tasks_per_s']:,.0f} tasks/s, {limit['cpu_us_per_task']:,.1f} µs CPU per "
            f"task; taskflow's tasks/s completed ÷ limit {share['completed']:.2f}, accepted ÷ "
            f"limit {share['accepted']:.2f}, limit's CPU per task ÷ taskflow's {share['cpu']:.2f}"
        )
    return lines


def pages_table(pages: list[dict[str, Any]], goal_ms: float | None) -> list[str]:
    """One line per timed URL: first and median times (❌ above the goal), size."""
    lines = [
        "| Database | Page | Variant | first ms | median ms | max ms | KiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in pages:
        flag = " ❌" if goal_ms is not None and entry["median_ms"] > goal_ms else ""
        lines.append(
            f"| {entry['database']} | {entry['label']} | {entry['variant'] or '—'} | "
            f"{entry['first_ms']:,.1f} | {entry['median_ms']:,.1f}{flag} | "
            f"{entry['max_ms']:,.1f} | {entry['bytes'] / 1024:,.0f} |"
        )
    return lines


def _round_text(entry: dict[str, Any]) -> str:
    parts = []
    for name, value in entry.items():
        if isinstance(value, dict):
            value = value.get("tasks_per_s", next(iter(value.values()), 0))
        parts.append(f"{name} {value:,.2f}" if value < 10 else f"{name} {value:,.0f}")
    return ", ".join(parts)


def load_note(scenarios: dict[str, Any]) -> list[str]:
    """One line on how busy the machine was (other work skews every figure)."""
    loads = [v for r in scenarios.values() for v in r.get("load_average", {}).values()]
    if not loads:
        return []
    return [
        f"Other work on the machine: 1-minute load average between {min(loads):.1f} and "
        f"{max(loads):.1f} during the run (per scenario below).",
        "",
    ]


def targets_summary(scenarios: dict[str, Any]) -> list[str]:
    """Met and missed targets, one line each."""
    lines = []
    for result in scenarios.values():
        for row in result["rows"]:
            check = row.get("target")
            if check:
                state = "met" if check["met"] else "**missed**"
                value = number(check["value"], row["unit"])
                lines.append(
                    f"- {result['title']}: {check['what']} = {value} "
                    f"(target {check['goal']}) — {state}"
                )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole page."""
    scenarios = results["scenarios"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run` — do not edit by hand (the analysis at the end comes "
        "from `bench/analysis.md`).",
        "",
        "```bash",
        "bench/run            # full suite (< 15 min on 2 cores): bench/results.json + this page",
        "bench/run --quick    # ~2 min, smaller counts (marked in the table)",
        "bench/run --only throughput_sqlite,latency   # some scenarios",
        "```",
        "",
        f"Mode: **{results['mode']}**, run on {results['generated_at']} in "
        f"{results['duration_s']:.0f} s. Every figure below was measured in this run; "
        "round-based figures are medians over alternating rounds.",
        "",
        *load_note(scenarios),
        "## Setup",
        "",
        *setup_lines(results["setup"]),
        "",
        "## Results",
        "",
        *results_table(scenarios),
        "",
        "## Targets",
        "",
        *targets_summary(scenarios),
        "",
        "## Scenario details",
        "",
    ]
    for key, result in scenarios.items():
        lines += scenario_details(key, result)
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Write :func:`markdown` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(results))
