"""Soak run: mixed load for a long time with retention on; memory and database size
must stay flat.

    python -m bench.soak --minutes 30 [--database sqlite|postgresql] [--pg-url URL]

(or ``bench/soak ...``, which sets up the benchmark venv first). One real uvicorn
server serves this module's app (``bench.soak:app``) with retention keeping finished
tasks for ``--keep`` seconds; a separate load process sends ``--rate`` requests a
second, each adding a mix of tasks through ``BackgroundTasks``: plain async tasks, a
sync task writing log lines, a task that fails once and is retried, one that fails for
good, a keyed task whose idempotency key four requests share, and an every-second
schedule ticks throughout. Every ``--sample`` seconds the server's RSS and the
database's size and row counts are recorded.

Verdict: the run is cut in thirds; the first third is warm-up (it must cover
``keep + 2 × retention interval``, so retention is deleting by its end). For each
judged figure, the median of the last third must not exceed the median of the middle
third by more than its tolerance (printed with the table). On SQLite the judged size is
the live data, ``(page_count - freelist_count) × page_size``: SQLite reuses freed pages
but never gives them back to the file system, so the file keeps its high-water mark
(the file and WAL sizes are reported, not judged). On PostgreSQL it is
``pg_total_relation_size`` of the ``taskflow_*`` tables (tables, indexes, TOAST);
deleted and updated rows leave dead tuples that only VACUUM makes reusable. taskflow
relies on autovacuum for that; on a server where it is off the tables grow without
bound, so the soak then runs ``VACUUM (ANALYZE)`` itself every retention interval, as
autovacuum would (``--vacuum``), and says so.

Besides flatness, the run checks that retention deleted tasks, that no log line or
attempt outlived its task, and that no finished task is much older than ``--keep``.
Exit status: 0 when everything holds, 1 otherwise.

``--mixed`` runs the mixed soak instead (two servers, one killed with SIGKILL every few
minutes, process and thread tasks, dashboard polling, and a check that nothing
acknowledged is lost): see :mod:`bench.soak_mixed`.

The PostgreSQL database (``--pg-url``, default ``$TASKFLOW_SOAK_PG_URL`` or the
benchmark database) is migrated and its ``taskflow_*`` tables are emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.databases import pg_params
from bench.server import ROOT, Server, _env

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/taskflow_bench"
KEY_SHARED_BY = 4  # consecutive requests that share one idempotency key
LOG_LINES = 10  # log lines written by each ``chatty`` task

# ====================================================================================
# The app under test (the server process imports ``bench.soak:app``)
# ====================================================================================


async def plain(n: int) -> int:
    """A plain async task."""
    return n


def chatty(lines: int) -> int:
    """A sync (thread) task writing ``lines`` log lines."""
    from taskflow import task_log

    for k in range(lines):
        task_log(f"step {k} of {lines}", step=k)
    return lines


async def flaky(seq: int) -> str:
    """Fails its first attempt, succeeds on the retry."""
    from taskflow import get_task_context

    context = get_task_context()
    if context is not None and context.attempt == 0:
        raise RuntimeError(f"first attempt of {seq} fails")
    return "recovered"


async def doomed(seq: int) -> None:
    """Fails every attempt (its error and traceback are stored)."""
    raise ValueError(f"task {seq} always fails")


async def keyed(key: str) -> str:
    """Enqueued with an idempotency key shared by several requests."""
    return key


async def tick() -> None:
    """The every-second schedule."""


class _RetentionCounter(logging.Handler):
    """Adds up the ``retention deleted N tasks`` lines of taskflow's logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.deleted = 0
        self.passes = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("retention deleted") and record.args:
            self.deleted += int(record.args[0])  # type: ignore[index]
            self.passes += 1


def build_app() -> Any:
    """The soak app, configured from ``SOAK_*`` environment variables."""
    from fastapi import Depends, FastAPI

    from taskflow import TaskManager

    keep = float(os.environ["SOAK_KEEP"])
    manager = TaskManager(
        database_url=os.environ["SOAK_DB"],
        auto_upgrade=True,
        retention_days=keep / 86400,
        retention_interval=float(os.environ["SOAK_RETENTION_INTERVAL"]),
    )
    manager.task()(plain)
    manager.task()(chatty)
    manager.task(retries=1, delay=0.2)(flaky)
    manager.task(retries=1, delay=0.2)(doomed)
    manager.task()(keyed)
    manager.schedule(every=1)(tick)
    counter = _RetentionCounter()
    taskflow_logger = logging.getLogger("taskflow")
    taskflow_logger.addHandler(counter)
    taskflow_logger.setLevel(logging.INFO)
    requests = {"count": 0}
    app = FastAPI()
    manager.init_app(app)

    @app.post("/soak/mix")
    async def mix(i: int, tasks=Depends(manager.get_tasks)) -> dict[str, int]:
        for n in range(3):
            tasks.add_task(plain, n)
        tasks.add_task(chatty, LOG_LINES)
        if i % 3 == 0:
            tasks.add_task(flaky, i)
        if i % 10 == 0:
            tasks.add_task(doomed, i)
        key = f"key-{i // KEY_SHARED_BY}"
        tasks.add_task(keyed, key, idempotency_key=key)
        requests["count"] += 1
        return {"i": i}

    @app.get("/soak/stats")
    async def stats() -> dict[str, Any]:
        return {
            "requests": requests["count"],
            "retention_deleted": counter.deleted,
            "retention_passes": counter.passes,
            "by_status": await manager.db.count_by_status(),
        }

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


_APP: Any = None


def __getattr__(name: str) -> Any:
    """``app`` is built on first access, so that importing this module to run the soak
    (or its tests) builds nothing."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = build_app()
        return _APP
    raise AttributeError(name)


# ====================================================================================
# The load process: ``python -m bench.soak drive '<json>'``
# ====================================================================================

MAX_IN_FLIGHT = 16  # requests outstanding at once; beyond that a tick is skipped


async def drive(port: int, rate: float, duration: float) -> dict[str, Any]:
    """Send ``POST /soak/mix?i=N`` ``rate`` times a second for ``duration`` seconds
    (open loop: a slow answer does not slow the schedule down, up to
    ``MAX_IN_FLIGHT`` outstanding requests). Errors are counted, never fatal."""
    import httpx

    counts = {"sent": 0, "ok": 0, "failed": 0, "errors": 0, "skipped": 0}
    statuses: dict[str, int] = {}
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(client: httpx.AsyncClient, index: int) -> None:
        try:
            response = await client.post(f"/soak/mix?i={index}")
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            counts["ok" if response.status_code == 200 else "failed"] += 1
        except httpx.HTTPError:
            counts["errors"] += 1
        finally:
            slots.release()

    pending: set[asyncio.Task[None]] = set()
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
        index = 0
        while (due := began + index / rate) < began + duration:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if slots.locked():
                counts["skipped"] += 1
            else:
                await slots.acquire()
                counts["sent"] += 1
                task = asyncio.create_task(one(client, index))
                pending.add(task)
                task.add_done_callback(pending.discard)
            index += 1
        if pending:
            await asyncio.wait(pending, timeout=60)
    return {**counts, "statuses": statuses, "seconds": round(time.monotonic() - began, 1)}


# ====================================================================================
# Probes: database size and row counts
# ====================================================================================

TABLES = ("taskflow_tasks", "taskflow_task_logs", "taskflow_task_attempts")
FINAL = ("success", "failed", "cancelled", "interrupted")
ORPHANS = (
    "SELECT (SELECT count(*) FROM taskflow_task_logs l WHERE NOT EXISTS "
    "(SELECT 1 FROM taskflow_tasks t WHERE t.id = l.task_id)) + "
    "(SELECT count(*) FROM taskflow_task_attempts a WHERE NOT EXISTS "
    "(SELECT 1 FROM taskflow_tasks t WHERE t.id = a.task_id))"
)
OLDEST_FINISHED = (
    "SELECT min(finished_at) FROM taskflow_tasks WHERE status IN "
    "('success', 'failed', 'cancelled', 'interrupted')"
)
MB = 1024 * 1024


class SqliteProbe:
    """Reads size and counts of a SQLite file (a fresh read-only connection each time,
    so the probe never holds a snapshot that would stop checkpoints)."""

    size_metric = "live_mb"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, *sql: str) -> list[Any]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return [conn.execute(statement).fetchall() for statement in sql]
        finally:
            conn.close()

    def sample(self) -> dict[str, float]:
        pages, free, size, counts, by_status = self._query(
            "PRAGMA page_count",
            "PRAGMA freelist_count",
            "PRAGMA page_size",
            "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES),
            "SELECT status, count(*) FROM taskflow_tasks GROUP BY status",
        )
        page_size = size[0][0]
        wal = Path(f"{self.path}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        statuses = dict(by_status)
        return {
            "file_mb": self.path.stat().st_size / MB,
            "wal_mb": wal_bytes / MB,
            "pages_mb": pages[0][0] * page_size / MB,
            "free_mb": free[0][0] * page_size / MB,
            "live_mb": (pages[0][0] - free[0][0]) * page_size / MB,
            **_counts(counts[0], statuses),
        }

    def final_checks(self) -> dict[str, Any]:
        orphans, oldest = self._query(ORPHANS, OLDEST_FINISHED)
        return {"orphans": orphans[0][0], "oldest_finished": _utc(oldest[0][0])}

    def maybe_vacuum(self) -> None:
        """Nothing to do: SQLite reuses freed pages by itself."""

    def close(self) -> None:
        """Nothing to release."""


class PgProbe:
    """Reads size and counts of the ``taskflow_*`` tables of a PostgreSQL database."""

    size_metric = "total_mb"

    def __init__(self, url: str) -> None:
        self.url = url
        self._runner = asyncio.Runner()
        self._conn: Any = None
        self.vacuum_every: float | None = None
        self.autovacuum_on = True
        self.vacuums = 0
        self._vacuumed = time.monotonic()

    def autovacuum(self) -> bool:
        """Whether the server runs autovacuum."""
        return self._fetch("SHOW autovacuum")[0][0][0] == "on"

    def maybe_vacuum(self) -> None:
        """``VACUUM (ANALYZE)`` the ``taskflow_*`` tables if ``vacuum_every`` seconds have
        passed since the last time: what autovacuum does, for servers where it is off."""
        if self.vacuum_every is None or time.monotonic() - self._vacuumed < self.vacuum_every:
            return
        self._vacuumed = time.monotonic()
        names = ", ".join(table.name for table in _metadata().sorted_tables)
        self._fetch(f"VACUUM (ANALYZE) {names}")
        self.vacuums += 1

    async def _connect(self) -> Any:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(**pg_params(self.url), timeout=10)
        return self._conn

    def _fetch(self, *sql: str) -> list[list[Any]]:
        async def run() -> list[list[Any]]:
            conn = await self._connect()
            try:
                return [await conn.fetch(statement) for statement in sql]
            except Exception:
                await conn.close()  # reconnect next time (the server may have restarted)
                raise

        return self._runner.run(run())

    def sample(self) -> dict[str, float]:
        sizes, counts, by_status, dead = self._fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND c.relname LIKE 'taskflow%' AND n.nspname = current_schema()",
            "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES),
            "SELECT status, count(*) FROM taskflow_tasks GROUP BY status",
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
            "WHERE relname LIKE 'taskflow%'",
        )
        by_table = {row[0]: row[1] for row in sizes}
        return {
            "total_mb": sum(by_table.values()) / MB,
            "tasks_mb": by_table.get("taskflow_tasks", 0) / MB,
            "logs_mb": by_table.get("taskflow_task_logs", 0) / MB,
            "dead_rows": float(dead[0][0]),
            **_counts(tuple(counts[0]), {row[0]: row[1] for row in by_status}),
        }

    def final_checks(self) -> dict[str, Any]:
        orphans, oldest = self._fetch(ORPHANS, OLDEST_FINISHED)
        return {"orphans": orphans[0][0], "oldest_finished": _utc(oldest[0][0])}

    def close(self) -> None:
        if self._conn is not None:
            self._runner.run(self._conn.close())
        self._runner.close()


def _metadata() -> Any:
    from taskflow._store.schema import metadata

    return metadata


def _counts(counts: tuple[int, ...], statuses: dict[str, int]) -> dict[str, float]:
    tasks, logs, attempts = counts
    return {
        "tasks": float(tasks),
        "logs": float(logs),
        "attempts": float(attempts),
        "pending": float(statuses.get("pending", 0) + statuses.get("running", 0)),
    }


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def prepare_postgres(url: str) -> None:
    """Create the database if missing, migrate it and empty the ``taskflow_*`` tables."""
    import asyncpg

    from taskflow._store import migrate

    params = pg_params(url)

    async def create() -> None:
        # Not bench.databases.prepare_pg: that one refuses the test database, which
        # the suite's soak smoke runs on.
        try:
            conn = await asyncpg.connect(**params, timeout=10)
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(**{**params, "database": "postgres"}, timeout=10)
            try:
                await admin.execute(f'CREATE DATABASE "{params["database"]}"')
            finally:
                await admin.close()
        else:
            await conn.close()

    async def empty() -> None:
        conn = await asyncpg.connect(**params, timeout=10)
        try:
            names = ", ".join(table.name for table in _metadata().sorted_tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
        finally:
            await conn.close()

    asyncio.run(create())
    migrate.upgrade(url)
    asyncio.run(empty())


# ====================================================================================
# Verdict
# ====================================================================================


@dataclass(frozen=True)
class Tolerance:
    """Allowed growth of a figure: the larger of ``relative`` × the middle third's
    median and ``absolute`` (in the figure's unit)."""

    relative: float
    absolute: float

    def allowed(self, base: float) -> float:
        return max(self.relative * base, self.absolute)

    def describe(self, unit: str) -> str:
        return f"≤ max({self.relative:.0%}, {self.absolute:g} {unit})"


# RSS: 5% of ~100 MB is ~5 MB between the middle and the last third: over a 30-minute
# run (~40,000 tasks apart) that catches a leak of ~130 bytes per task. Sizes and rows
# follow retention's sawtooth (each pass deletes ~a quarter of what is kept); medians
# over a third of the run smooth it, 10% is well above what is left of it.
JUDGED = {
    "rss_mb": (Tolerance(0.05, 4.0), "MB"),
    "live_mb": (Tolerance(0.10, 1.0), "MB"),
    "total_mb": (Tolerance(0.10, 1.0), "MB"),
    "tasks": (Tolerance(0.10, 200.0), "rows"),
    "logs": (Tolerance(0.10, 500.0), "rows"),
    # Mixed soak (bench/soak_mixed.py): the p99 enqueue latency of each sample window.
    # Kills and a shared machine make single windows spike; medians of thirds do not.
    "p99_ms": (Tolerance(0.50, 25.0), "ms"),
}


@dataclass(frozen=True)
class Verdict:
    """One judged figure: medians of the middle and last thirds and the outcome."""

    metric: str
    middle: float
    last: float
    allowed: float
    tolerance: str

    @property
    def growth(self) -> float:
        return self.last - self.middle

    @property
    def flat(self) -> bool:
        return self.growth <= self.allowed


def judge(samples: list[dict[str, float]], metrics: list[str]) -> list[Verdict]:
    """Compare the median of the last third of ``samples`` with that of the middle
    third for each of ``metrics`` (the first third is warm-up).

    Raises:
        ValueError: fewer than 6 samples (two per third at least).
    """
    if len(samples) < 6:
        raise ValueError(f"need at least 6 samples to judge, got {len(samples)}")
    third = len(samples) // 3
    middle, last = samples[third : 2 * third], samples[len(samples) - third :]
    verdicts = []
    for metric in metrics:
        tolerance, unit = JUDGED[metric]
        base = statistics.median(s[metric] for s in middle)
        verdicts.append(
            Verdict(
                metric=metric,
                middle=base,
                last=statistics.median(s[metric] for s in last),
                allowed=tolerance.allowed(base),
                tolerance=tolerance.describe(unit),
            )
        )
    return verdicts


# ====================================================================================
# The run
# ====================================================================================


@dataclass(frozen=True)
class Plan:
    """Durations of one run, in seconds."""

    duration: float
    keep: float
    retention_interval: float
    sample: float
    rate: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        duration = args.minutes * 60
        keep = args.keep if args.keep is not None else min(300.0, max(3.0, duration / 6))
        interval = args.retention_interval or max(0.5, keep / 4)
        sample = args.sample or min(10.0, max(0.5, duration / 120))
        plan = cls(duration, keep, interval, sample, args.rate)
        warmup = keep + 2 * interval
        if warmup > duration / 3:
            raise SystemExit(
                f"the first third ({duration / 3:g} s) must cover the warm-up, keep + 2 × "
                f"retention interval = {warmup:g} s: run longer or keep less"
            )
        return plan


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak run: mixed load with retention on; memory and database size "
        "must stay flat.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TASKFLOW_SOAK_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL database (its taskflow_* tables are emptied first)",
    )
    parser.add_argument(
        "--vacuum",
        choices=("auto", "on", "off"),
        default="auto",
        help="PostgreSQL: VACUUM the taskflow tables every retention interval (auto: only "
        "when the server's autovacuum is off)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument(
        "--keep", type=float, help="seconds finished tasks are kept (default: run / 6, ≤ 300)"
    )
    parser.add_argument(
        "--retention-interval", type=float, help="seconds between retention passes (keep / 4)"
    )
    parser.add_argument("--sample", type=float, help="seconds between samples (run / 120, ≤ 10)")
    parser.add_argument("--work", type=Path, help="folder for the SQLite file and server log")
    parser.add_argument("--json", type=Path, help="also write the samples and verdict here")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="two servers, one killed with SIGKILL every --kill-every seconds, process and "
        "thread tasks, dashboard polling; nothing acknowledged may be lost "
        "(bench/soak_mixed.py)",
    )
    parser.add_argument(
        "--kill-every", type=float, help="--mixed: seconds between kills of server B (180)"
    )
    parser.add_argument(
        "--p99-floor-ms",
        type=float,
        default=25.0,
        help="--mixed: p99 enqueue latency may always grow this much (ms)",
    )
    parser.add_argument(
        "--dashboard-every",
        type=float,
        default=2.0,
        help="--mixed: seconds between dashboard page or JSON fetches",
    )
    return parser.parse_args(argv)


def pg_probe(args: argparse.Namespace, plan: Plan) -> PgProbe:
    """The PostgreSQL probe, vacuuming when asked to or when autovacuum is off."""
    probe = PgProbe(args.pg_url)
    probe.autovacuum_on = probe.autovacuum()
    if args.vacuum == "on" or (args.vacuum == "auto" and not probe.autovacuum_on):
        probe.vacuum_every = plan.retention_interval
    return probe


def vacuum_note(probe: PgProbe) -> str:
    """How dead rows get reclaimed during this run."""
    state = "on" if probe.autovacuum_on else "off"
    if probe.vacuum_every is None:
        return f"autovacuum is {state} on this server; the soak does not vacuum"
    return (
        f"autovacuum is {state} on this server; the soak runs VACUUM (ANALYZE) on the "
        f"taskflow tables every {probe.vacuum_every:g} s"
    )


def log(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:7.1f}s] {message}", flush=True)


def start_load(port: int, plan: Plan) -> subprocess.Popen[bytes]:
    spec = json.dumps({"port": port, "rate": plan.rate, "duration": plan.duration})
    return subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "drive", spec],
        cwd=ROOT,
        env=_env({}),
        stdout=subprocess.PIPE,
    )


def sample_loop(
    server: Server,
    probe: SqliteProbe | PgProbe,
    load: subprocess.Popen[bytes],
    plan: Plan,
    began: float,
) -> list[dict[str, float]]:
    """Sample every ``plan.sample`` seconds until the run's end; stop early (raising)
    if the server dies."""
    samples: list[dict[str, float]] = []
    every = max(1, round(plan.duration / plan.sample / 40))  # ~40 progress lines
    start = time.monotonic()
    index = 1
    while (due := start + index * plan.sample) <= start + plan.duration + 1e-6:
        time.sleep(max(0.0, due - time.monotonic()))
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError(f"the server died:\n{server.log_tail()}")
        try:
            probe.maybe_vacuum()
            figures = probe.sample()
        except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL restarted: skip one
            log(began, f"sample skipped: {type(exc).__name__}: {exc}")
            index += 1
            continue
        row = {"t": round(time.monotonic() - start, 1), "rss_mb": _rss_mb(server), **figures}
        samples.append(row)
        if len(samples) % every == 0:
            log(began, _progress(row, probe.size_metric))
        index += 1
    if load.poll() is not None and load.returncode != 0:
        raise RuntimeError(f"the load process failed with {load.returncode}")
    return samples


def _rss_mb(server: Server) -> float:
    return server.memory_kb()["rss_kb"] / 1024


def _progress(row: dict[str, float], size_metric: str) -> str:
    return (
        f"RSS {row['rss_mb']:.1f} MB, {size_metric} {row[size_metric]:.2f}, "
        f"tasks {row['tasks']:.0f}, logs {row['logs']:.0f}, pending {row['pending']:.0f}"
    )


def print_series(samples: list[dict[str, float]], columns: list[str], rows: int = 12) -> None:
    """A table of ``rows`` evenly spaced samples."""
    step = max(1, len(samples) // rows)
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    header = ["t (s)", *columns]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in picked:
        cells = [f"{row['t']:.0f}", *(_fmt(row[c]) for c in columns)]
        print("| " + " | ".join(cells) + " |")


def print_verdicts(verdicts: list[Verdict]) -> None:
    print("| figure | median, middle third | median, last third | change | tolerance | |")
    print("|---|---:|---:|---:|---|---|")
    for v in verdicts:
        print(
            f"| {v.metric} | {_fmt(v.middle)} | {_fmt(v.last)} | {v.growth:+.2f} "
            f"| {v.tolerance} | {'flat' if v.flat else 'GROWING'} |"
        )


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 or value == int(value) else f"{value:.2f}"


def run(args: argparse.Namespace) -> int:
    """One soak run; the exit status."""
    if args.mixed:
        print("--mixed runs as python -m bench.soak_mixed (bench/soak --mixed does)")
        return 2
    plan = Plan.from_args(args)
    began = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="taskflow-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.database == "sqlite":
        path = work / "soak.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        url = args.pg_url
        prepare_postgres(url)
    log(
        began,
        f"soak on {args.database} for {plan.duration:g} s: {plan.rate:g} requests/s, "
        f"keep {plan.keep:g} s, retention every {plan.retention_interval:g} s, "
        f"sample every {plan.sample:g} s; work folder {work}",
    )
    server = Server(
        "soak",
        url,
        work / "server.log",
        app="bench.soak:app",
        env={
            "SOAK_DB": url,
            "SOAK_KEEP": str(plan.keep),
            "SOAK_RETENTION_INTERVAL": str(plan.retention_interval),
        },
    )
    server.start()
    probe: SqliteProbe | PgProbe = (
        SqliteProbe(work / "soak.db") if args.database == "sqlite" else pg_probe(args, plan)
    )
    if isinstance(probe, PgProbe):
        log(began, vacuum_note(probe))
    load = start_load(server.port, plan)
    try:
        samples = sample_loop(server, probe, load, plan, began)
        out, _ = load.communicate(timeout=120)
        driven = json.loads(out)
        stats = server.get("/soak/stats")
        checks = probe.final_checks()
        checks["vacuum"] = (
            f"{vacuum_note(probe)} ({probe.vacuums} runs)"
            if isinstance(probe, PgProbe)
            else "not needed (SQLite reuses freed pages)"
        )
        checked_at = datetime.now(UTC)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(10)
        server.stop(timeout=60)
        probe.close()
    return report(args, plan, samples, driven, stats, checks, checked_at, probe.size_metric)


def report(
    args: argparse.Namespace,
    plan: Plan,
    samples: list[dict[str, float]],
    driven: dict[str, Any],
    stats: dict[str, Any],
    checks: dict[str, Any],
    checked_at: datetime,
    size_metric: str,
) -> int:
    """Print the tables and the verdict; the exit status."""
    sizes = (
        ["rss_mb", "live_mb", "free_mb", "file_mb", "wal_mb"]
        if size_metric == "live_mb"
        else ["rss_mb", "total_mb", "tasks_mb", "logs_mb", "dead_rows"]
    )
    print()
    print_series(samples, [*sizes, "tasks", "logs", "pending"])
    verdicts = judge(samples, ["rss_mb", size_metric, "tasks", "logs"])
    print()
    print_verdicts(verdicts)
    oldest = checks["oldest_finished"]
    age = (checked_at - oldest).total_seconds() if oldest is not None else 0.0
    age_limit = plan.keep + 2 * plan.retention_interval + 30
    problems = [
        f"{v.metric} grew by {v.growth:+.2f} (allowed {v.allowed:.2f})"
        for v in verdicts
        if not v.flat
    ]
    if stats["retention_deleted"] <= 0:
        problems.append("retention deleted nothing")
    if checks["orphans"]:
        problems.append(f"{checks['orphans']} log lines or attempts outlived their task")
    if age > age_limit:
        problems.append(f"a finished task is {age:.0f} s old (keep {plan.keep:g} s)")
    if driven["ok"] == 0 or driven["errors"] + driven["failed"] > 0.01 * driven["sent"]:
        problems.append(f"the load was not served: {driven}")
    print()
    print(
        f"load: {driven['ok']} of {driven['sent']} requests answered 200 "
        f"({driven['errors']} errors, {driven['skipped']} ticks skipped); "
        f"retention: {stats['retention_deleted']} tasks deleted in "
        f"{stats['retention_passes']} passes; oldest finished task {age:.0f} s old "
        f"(limit {age_limit:g} s); orphaned log lines/attempts: {checks['orphans']}"
    )
    print(f"vacuum: {checks['vacuum']}")
    print("verdict: " + ("FLAT" if not problems else "FAILED: " + "; ".join(problems)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "database": args.database,
                    "plan": plan.__dict__,
                    "samples": samples,
                    "verdicts": [{**v.__dict__, "flat": v.flat} for v in verdicts],
                    "load": driven,
                    "retention": stats,
                    "orphans": checks["orphans"],
                    "vacuum": checks["vacuum"],
                    "oldest_finished_age_s": age,
                    "problems": problems,
                },
                indent=2,
            )
        )
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    """Entry point (``drive '<json>'`` runs the load process)."""
    if argv[:1] == ["drive"]:
        spec = json.loads(argv[1])
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print(json.dumps(asyncio.run(drive(**spec))))
        return 0
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
