"""Dashboard: how long every page, htmx fragment and JSON list of ``TaskAdmin`` takes on
a big database (SQLite file and PostgreSQL).

Both databases are migrated with taskflow's Alembic history, then filled in parallel with
bulk SQL (:mod:`bench.dashboard_data`: tasks, log lines, attempts, schedules, instances).
For each database a real uvicorn server runs :mod:`bench.dashboard_app` (``TaskAdmin``
with a login); the harness logs in once and requests each URL of
:func:`bench.dashboard_pages.pages` on one keep-alive connection: once right after the
server started (cold: nothing cached in the app yet), then ``dashboard_repeats`` times;
the figure is the median of those repeats. A table row is one route (a page, fragment or
JSON endpoint); it shows the slowest of the URLs that exercise that route with different
filters, and every URL is listed in the scenario's details.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import databases
from bench.context import Context, running
from bench.dashboard_data import (
    FUNCTIONS,
    SCHEDULES,
    Dataset,
    Seeded,
    index_text,
    migrate_postgres,
    migrate_sqlite,
    seed_postgres,
    seed_sqlite,
)
from bench.dashboard_pages import (
    PASSWORD,
    UNMEASURED,
    USER,
    Client,
    Page,
    admin_get_routes,
    pages,
)
from bench.results import row, scenario, target
from bench.server import Server
from bench.stats import rounded

GOAL_MS = 100.0
APP = "bench.dashboard_app:app"

# What fastapi-taskflow 0.12.1 offers for each route (it has a dashboard, but it keeps
# every task in memory: it loads the whole snapshot table at startup and re-reads it
# every 5 s for its lists, so none of it is usable with a million stored tasks).
_IN_MEMORY = "n/a at this scale: {what}, from every task kept in memory"
FASTAPI_TASKFLOW = {
    "Overview page": _IN_MEMORY.format(what="a page shell filled by an SSE stream of all tasks"),
    "Overview live fragment": _IN_MEMORY.format(what="/dashboard/metrics counts"),
    "Runs page": _IN_MEMORY.format(what="/dashboard/tasks renders all tasks, no server filters"),
    "JSON task list": _IN_MEMORY.format(what="GET /tasks returns all tasks, no filters or pages"),
    "JSON metrics": _IN_MEMORY.format(what="GET /tasks/metrics"),
    "JSON task": _IN_MEMORY.format(what="GET /tasks/{id}"),
    "JSON audit": "n/a (its audit log is kept in memory, lost on restart)",
}
NO_SUCH_PAGE = "n/a (no such page)"


def run(ctx: Context) -> dict[str, Any]:
    """Seed both databases, then time every page on each."""
    settings = ctx.settings
    dataset = Dataset(
        tasks=settings.dashboard_tasks,
        logs=settings.dashboard_logs,
        big_log_lines=settings.dashboard_big_log_lines,
    )
    path = ctx.sqlite("dashboard")
    migrate_sqlite(path)
    jobs: dict[str, Any] = {"SQLite": (seed_sqlite, path)}
    if ctx.pg_url is not None:
        databases.reset_pg(ctx.pg_url)
        migrate_postgres(ctx.pg_url)
        jobs["PostgreSQL"] = (seed_postgres, ctx.pg_url)
    measured: dict[str, list[dict[str, Any]]] = {}
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {
                name: pool.submit(seed, target_db, dataset, ctx.log)
                for name, (seed, target_db) in jobs.items()
            }
            seeded = {name: future.result() for name, future in futures.items()}
        upgraded = index_text(
            {name: str(target_db) for name, (_, target_db) in jobs.items()}, ctx.log
        )
        for name, seconds in upgraded.items():
            seeded[name].seconds["text search index (upgrade to 0006)"] = seconds
        seed_wall = time.monotonic() - began
        ctx.log(f"dashboard: seeded {', '.join(seeded)} in {seed_wall:.1f}s (in parallel)")
        for name, (_, database) in jobs.items():
            measured[name] = measure(ctx, name, str(database), seeded[name], dataset.big_log_lines)
    finally:
        databases.fresh_sqlite(path)  # 2 GB at full size: do not leave it behind
        if ctx.pg_url is not None:
            databases.reset_pg(ctx.pg_url)
    routes = admin_get_routes()
    covered = {entry["route"] for entries in measured.values() for entry in entries}
    missing = sorted(routes - covered - set(UNMEASURED))
    failures = [
        f"{entry['database']} {entry['path']}: HTTP {entry['status']}"
        for entries in measured.values()
        for entry in entries
        if entry["status"] != 200
    ]
    if failures:
        raise RuntimeError("dashboard pages failed: " + "; ".join(failures[:5]))
    return scenario(
        f"Dashboard ({dataset.tasks:,} tasks, {dataset.logs:,} log lines)",
        _setup(ctx, dataset, seeded, seed_wall, missing),
        _rows(measured),
        {
            "pages": [entry for entries in measured.values() for entry in entries],
            "seed": {
                name: {
                    "seconds": info.seconds,
                    "cpu_seconds": info.cpu_seconds,
                    "total_seconds": info.total_seconds,
                    "tasks": info.tasks,
                    "logs": info.logs,
                    "attempts": info.attempts,
                    "schedules": info.schedules,
                    "instances": info.instances,
                }
                for name, info in seeded.items()
            },
            "routes_not_measured": missing,
            "target": {"median_ms": GOAL_MS},
        },
    )


def measure(
    ctx: Context, name: str, database: str, seeded: Seeded, big_lines: int
) -> list[dict[str, Any]]:
    """Start the dashboard app on ``database``, log in, and time every page."""
    repeats = ctx.settings.dashboard_repeats
    server = Server(
        "taskflow", database, ctx.work / f"dashboard-{name.lower()}.log", env={}, app=APP
    )
    results = []
    with running(server):
        client = Client(server.port, USER, PASSWORD)
        try:
            for page in pages(seeded.samples, big_lines):
                results.append(_time_page(client, page, name, repeats))
        finally:
            client.close()
    slow = [r for r in results if r["median_ms"] > GOAL_MS]
    ctx.log(
        f"dashboard {name}: {len(results)} URLs, {len(slow)} over {GOAL_MS:g} ms"
        + "".join(f"\n    {r['median_ms']:8.1f} ms  {r['label']} {r['variant']}" for r in slow)
    )
    return results


def _time_page(client: Client, page: Page, database: str, repeats: int) -> dict[str, Any]:
    status, size, first = client.get(page.path)
    times = []
    for _ in range(repeats):
        again, size, elapsed = client.get(page.path)
        status = again if status == 200 else status  # keep the first failure
        times.append(elapsed)
    return {
        "database": database,
        "route": page.route,
        "label": page.label,
        "variant": page.variant,
        "path": page.path,
        "status": status,
        "bytes": size,
        "first_ms": rounded(first, 1),
        "median_ms": rounded(statistics.median(times) if times else first, 1),
        "max_ms": rounded(max(times) if times else first, 1),
    }


def _rows(measured: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for database, entries in measured.items():
        labels: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            labels.setdefault(entry["label"], []).append(entry)
        for label, group in labels.items():
            worst = max(group, key=lambda entry: entry["median_ms"])
            value = worst["median_ms"]
            note = f"first {worst['first_ms']:,.0f}"
            what = f"{database} {label} median (ms)"
            if len(group) > 1:
                slowest = worst["variant"] or "no filter"
                note += f"; slowest of {len(group)} URLs: {slowest}"
                what += f", slowest URL: {slowest}"
            rows.append(
                row(
                    f"{database}: {label} (`{group[0]['route']}`), median ms",
                    "ms",
                    {"taskflow": value},
                    {
                        "plain": "n/a (no dashboard)",
                        "fastapi_taskflow": FASTAPI_TASKFLOW.get(label, NO_SUCH_PAGE),
                        "taskflow": note,
                    },
                    target(
                        what,
                        value,
                        f"≤ {GOAL_MS:g} ms",
                        value <= GOAL_MS,
                    ),
                )
            )
    return rows


def _setup(
    ctx: Context,
    dataset: Dataset,
    seeded: dict[str, Seeded],
    seed_wall: float,
    missing: list[str],
) -> dict[str, Any]:
    setup: dict[str, Any] = {
        "databases": "SQLite file (WAL, synchronous=FULL; no ANALYZE, as taskflow never "
        "runs it); PostgreSQL (local, default settings; VACUUM ANALYZE after the load, as "
        "autovacuum would do)"
        if ctx.pg_url is not None
        else "SQLite file (WAL, synchronous=FULL); PostgreSQL skipped: no server",
        "dataset": f"{dataset.tasks:,} tasks created over {dataset.days:g} days up to now, "
        f"{len(FUNCTIONS)} functions on 5 queues; ~84 % success, 6 % failed (error, "
        "traceback, up to 3 attempts), 2 % cancelled, 1 % interrupted, a pending backlog "
        "and running tasks among the newest 1 %; tags, idempotency keys, priorities, "
        f"retries; {len(SCHEDULES)} schedules (static and dynamic) with their runs; "
        f"~5 log lines per started task plus 3 tasks with {dataset.big_log_lines:,} lines",
        "seed": "bulk INSERT … SELECT (recursive CTE on SQLite, generate_series on "
        "PostgreSQL) into the tables migrated up to 0005_once_run_key, indexes dropped "
        "during the load and created again from taskflow's declarations; then the "
        "upgrade to 0006_text_search indexes the rows' text (FTS5 tables on SQLite, "
        "trigram indexes on PostgreSQL, then ANALYZE); both databases in parallel",
        "seed_wall_seconds": round(seed_wall, 1),
    }
    for name, info in seeded.items():
        key = name.lower()
        setup[f"rows_{key}"] = (
            f"{info.tasks:,} tasks, {info.logs:,} log lines, {info.attempts:,} attempts, "
            f"{info.schedules} schedules, {info.instances} instances"
        )
        cpu = info.cpu_seconds
        setup[f"seed_seconds_{key}"] = (
            f"{info.total_seconds:g} wall, {sum(cpu.values()):.1f} CPU; per phase wall/CPU: "
            + ", ".join(
                f"{phase} {seconds:g}" + (f"/{cpu[phase]:g}" if phase in cpu else "")
                for phase, seconds in info.seconds.items()
            )
            + " (CPU of the seeding thread on SQLite, of the loading backend on PostgreSQL)"
        )
    setup["server"] = (
        "uvicorn, 1 process, bench/dashboard_app.py: TaskAdmin(auth=…, display_func_args=True) "
        "logged in once (session cookie kept); the app serves no queue of the dataset, so "
        "nothing changes"
    )
    setup["measured"] = (
        "time to the last byte of each GET on one keep-alive connection: once right after "
        "the server started (first, cold), then "
        f"{ctx.settings.dashboard_repeats} more; the figure is their median. A row is the "
        "slowest URL of its route; the details list every URL"
    )
    if missing:
        setup["routes_not_measured"] = ", ".join(missing)
    return setup
