"""The soak script (``bench/soak.py``): its verdict logic on made-up samples, and a
~25 s run with its minute-scale settings shrunk to seconds, on both databases; the
mixed soak (``--mixed``, ``bench/soak_mixed.py``): its loss check on made-up
observations, and a ~50 s run with one kill -9, on both databases. This
checks the script, not the figures of a real soak (that is ``python -m bench.soak
--minutes 30``, see docs/reliability.md).

The PostgreSQL run uses the test database itself: the soak only migrates it and empties
its ``taskflow_*`` tables, as every test does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import JUDGED, Plan, judge, parse_args
from bench.soak_mixed import Ledger, slope_per_hour, steady_windows

ROOT = Path(__file__).resolve().parent.parent


def series(count: int, **slopes: float) -> list[dict[str, float]]:
    """``count`` samples: every judged figure at 100, plus ``slope`` per sample."""
    return [
        {"t": float(i), **{m: 100.0 + slopes.get(m, 0.0) * i for m in JUDGED}} for i in range(count)
    ]


def test_flat_figures_pass_and_a_growing_one_fails():
    verdicts = {v.metric: v for v in judge(series(30, rss_mb=2.0), ["rss_mb", "live_mb"])}
    # middle third: samples 10-19 (median 129); last third: 20-29 (median 149)
    assert (verdicts["rss_mb"].middle, verdicts["rss_mb"].last) == (129.0, 149.0)
    assert not verdicts["rss_mb"].flat  # +20 MB > max(5% of 129, 4 MB)
    assert verdicts["live_mb"].flat and verdicts["live_mb"].growth == 0


def test_noise_and_shrinking_are_flat_and_the_warm_up_is_ignored():
    samples = series(30)
    for i, sample in enumerate(samples):
        sample["tasks"] = 1000 + (50 if i % 2 else -50)  # retention's sawtooth
        sample["logs"] = 5000 - 10 * i  # shrinking is fine
        if i < 10:
            sample["rss_mb"] = 10.0 * i  # warm-up growth is not judged
    assert all(v.flat for v in judge(samples, ["rss_mb", "tasks", "logs"]))


def test_too_few_samples_cannot_be_judged():
    with pytest.raises(ValueError, match="at least 6 samples"):
        judge(series(5), ["rss_mb"])


def test_the_first_third_must_cover_the_warm_up():
    with pytest.raises(SystemExit, match="must cover the warm-up"):
        Plan.from_args(parse_args(["--minutes", "1", "--keep", "30"]))
    plan = Plan.from_args(parse_args(["--minutes", "30"]))
    assert (plan.keep, plan.retention_interval, plan.sample) == (300.0, 75.0, 10.0)


def run_soak(
    module: str, args: list[str], tmp_path: Path, *, timeout: float
) -> tuple[subprocess.CompletedProcess[str], Path, str]:
    """Run ``python -m <module> <args> --json <tmp>/soak.json``; the finished process,
    the JSON file's path and the output's tail for assertion messages."""
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, out, f"{done.stdout[-6000:]}\n{done.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_short_soak_runs_and_judges(database: str, tmp_path: Path):
    args = ["--minutes", "0.4", "--rate", "5", "--work", str(tmp_path)]
    if database == "postgresql":
        url = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
        if not url:
            pytest.skip("no TASKFLOW_TEST_DATABASE_URL")
        args += ["--database", "postgresql", "--pg-url", url]
    done, out, report = run_soak("bench.soak", args, tmp_path, timeout=100)
    assert done.returncode == 0, report
    assert "verdict: FLAT" in done.stdout and "| figure |" in done.stdout, report
    result = json.loads(out.read_text())
    size = "live_mb" if database == "sqlite" else "total_mb"
    assert [v["metric"] for v in result["verdicts"]] == ["rss_mb", size, "tasks", "logs"]
    assert len(result["samples"]) >= 6
    assert result["retention"]["retention_deleted"] > 0
    assert result["orphans"] == 0
    assert result["load"]["ok"] > 0 and result["problems"] == []
    if database == "sqlite":
        assert (tmp_path / "soak.db").exists() and (tmp_path / "server.log").exists()


# -- the mixed soak ----------------------------------------------------------------------


def ledger(**funcs: str) -> Ledger:
    book = Ledger()
    for task_id, func in funcs.items():
        book.acknowledge(task_id, func)
    return book


def test_the_loss_check_flags_a_deleted_acknowledged_task():
    book = ledger(a="plain", b="plain", c="doomed")
    book.observe({"a": "running", "b": "pending", "c": "failed"}, set())
    assert book.outstanding == {"a", "b"} and not book.vanished
    # b is deleted before it was seen in a final state: lost, whatever happens next
    book.observe({"a": "success"}, set())
    assert book.vanished == {"b"} and not book.outstanding
    assert book.problems() == ["1 acknowledged tasks lost (vanished): b"]


def test_an_id_answered_before_its_commit_or_never_stored_is_flagged():
    book = ledger(a="keyed", b="keyed")
    book.observe({}, set())  # neither is stored yet, though both were answered
    assert book.outstanding == {"a", "b"} and not book.vanished
    book.observe({"a": "success"}, set())
    assert book.final == {"a": "success"} and book.early == {"a", "b"}
    assert book.problems() == [
        "1 acknowledged tasks never stored: b",
        "2 acknowledged tasks were not stored yet when first looked up (answered before "
        "their commit): a, b",
    ]


def test_the_loss_check_flags_tasks_that_never_end_and_wrong_outcomes():
    book = ledger(a="plain", b="slow_once", c="doomed", d="plain")
    book.observe({"a": "running", "b": "interrupted", "c": "success", "d": "failed"}, set())
    problems = book.problems()
    assert problems[0] == "1 acknowledged tasks never ended: a"
    assert problems[1].startswith("2 tasks ended unexpectedly: c doomed success, d plain failed")
    assert len(problems) == 2  # slow_once may end interrupted: its server was killed


def test_only_rerunnable_tasks_may_run_again_or_must_not_end_interrupted():
    book = ledger(a="slow_rerunnable", b="slow_once", c="slow_rerunnable")
    book.observe({"a": "success", "b": "success", "c": "interrupted"}, {"a", "b"})
    assert book.reruns == {"a", "b"}
    assert book.problems() == [
        "1 tasks ended unexpectedly: c slow_rerunnable interrupted",
        "1 tasks not declared re-runnable ran again: b",
    ]


def test_a_repeated_id_for_a_shared_key_is_one_task():
    book = ledger(k="keyed")
    book.acknowledge("k", "keyed")
    book.observe({"k": "success"}, set())
    assert book.final == {"k": "success"} and book.problems() == []


def test_slopes_are_per_hour_over_the_judged_part():
    samples = [{"t": 10.0 * i, "m": 5.0 + (0.0 if i < 10 else 0.01 * i)} for i in range(30)]
    # the first third (warm-up) is left out: 0.01 per 10 s is 3.6 per hour
    assert abs(slope_per_hour(samples, "m") - 3.6) < 1e-9
    assert slope_per_hour([{"t": 0.0, "m": 1.0}], "m") == 0.0


def test_latency_windows_overlapping_a_restart_are_left_out():
    windows = [{"t": float(t), "p99_ms": 10.0} for t in range(2, 21, 2)]  # 2 s windows
    kill = {"at": 1000.0 + 7.0, "ready_at": 1000.0 + 9.5}  # load began at 1000
    kept = steady_windows(windows, 1000.0, [kill], 2.0)
    # out: every window touching 7 s .. 9.5 s + 2 windows = 13.5 s
    assert [w["t"] for w in kept] == [2.0, 4.0, 6.0, 16.0, 18.0, 20.0]


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_short_mixed_soak_with_a_kill_loses_nothing(database: str, tmp_path: Path):
    args = ["--mixed", "--minutes", "0.8", "--kill-every", "30", "--rate", "5"]
    args += ["--dashboard-every", "1", "--work", str(tmp_path)]
    # This checks the script and the loss check, not the figures: 48 s on a shared
    # machine is too short to judge latency within 25 ms, so allow 250 ms.
    args += ["--p99-floor-ms", "250"]
    if database == "postgresql":
        url = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
        if not url:
            pytest.skip("no TASKFLOW_TEST_DATABASE_URL")
        args += ["--database", "postgresql", "--pg-url", url]
    done, out, report = run_soak("bench.soak_mixed", args, tmp_path, timeout=240)
    assert done.returncode == 0, report
    assert "verdict: FLAT, NOTHING LOST" in done.stdout and "slopes per hour" in done.stdout
    result = json.loads(out.read_text())
    assert len(result["kills"]) == 1 and result["problems"] == [], report
    tasks = result["tasks"]
    assert tasks["lost"] == [] and tasks["acknowledged"] == tasks["ended"] > 0, report
    size = "live_mb" if database == "sqlite" else "total_mb"
    metrics = [v["metric"] for v in result["verdicts"]]
    assert metrics == ["rss_mb", size, "tasks", "logs", "p99_ms"]
    assert set(result["slopes_per_hour"]) == {"rss_mb (A)", size, "p99_ms"}
    assert result["load"]["dashboard"]["ok"] > 0 and result["load"]["dashboard"]["5xx"] == 0
    assert result["retention_deleted"] > 0 and result["orphans"] == 0
