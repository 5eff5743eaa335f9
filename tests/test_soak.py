"""The soak script (``bench/soak.py``): its verdict logic on made-up samples, and a
~25 s run with its minute-scale settings shrunk to seconds, on both databases. This
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


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_short_soak_runs_and_judges(database: str, tmp_path: Path):
    args = ["--minutes", "0.4", "--rate", "5", "--work", str(tmp_path)]
    if database == "postgresql":
        url = os.environ.get("TASKFLOW_TEST_DATABASE_URL")
        if not url:
            pytest.skip("no TASKFLOW_TEST_DATABASE_URL")
        args += ["--database", "postgresql", "--pg-url", url]
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    report = f"{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
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
