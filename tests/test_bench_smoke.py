"""The benchmark harness (``bench/``) on tiny counts: it must run every scenario and
write well-formed results. This checks the harness, not the timings.

fastapi-taskflow (the PyPI comparison) is normally not installed in the test
environment; the harness then reports it as skipped. PostgreSQL scenarios use their
own database, ``taskflow_bench_smoke``, on the server of ``TASKFLOW_TEST_DATABASE_URL``
(never the test database itself), and are reported as skipped without one.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from bench.harness import SCENARIOS
from bench.raw_limit import SQLiteLimit, pipeline

ROOT = Path(__file__).resolve().parent.parent
STATUSES = {"ok", "skipped"}
VARIANTS = {"plain", "fastapi_taskflow", "taskflow", "taskflow_worker", "raw_driver"}
THROUGHPUT = ("throughput_sqlite", "throughput_postgresql")

pytestmark = pytest.mark.slow


def pg_args() -> list[str]:
    """``--pg-url`` for a dedicated smoke database, or ``--no-pg``."""
    url = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
    if not url:
        return ["--no-pg"]
    smoke = make_url(url).set(drivername="postgresql", database="taskflow_bench_smoke")
    return ["--pg-url", smoke.render_as_string(hide_password=False)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m bench --smoke`` once; its results.json, with the Markdown text."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--json",
            str(out / "results.json"),
            "--markdown",
            str(out / "benchmarks.md"),
            "--work",
            str(out / "work"),
            *pg_args(),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, f"harness failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    data = json.loads((out / "results.json").read_text())
    data["_markdown"] = (out / "benchmarks.md").read_text()
    return data


@pytest.mark.timeout(300)
def test_every_scenario_is_reported(results: dict[str, Any]) -> None:
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["status"] in STATUSES, (name, scenario.get("reason"))
        assert scenario["rows"], name
    assert results["scenarios"]["dashboard"]["status"] == "ok"
    cross = results["scenarios"]["latency_cross_process"]
    assert cross["status"] == ("skipped" if "--no-pg" in pg_args() else "ok"), cross


@pytest.mark.timeout(300)
def test_dashboard_times_every_route(results: dict[str, Any]) -> None:
    """Every GET route of TaskAdmin is timed on every database (a new route that the
    scenario does not request shows up here), and every page answered 200."""
    dashboard = results["scenarios"]["dashboard"]
    assert dashboard["data"]["routes_not_measured"] == []
    pages = dashboard["data"]["pages"]
    databases = {"SQLite"} | (set() if "--no-pg" in pg_args() else {"PostgreSQL"})
    assert {page["database"] for page in pages} == databases
    for database in databases:
        routes = {page["route"] for page in pages if page["database"] == database}
        assert routes == {page["route"] for page in pages}, database
    assert all(page["status"] == 200 and page["median_ms"] > 0 for page in pages)
    assert "| Database | Page | Variant |" in results["_markdown"]


@pytest.mark.timeout(300)
def test_figures_are_well_formed(results: dict[str, Any]) -> None:
    for name, scenario in results["scenarios"].items():
        if scenario["status"] != "ok":
            continue
        for row in scenario["rows"]:
            assert set(row["values"]) == VARIANTS, name
            ours = (row["values"]["taskflow"], row["values"]["taskflow_worker"])
            assert ours != (None, None), (name, row["figure"])
            for variant, value in row["values"].items():
                if value is None:
                    assert row["notes"][variant], (name, variant)
                    continue
                assert isinstance(value, int | float) and math.isfinite(value), (name, value)
                if row["unit"] == "tasks":  # tasks lost: zero is the goal
                    assert value >= 0, (name, variant, value)
                elif "CPU" in row["figure"]:  # /proc counts 10 ms ticks: smoke runs are short
                    assert value >= 0, (name, variant, row["figure"], value)
                elif row["unit"] != "MB":  # memory growth may be ~0 or slightly negative
                    assert value > 0, (name, variant, row["figure"], value)
            check = row["target"]
            if check is not None:
                assert isinstance(check["met"], bool) and isinstance(check["goal"], str)
                assert math.isfinite(check["value"])


@pytest.mark.timeout(300)
def test_enqueue_overhead_is_measured_with_a_standalone_worker(results: dict[str, Any]) -> None:
    """The worker variant stores in the web process and runs in `taskflow worker`: its
    figures exist, and every request's task ran there (the server waited for the rows)."""
    enqueue = results["scenarios"]["enqueue_overhead"]
    if enqueue["status"] != "ok":
        pytest.skip(enqueue.get("reason", "enqueue_overhead did not run"))
    worker_rows = [row for row in enqueue["rows"] if row["values"]["taskflow_worker"]]
    assert len(worker_rows) >= 3, [row["figure"] for row in worker_rows]
    assert len(enqueue["data"]["worker_cpu_ms_per_task"]) == results["settings"]["enqueue_rounds"]
    assert enqueue["data"]["non_2xx_or_errors"]["taskflow_worker"] == 0


@pytest.mark.timeout(300)
def test_setup_and_markdown(results: dict[str, Any]) -> None:
    setup = results["setup"]
    assert setup["nproc"] >= 1 and setup["memory_gib"] > 0 and setup["cpu"]
    assert results["mode"] == "smoke"
    durability = results["scenarios"]["durability"]["data"]["variants"]
    assert durability["taskflow"]["acknowledged"] == results["settings"]["durability_enqueues"]
    markdown = results["_markdown"]
    assert "| Scenario | Figure |" in markdown
    for scenario in results["scenarios"].values():
        assert scenario["title"] in markdown


@pytest.mark.timeout(300)
def test_throughput_is_shown_against_the_raw_driver_limit(results: dict[str, Any]) -> None:
    """Each throughput scenario that ran measures the raw-driver limit at every batch size
    and gives taskflow's figures as fractions of it."""
    batches = [str(size) for size in results["settings"]["raw_limit_batches"]]
    for name in THROUGHPUT:
        scenario = results["scenarios"][name]
        if scenario["status"] != "ok":
            continue
        completed, _accepted, cpu, *fractions = scenario["rows"]
        assert completed["values"]["raw_driver"] > 0 and cpu["values"]["raw_driver"] > 0
        assert len(fractions) == 3, name
        assert all(row["unit"] == "ratio" and row["values"]["taskflow"] > 0 for row in fractions)
        limits = scenario["data"]["raw_limit"]
        assert list(limits) == batches, name
        for limit in limits.values():
            assert limit["tasks_per_s"] > 0 and limit["cpu_us_per_task"] > 0
            assert set(limit["taskflow_fraction"]) == {"completed", "accepted", "cpu"}
    assert "| raw driver (limit) |" in results["_markdown"]
    assert "raw-driver limit, 16 tasks per transaction" in results["_markdown"]


def test_raw_limit_writes_each_task_in_three_successive_transactions() -> None:
    ids = [str(n) for n in range(10)]
    steps = list(pipeline(ids, 4))
    assert len(steps) == 3 + 2
    for task in ids:
        inserted = next(k for k, (new, _, _) in enumerate(steps) if task in new)
        assert task in steps[inserted + 1][1] and task in steps[inserted + 2][2]
    for kind in range(3):
        assert sorted(task for step in steps for task in step[kind]) == sorted(ids)


def test_raw_limit_stores_every_task_as_taskflow_would(tmp_path: Path) -> None:
    """The raw-driver limit on taskflow's migrated SQLite schema: every task ends
    ``success`` after one attempt, owned, with no attempt row (taskflow writes one only
    for an attempt followed by another)."""
    limit = SQLiteLimit(tmp_path / "raw.db")
    limit.prepare()
    figures = limit.run(50, 16)
    assert figures.tasks == 50 and figures.tasks_per_s > 0 and figures.cpu_us_per_task > 0
    with sqlite3.connect(tmp_path / "raw.db") as conn:
        tasks = conn.execute(
            "SELECT status, attempts, owner IS NOT NULL, started_at <= finished_at, count(*) "
            "FROM taskflow_tasks GROUP BY 1, 2, 3, 4"
        ).fetchall()
        attempts = conn.execute(
            "SELECT status, attempt, finished_at IS NOT NULL, count(*) "
            "FROM taskflow_task_attempts GROUP BY 1, 2, 3"
        ).fetchall()
    assert tasks == [("success", 1, 1, 1, 50)]
    assert attempts == []
