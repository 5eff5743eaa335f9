"""fastapi-taskflow's dashboard and JSON API with many stored tasks (a one-off probe,
not part of the suite: at a million tasks one request takes most of a minute).

    bench/.venv/bin/python -m bench.fastapi_taskflow_dashboard 1000000

Writes ``N`` finished tasks (5 log lines each, 1 in 16 failed) into fastapi-taskflow's
own SQLite snapshot table with one INSERT … SELECT, starts uvicorn with its
``TaskAdmin`` (no login), times its GET routes once each and prints a JSON summary: the
startup time, each route's time and size, and the server's resident memory. uvicorn
serves ``bench.fastapi_taskflow_dashboard:app``, built from ``BENCH_FT_DB``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.databases import fresh_sqlite
from bench.server import ROOT, _env, free_port

ROUTES = (
    "/tasks/dashboard",
    "/tasks/dashboard/metrics",
    "/tasks/dashboard/tasks",
    "/tasks",
    "/tasks/metrics",
)


def _build_app() -> Any:
    from fastapi import FastAPI
    from fastapi_taskflow import TaskAdmin, TaskManager

    manager = TaskManager(snapshot_db=os.environ["BENCH_FT_DB"])

    @manager.task()
    def send_email(x: int = 0) -> None:
        """The function every stored task ran."""

    application = FastAPI()
    TaskAdmin(application, manager)

    @application.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return application


app = _build_app() if os.environ.get("BENCH_FT_DB") else None


def seed(path: Path, count: int) -> None:
    """``count`` finished tasks in fastapi-taskflow's snapshot table."""
    from fastapi_taskflow.backends.sqlite import SqliteBackend

    SqliteBackend(str(fresh_sqlite(path)))  # creates its schema
    logs = json.dumps([f"2026-01-01T10:00:0{k} processing batch {k}" for k in range(5)])
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq
                                      WHERE n + 1 < {count})
            INSERT INTO task_snapshots (task_id, func_name, status, created_at, start_time,
                end_time, duration, retries_used, error, snapshotted_at, args_json,
                kwargs_json, logs_json, source, queue)
            SELECT printf('%032x', n), 'send_email',
                CASE WHEN n % 16 = 0 THEN 'failed' ELSE 'success' END,
                '2026-01-01T10:00:00', '2026-01-01T10:00:01', '2026-01-01T10:00:02', 1.0, 0,
                CASE WHEN n % 16 = 0 THEN 'SMTPServerDisconnected' END,
                '2026-01-01T10:00:03', '[1]', '{{}}', ?, 'manual', 'default'
            FROM seq
            """,
            (logs,),
        )


def probe(count: int, work: Path) -> dict[str, Any]:
    """Seed, start, time every route once; the summary."""
    work.mkdir(parents=True, exist_ok=True)
    database = work / f"fastapi-taskflow-{count}.db"
    seed(database, count)
    port = free_port()
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.fastapi_taskflow_dashboard:app", "--port",
         str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=_env({"BENCH_FT_DB": str(database)}),
    )  # fmt: skip
    summary: dict[str, Any] = {"tasks": count, "routes": {}}
    try:
        while True:
            if time.monotonic() - began > 600 or proc.poll() is not None:
                raise RuntimeError("fastapi-taskflow did not start")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.2)
        summary["startup_s"] = round(time.monotonic() - began, 1)
        for route in ROUTES:
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=900) as answer:  # noqa: S310
                size = len(answer.read())
            summary["routes"][route] = {
                "ms": round((time.perf_counter() - started) * 1000),
                "mb": round(size / 1e6, 1),
            }
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        rss = next(line for line in status if line.startswith("VmRSS"))
        summary["rss_mb"] = round(int(rss.split()[1]) / 1024)
    finally:
        proc.kill()
        proc.wait(30)
        fresh_sqlite(database)
    return summary


def main(argv: list[str]) -> int:
    """``python -m bench.fastapi_taskflow_dashboard COUNT``."""
    count = int(argv[0]) if argv else 100_000
    with tempfile.TemporaryDirectory(prefix="bench-fastapi-taskflow-") as work:
        print(json.dumps(probe(count, Path(work)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
