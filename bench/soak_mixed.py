"""Mixed soak: two servers on one database, one of them killed with SIGKILL every few
minutes, under mixed load with retention on; nothing acknowledged may be lost, and
memory, database size and enqueue latency must stay flat.

    python -m bench.soak_mixed --minutes 60 [--kill-every 180] [--database ...]

Two uvicorn servers (``A`` and ``B``) serve this module's app (``bench.soak_mixed:app``)
on one database, with retention keeping finished tasks for ``--keep`` seconds and the
TaskAdmin dashboard mounted at ``/tasks``. A separate load process sends ``--rate``
requests a second, alternating between the servers (a request the server cannot take
is sent to the other one, as a load balancer would); each request adds, through
``BackgroundTasks``: plain async tasks, a thread-executor task writing log lines, a
process-executor task, a task that fails once and is retried, one that fails for good
(every tenth request), a keyed task whose idempotency key four requests share, and two
one-second tasks, one re-runnable (``requeue_on_interrupt=True``) and one not, so that a
kill always finds tasks running. An every-second schedule ticks on both servers. The
load process also polls dashboard pages and JSON URLs every ``--dashboard-every``
seconds, and records each enqueue's latency. Every ``--kill-every`` seconds server B
is killed with SIGKILL (its process-pool workers too, if they outlive it) and started
again at once on the same port; A is never killed.

Each task id a 200 answer returned is *acknowledged*: the load process writes it to a
file, and the soak follows it in the database (every sample) until it is seen in a final
state. An acknowledged id that disappears before it was seen final, or is not final
after the drain at the end, is **lost**. Retention cannot explain a disappearance: ids
are checked far more often than ``--keep``. A task that was running on the killed
server may end ``interrupted`` (only functions not declared re-runnable) or run again
(only re-runnable ones, seen as an ``interrupted`` attempt before its final one); both
are counted. Any other outcome than the function's expected one is a problem.

Flatness reuses :func:`bench.soak.judge`: A's RSS (B's is reported per life), the
database's size and rows, and the p99 enqueue latency per sample window; the slope per
hour of each, from a least-squares fit over the judged part (the last two thirds), is
printed as well. Exit status: 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.server import ROOT, Server, _env, free_port
from bench.soak import (
    FINAL,
    KEY_SHARED_BY,
    LOG_LINES,
    PgProbe,
    Plan,
    SqliteProbe,
    Verdict,
    _RetentionCounter,
    chatty,
    doomed,
    flaky,
    judge,
    keyed,
    log,
    parse_args,
    pg_probe,
    plain,
    prepare_postgres,
    print_series,
    print_verdicts,
    vacuum_note,
)

SLOW_SECONDS = 1.0  # how long the two slow tasks run: a kill finds some running
RERUNNABLE = frozenset({"slow_rerunnable"})
EXPECTED = {  # the final status each function reaches when nothing interrupts it
    "plain": "success",
    "chatty": "success",
    "crunch": "success",
    "flaky": "success",
    "doomed": "failed",
    "keyed": "success",
    "slow_rerunnable": "success",
    "slow_once": "success",
}
DASHBOARD_URLS = (
    "/tasks/dashboard",
    "/tasks/dashboard/runs",
    "/tasks/dashboard/failures",
    "/tasks/dashboard/schedules",
    "/tasks/dashboard/instances",
    "/tasks/dashboard/logs",
    "/tasks?limit=50",
    "/tasks/metrics",
    "/tasks/stats/series",
    "/tasks/schedules",
    "/tasks/queues",
)

# ====================================================================================
# The app under test (both servers import ``bench.soak_mixed:app``); plain, chatty,
# flaky, doomed and keyed are the plain soak's tasks
# ====================================================================================


def crunch(n: int) -> int:
    """A CPU task on the process executor."""
    return sum(k * k for k in range(n))


async def slow_rerunnable(seconds: float) -> str:
    """Runs ``seconds``; safe to run again if its process dies."""
    await asyncio.sleep(seconds)
    return "done"


async def slow_once(seconds: float) -> str:
    """Runs ``seconds``; ends ``interrupted`` if its process dies."""
    await asyncio.sleep(seconds)
    return "done"


async def tick() -> None:
    """The every-second schedule."""


def build_app() -> Any:
    """The mixed soak app, configured from ``SOAK_*`` environment variables."""
    import logging

    from fastapi import Depends, FastAPI

    from taskflow import TaskManager
    from taskflow.admin import TaskAdmin

    keep = float(os.environ["SOAK_KEEP"])
    manager = TaskManager(
        database_url=os.environ["SOAK_DB"],
        auto_upgrade=True,
        retention_days=keep / 86400,
        retention_interval=float(os.environ["SOAK_RETENTION_INTERVAL"]),
        max_process_workers=2,
    )
    manager.task()(plain)
    manager.task(executor="thread")(chatty)
    manager.task(executor="process")(crunch)
    manager.task(retries=1, delay=0.2)(flaky)
    manager.task(retries=1, delay=0.2)(doomed)
    manager.task()(keyed)
    manager.task(requeue_on_interrupt=True)(slow_rerunnable)
    manager.task()(slow_once)
    manager.schedule(every=1)(tick)
    counter = _RetentionCounter()
    taskflow_logger = logging.getLogger("taskflow")
    taskflow_logger.addHandler(counter)
    taskflow_logger.setLevel(logging.INFO)
    app = FastAPI()
    TaskAdmin(app, manager)  # mounts the dashboard and runs the manager with the app

    @app.post("/soak/mix")
    async def mix(i: int, tasks: Any = Depends(manager.get_tasks)) -> dict[str, list[list[str]]]:
        added: list[tuple[str, str | None]] = [
            ("plain", tasks.add_task(plain, 0)),
            ("plain", tasks.add_task(plain, 1)),
            ("chatty", tasks.add_task(chatty, LOG_LINES)),
            ("crunch", tasks.add_task(crunch, 2000)),
            ("slow_rerunnable", tasks.add_task(slow_rerunnable, SLOW_SECONDS)),
            ("slow_once", tasks.add_task(slow_once, SLOW_SECONDS)),
        ]
        if i % 3 == 0:
            added.append(("flaky", tasks.add_task(flaky, i)))
        if i % 10 == 0:
            added.append(("doomed", tasks.add_task(doomed, i)))
        key = f"key-{i // KEY_SHARED_BY}"
        added.append(("keyed", tasks.add_task(keyed, key, idempotency_key=key)))
        return {"tasks": [[task_id, func] for func, task_id in added if task_id]}

    @app.get("/soak/stats")
    async def stats() -> dict[str, Any]:
        return {"retention_deleted": counter.deleted, "retention_passes": counter.passes}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


_APP: Any = None


def __getattr__(name: str) -> Any:
    """``app`` is built on first access (process-pool workers import this module too)."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = build_app()
        return _APP
    raise AttributeError(name)


# ====================================================================================
# The load process: ``python -m bench.soak_mixed drive '<json>'``
# ====================================================================================

MAX_IN_FLIGHT = 16


async def drive(
    ports: list[int], rate: float, duration: float, window: float, dashboard: float, acked: str
) -> dict[str, Any]:
    """Send ``POST /soak/mix?i=N`` ``rate`` times a second for ``duration`` seconds,
    alternating between ``ports`` (open loop, up to ``MAX_IN_FLIGHT`` outstanding); a
    request one server cannot take goes to the other. Each acknowledged task is
    appended to ``acked`` as ``<id> <function>``. Every ``dashboard`` seconds one
    dashboard URL is fetched (in turn, from alternating servers). Returns counts and the
    p99 enqueue latency of each ``window`` seconds."""
    import httpx

    counts = {"sent": 0, "ok": 0, "failed": 0, "errors": 0, "skipped": 0, "failover": 0}
    pages = {"ok": 0, "errors": 0, "5xx": 0}
    latencies: list[tuple[float, float]] = []
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    out = open(acked, "a", buffering=1)  # noqa: SIM115 - closed below
    began = time.monotonic()

    async def post(client: httpx.AsyncClient, port: int, index: int) -> httpx.Response:
        return await client.post(f"http://127.0.0.1:{port}/soak/mix?i={index}")

    async def one(client: httpx.AsyncClient, index: int) -> None:
        port = ports[index % len(ports)]
        started = time.monotonic()
        try:
            try:
                response = await post(client, port, index)
            except httpx.TransportError:
                counts["failover"] += 1
                started = time.monotonic()
                response = await post(client, ports[(index + 1) % len(ports)], index)
            if response.status_code == 200:
                latencies.append((started - began, time.monotonic() - started))
                counts["ok"] += 1
                out.write("".join(f"{tid} {func}\n" for tid, func in response.json()["tasks"]))
            else:
                counts["failed"] += 1
        except httpx.HTTPError:
            counts["errors"] += 1
        finally:
            slots.release()

    async def poll_dashboard(client: httpx.AsyncClient) -> None:
        turn = 0
        while time.monotonic() - began < duration:
            await asyncio.sleep(dashboard)
            url = DASHBOARD_URLS[turn % len(DASHBOARD_URLS)]
            port = ports[(turn // len(DASHBOARD_URLS)) % len(ports)]
            turn += 1
            try:
                response = await client.get(f"http://127.0.0.1:{port}{url}")
                pages["5xx" if response.status_code >= 500 else "ok"] += 1
            except httpx.HTTPError:
                pages["errors"] += 1  # the killed server, while it restarts

    pending: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(timeout=30.0) as client:
        poller = asyncio.create_task(poll_dashboard(client))
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
        poller.cancel()
    out.close()
    return {
        **counts,
        "dashboard": pages,
        "windows": p99_windows(latencies, window, duration),
        "began": began,
        "window": window,
        "seconds": round(time.monotonic() - began, 1),
    }


def p99_windows(
    latencies: list[tuple[float, float]], window: float, duration: float
) -> list[dict[str, float]]:
    """The p99 latency (ms) of the enqueues started in each ``window`` seconds (windows
    with fewer than 5 enqueues are left out)."""
    buckets: dict[int, list[float]] = {}
    for at, seconds in latencies:
        buckets.setdefault(int(at // window), []).append(seconds * 1000)
    rows = []
    for k in range(int(duration // window) + 1):
        values = sorted(buckets.get(k, []))
        if len(values) >= 5:
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
            rows.append({"t": (k + 1) * window, "p99_ms": p99, "n": float(len(values))})
    return rows


# ====================================================================================
# The loss check
# ====================================================================================

TASK_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


@dataclass
class Ledger:
    """Every acknowledged task and what the database showed of it.

    ``outstanding`` ids have not been seen final yet; ``final`` maps the others to the
    status they were seen in; ``vanished`` ids were seen in the database and then
    disappeared before they were seen final (lost); ``reruns`` ids had an interrupted
    attempt before their final one. An id absent at its first look (which comes after
    its answer, so its row must be committed by then) is counted in ``early``, a broken
    promise, and still followed, to tell one stored late from one never stored."""

    funcs: dict[str, str] = field(default_factory=dict)
    outstanding: set[str] = field(default_factory=set)
    final: dict[str, str] = field(default_factory=dict)
    vanished: set[str] = field(default_factory=set)
    reruns: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    early: set[str] = field(default_factory=set)

    def acknowledge(self, task_id: str, func: str) -> None:
        """Record an acknowledged id (a repeated one, for a shared key, is ignored)."""
        if task_id not in self.funcs:
            self.funcs[task_id] = func
            self.outstanding.add(task_id)

    def observe(self, statuses: dict[str, str], interrupted_attempts: set[str]) -> None:
        """Apply one look at the database: ``statuses`` of the outstanding ids it holds
        (absent ones are not), and which of them had an interrupted attempt."""
        for task_id in list(self.outstanding):
            status = statuses.get(task_id)
            if status is None:
                if task_id in self.seen:
                    self.vanished.add(task_id)
                    self.outstanding.discard(task_id)
                else:
                    self.early.add(task_id)
                continue
            self.seen.add(task_id)
            if status in FINAL:
                self.final[task_id] = status
                if task_id in interrupted_attempts and status != "interrupted":
                    self.reruns.add(task_id)
                self.outstanding.discard(task_id)

    def count(self, status: str) -> int:
        return sum(1 for s in self.final.values() if s == status)

    def problems(self) -> list[str]:
        """What breaks the promise: lost tasks, and outcomes no kill explains."""
        found = []
        if self.vanished:
            found.append(
                f"{len(self.vanished)} acknowledged tasks lost (vanished): {_some(self.vanished)}"
            )
        never = self.outstanding - self.seen
        if never:
            found.append(f"{len(never)} acknowledged tasks never stored: {_some(never)}")
        if self.outstanding & self.seen:
            unended = self.outstanding & self.seen
            found.append(f"{len(unended)} acknowledged tasks never ended: {_some(unended)}")
        wrong = sorted(
            task_id
            for task_id, status in self.final.items()
            if status != EXPECTED.get(self.funcs[task_id])
            and not (status == "interrupted" and self.funcs[task_id] not in RERUNNABLE)
        )
        if wrong:
            found.append(
                f"{len(wrong)} tasks ended unexpectedly: "
                + ", ".join(f"{t} {self.funcs[t]} {self.final[t]}" for t in wrong[:5])
            )
        if self.early:
            found.append(
                f"{len(self.early)} acknowledged tasks were not stored yet when first looked "
                f"up (answered before their commit): {_some(self.early)}"
            )
        twice = sorted(t for t in self.reruns if self.funcs[t] not in RERUNNABLE)
        if twice:
            found.append(f"{len(twice)} tasks not declared re-runnable ran again: {_some(twice)}")
        return found


def _some(ids: set[str] | list[str]) -> str:
    return ", ".join(sorted(ids)[:5])


class Follower:
    """Reads new acknowledged ids from the load process's file and looks them up."""

    def __init__(self, path: Path, probe: SqliteProbe | PgProbe) -> None:
        self.path = path
        self.probe = probe
        self.ledger = Ledger()
        self._offset = 0

    def read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as source:
            source.seek(self._offset)
            data = source.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            task_id, func = line.split()
            if TASK_ID.fullmatch(task_id):
                self.ledger.acknowledge(task_id, func)

    def check(self) -> None:
        self.read()
        ids = sorted(self.ledger.outstanding)
        statuses: dict[str, str] = {}
        interrupted: set[str] = set()
        for start in range(0, len(ids), 500):
            listed = ", ".join(f"'{task_id}'" for task_id in ids[start : start + 500])
            rows, attempts = _rows(
                self.probe,
                # An id promised for an idempotency key another process won is an alias
                # of the winner's task (taskflow_task_aliases): it follows that task.
                f"SELECT id, status FROM taskflow_tasks WHERE id IN ({listed}) UNION ALL "
                "SELECT a.alias, t.status FROM taskflow_task_aliases a JOIN taskflow_tasks t "
                f"ON t.id = a.task_id WHERE a.alias IN ({listed})",
                "SELECT DISTINCT task_id FROM taskflow_task_attempts WHERE status = "
                f"'interrupted' AND task_id IN ({listed})",
            )
            statuses.update({str(row[0]): str(row[1]) for row in rows})
            interrupted.update(str(row[0]) for row in attempts)
        self.ledger.observe(statuses, interrupted)


def _rows(probe: SqliteProbe | PgProbe, *sql: str) -> list[Any]:
    if isinstance(probe, SqliteProbe):
        return probe._query(*sql)  # noqa: SLF001 - the probe's own connection
    return probe._fetch(*sql)  # noqa: SLF001


def steady_windows(
    windows: list[dict[str, float]], began: float, kills: list[dict[str, float]], window: float
) -> list[dict[str, float]]:
    """The latency windows that do not overlap a restart of B: from its kill until two
    windows after it answered again (the restarted server is cold). ``began`` is the
    load's start and ``at``/``ready_at`` of each kill are on the same monotonic clock."""
    spans = [(k["at"], k["ready_at"] + 2 * window) for k in kills]
    return [
        w
        for w in windows
        if not any(began + w["t"] - window < end and began + w["t"] > start for start, end in spans)
    ]


def with_floor(verdict: Verdict, floor_ms: float) -> Verdict:
    """``verdict`` with at least ``floor_ms`` of growth allowed."""
    if verdict.allowed >= floor_ms:
        return verdict
    return replace(verdict, allowed=floor_ms, tolerance=f"{verdict.tolerance}, ≥ {floor_ms:g} ms")


# ====================================================================================
# Slopes
# ====================================================================================


def slope_per_hour(samples: list[dict[str, float]], metric: str) -> float:
    """Least-squares slope of ``metric`` against ``t`` (seconds), per hour, over the
    judged part of ``samples`` (all but the first third)."""
    judged = samples[len(samples) // 3 :]
    if len(judged) < 2:
        return 0.0
    ts = [s["t"] for s in judged]
    ys = [s[metric] for s in judged]
    mean_t, mean_y = statistics.fmean(ts), statistics.fmean(ys)
    spread = sum((t - mean_t) ** 2 for t in ts)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys, strict=True)) / spread * 3600


# ====================================================================================
# The run
# ====================================================================================


@dataclass
class Life:
    """One incarnation of server B: when it started and its RSS samples."""

    started: float
    rss: list[float] = field(default_factory=list)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def kill_and_restart(server: Server) -> int:
    """SIGKILL ``server`` (and its pool workers if they outlive it), start it again on
    the same port; how many leftover workers had to be killed."""
    port = server.port
    children = _children(server.pid)
    server.kill()
    leftovers = 0
    deadline = time.monotonic() + 5
    for child in children:
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{child}").exists():
            try:
                os.kill(child, signal.SIGKILL)
                leftovers += 1
            except ProcessLookupError:
                pass
    server.start(port)
    return leftovers


def _rss(server: Server) -> float:
    try:
        return server.memory_kb()["rss_kb"] / 1024
    except (OSError, AssertionError):
        return float("nan")


def run(args: argparse.Namespace) -> int:
    """One mixed soak run; the exit status."""
    plan = Plan.from_args(args)
    kill_every = args.kill_every or 180.0
    began = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="taskflow-soak-mixed-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.database == "sqlite":
        path = work / "soak.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        url = args.pg_url
        prepare_postgres(url)
    acked = work / "acked.txt"
    acked.unlink(missing_ok=True)
    log(
        began,
        f"mixed soak on {args.database} for {plan.duration:g} s: two servers, {plan.rate:g} "
        f"requests/s, kill -9 of B every {kill_every:g} s, keep {plan.keep:g} s, retention "
        f"every {plan.retention_interval:g} s, sample every {plan.sample:g} s; work {work}",
    )
    env = {
        "SOAK_DB": url,
        "SOAK_KEEP": str(plan.keep),
        "SOAK_RETENTION_INTERVAL": str(plan.retention_interval),
    }
    app = "bench.soak_mixed:app"
    server_a = Server("A", url, work / "server-a.log", app=app, env=env)
    server_b = Server("B", url, work / "server-b.log", app=app, env=env)
    server_a.start(free_port())
    server_b.start(free_port())
    probe: SqliteProbe | PgProbe = (
        SqliteProbe(work / "soak.db") if args.database == "sqlite" else pg_probe(args, plan)
    )
    if isinstance(probe, PgProbe):
        log(began, vacuum_note(probe))
    follower = Follower(acked, probe)
    spec = {
        "ports": [server_a.port, server_b.port],
        "rate": plan.rate,
        "duration": plan.duration,
        "window": max(plan.sample, 10 / plan.rate),  # ~10 enqueues or more per window
        "dashboard": args.dashboard_every,
        "acked": str(acked),
    }
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.soak_mixed", "drive", json.dumps(spec)],
        cwd=ROOT,
        env=_env({}),
        stdout=subprocess.PIPE,
    )
    samples: list[dict[str, float]] = []
    lives = [Life(0.0)]
    kills: list[dict[str, float]] = []
    try:
        start = time.monotonic()
        index = 1
        every = max(1, round(plan.duration / plan.sample / 40))
        next_kill = kill_every
        while (due := start + index * plan.sample) <= start + plan.duration + 1e-6:
            time.sleep(max(0.0, due - time.monotonic()))
            index += 1
            now = time.monotonic() - start
            if now >= next_kill:
                next_kill += kill_every
                killed_at = time.monotonic()
                leftovers = kill_and_restart(server_b)
                kills.append(
                    {
                        "t": round(now, 1),
                        "at": killed_at,
                        "ready_at": time.monotonic(),
                        "leftover_workers": float(leftovers),
                    }
                )
                lives.append(Life(round(time.monotonic() - start, 1)))
                log(began, f"killed B with SIGKILL at {now:.0f} s and restarted it")
            for server in (server_a, server_b):
                if server.proc is None or server.proc.poll() is not None:
                    raise RuntimeError(f"server {server.variant} died:\n{server.log_tail()}")
            try:
                probe.maybe_vacuum()
                figures = probe.sample()
                follower.check()
            except Exception as exc:  # noqa: BLE001 - e.g. a busy database: skip one
                log(began, f"sample skipped: {type(exc).__name__}: {exc}")
                continue
            row = {
                "t": round(time.monotonic() - start, 1),
                "rss_mb": _rss(server_a),
                "rss_b_mb": _rss(server_b),
                **figures,
            }
            lives[-1].rss.append(row["rss_b_mb"])
            samples.append(row)
            if len(samples) % every == 0:
                log(
                    began,
                    f"RSS A {row['rss_mb']:.1f} MB, B {row['rss_b_mb']:.1f} MB, "
                    f"{probe.size_metric} {row[probe.size_metric]:.2f}, tasks "
                    f"{row['tasks']:.0f}, acknowledged {len(follower.ledger.funcs)}, "
                    f"outstanding {len(follower.ledger.outstanding)}",
                )
        out, _ = load.communicate(timeout=180)
        driven = json.loads(out)
        drain_deadline = time.monotonic() + 180
        while True:
            follower.check()
            if not follower.ledger.outstanding or time.monotonic() > drain_deadline:
                break
            time.sleep(0.5)
        stats = server_a.get("/soak/stats")
        stats_b = server_b.get("/soak/stats")
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
        server_a.stop(timeout=60)
        server_b.stop(timeout=60)
        probe.close()
    deleted = stats["retention_deleted"] + stats_b["retention_deleted"]
    return report(
        args,
        plan,
        samples,
        driven,
        follower.ledger,
        lives,
        kills,
        deleted,
        checks,
        checked_at,
        probe.size_metric,
    )


def report(
    args: argparse.Namespace,
    plan: Plan,
    samples: list[dict[str, float]],
    driven: dict[str, Any],
    ledger: Ledger,
    lives: list[Life],
    kills: list[dict[str, float]],
    deleted: int,
    checks: dict[str, Any],
    checked_at: datetime,
    size_metric: str,
) -> int:
    """Print the tables, slopes and verdict; the exit status."""
    print()
    print_series(samples, ["rss_mb", "rss_b_mb", size_metric, "tasks", "logs", "pending"])
    windows = steady_windows(driven["windows"], driven["began"], kills, driven["window"])
    verdicts = judge(samples, ["rss_mb", size_metric, "tasks", "logs"])
    verdicts.append(with_floor(judge(windows, ["p99_ms"])[0], args.p99_floor_ms))
    print()
    print_verdicts(verdicts)
    slopes = {
        "rss_mb (A)": slope_per_hour(samples, "rss_mb"),
        size_metric: slope_per_hour(samples, size_metric),
        "p99_ms": slope_per_hour(windows, "p99_ms"),
    }
    print()
    print(
        "slopes per hour (least squares over the last two thirds): "
        + ", ".join(f"{name} {value:+.2f}" for name, value in slopes.items())
    )
    print(
        f"p99 latency judged on {len(windows)} of {len(driven['windows'])} windows (the "
        "others overlap a restart of B)"
    )
    print(
        "server B per life (RSS first → last sample, MB): "
        + "; ".join(
            f"from {life.started:.0f} s: {life.rss[0]:.1f} → {life.rss[-1]:.1f}"
            for life in lives
            if life.rss
        )
    )
    oldest = checks["oldest_finished"]
    age = (checked_at - oldest).total_seconds() if oldest is not None else 0.0
    age_limit = plan.keep + 2 * plan.retention_interval + 30
    problems = [
        f"{v.metric} grew by {v.growth:+.2f} (allowed {v.allowed:.2f})"
        for v in verdicts
        if not v.flat
    ]
    problems += ledger.problems()
    if not kills:
        problems.append("no server was killed (run longer than --kill-every)")
    if deleted <= 0:
        problems.append("retention deleted nothing")
    if checks["orphans"]:
        problems.append(f"{checks['orphans']} log lines or attempts outlived their task")
    if age > age_limit:
        problems.append(f"a finished task is {age:.0f} s old (keep {plan.keep:g} s)")
    if driven["ok"] == 0 or driven["errors"] + driven["failed"] > 0.01 * driven["sent"]:
        problems.append(f"the load was not served: {driven | {'windows': len(windows)}}")
    pages = driven["dashboard"]
    if pages["5xx"] or pages["ok"] == 0:
        problems.append(f"the dashboard failed: {pages}")
    interrupted = ledger.count("interrupted")
    print(
        f"load: {driven['ok']} of {driven['sent']} requests answered 200 ({driven['errors']} "
        f"errors, {driven['failover']} sent to the other server, {driven['skipped']} ticks "
        f"skipped); dashboard: {pages['ok']} answers, {pages['5xx']} 5xx, {pages['errors']} "
        f"refused while B restarted"
    )
    print(
        f"kills: {len(kills)} (leftover pool workers killed: "
        f"{sum(k['leftover_workers'] for k in kills):.0f}); acknowledged tasks: "
        f"{len(ledger.funcs)}, ended: {len(ledger.final)}, lost: "
        f"{len(ledger.vanished) + len(ledger.outstanding)}, interrupted: {interrupted}, "
        f"ran again: {len(ledger.reruns)}, answered before their task was stored: "
        f"{len(ledger.early)}"
    )
    print(
        f"retention: {deleted} tasks deleted; oldest finished task {age:.0f} s old (limit "
        f"{age_limit:g} s); orphaned log lines/attempts: {checks['orphans']}"
    )
    print(f"vacuum: {checks['vacuum']}")
    print(
        "verdict: " + ("FLAT, NOTHING LOST" if not problems else "FAILED: " + "; ".join(problems))
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "database": args.database,
                    "mixed": True,
                    "plan": plan.__dict__,
                    "samples": samples,
                    "windows": windows,
                    "verdicts": [{**v.__dict__, "flat": v.flat} for v in verdicts],
                    "slopes_per_hour": slopes,
                    "kills": kills,
                    "lives": [life.__dict__ for life in lives],
                    "load": {k: v for k, v in driven.items() if k != "windows"},
                    "tasks": {
                        "acknowledged": len(ledger.funcs),
                        "ended": len(ledger.final),
                        "lost": sorted(ledger.vanished | ledger.outstanding),
                        "interrupted": interrupted,
                        "ran_again": len(ledger.reruns),
                        "answered_before_stored": sorted(
                            {ledger.funcs[task_id] for task_id in ledger.early}
                        ),
                    },
                    "retention_deleted": deleted,
                    "orphans": checks["orphans"],
                    "oldest_finished_age_s": age,
                    "problems": problems,
                },
                indent=2,
            )
        )
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    """Entry point: the soak's options with ``--mixed`` implied (``drive '<json>'``
    runs the load process)."""
    if argv[:1] == ["drive"]:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print(json.dumps(asyncio.run(drive(**json.loads(argv[1])))))
        return 0
    args = parse_args(argv)
    args.mixed = True
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
