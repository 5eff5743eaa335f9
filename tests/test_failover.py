"""Failover to a promoted replica, with real processes: two PostgreSQL servers of the
test's own (a primary and its streaming replica), two uvicorn servers and a standalone
``taskflow worker`` connected through one multi-host URL
(``?host=primary&host=replica&target_session_attrs=read-write``), HTTP enqueues from
client threads and a schedule firing every second.

The replica first falls behind: its WAL sender on the primary is stopped (SIGSTOP), as a
slow network or a busy standby would. Then the primary dies (``kill -9`` of every one of
its processes, as when its machine fails), nothing accepts writes for a moment, and the
replica is promoted (``pg_ctl promote``). taskflow finds the new primary by itself.

- With synchronous replication (``synchronous_standby_names``), a commit waits for the
  replica, so while it lags nothing is acknowledged; no acknowledged task is lost, no
  schedule slot fires twice and no task runs twice.
- With asynchronous replication, the primary acknowledges what the replica never got:
  the test measures what was lost, and checks that it is only tasks acknowledged while
  the replica lagged, just before the primary died.

Both check that while no primary answers, enqueues get 503 with ``Retry-After`` and a
message saying the database is unavailable (never a 500 or a hang), and that the same
processes carry on afterwards without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from taskflow import ConfigurationError
from taskflow._store import migrate
from taskflow._store.database import Database as Store
from taskflow._store.engine import mask, normalize_url
from taskflow._store.outbox import check_same_database
from taskflow.errors import DatabaseUnavailable
from tests.apps.web import RUN_LOG_ENV, SCHEDULE_EVERY_ENV, SCHEDULE_NAME
from tests.pg_pair import PgPair, unavailable_reason
from tests.servers import ROOT, Answer, Database, Load, Server, poll, read_runs
from tests.test_cluster import slot_rows
from tests.test_outages import check_answers, check_same_process_serves, resumed, whoami

TASK_SECONDS = 0.3  # each counted task runs this long: the failover finds some running
ORPHAN_AGE = 3.0  # seconds (the library's default is 120)
LAG_ACKNOWLEDGED = 30  # async: tasks acknowledged while the replica lags, before the kill


@pytest.fixture
def pair_factory() -> Iterator[Callable[..., PgPair]]:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the failover tests need PostgreSQL's server binaries: {reason}")
        pytest.skip(reason)
    made: list[PgPair] = []

    def make(*, synchronous: bool) -> PgPair:
        pair = PgPair(synchronous=synchronous)
        made.append(pair)
        return pair.start()

    yield make
    for pair in made:
        print(f"===== primary =====\n{pair.primary.log()}\n===== replica =====")
        print(pair.replica.log())
        pair.close()


class Worker:
    """``taskflow worker tests.apps.web:task_manager``: the web app's manager without
    a web server (it runs the same tasks and fires the same schedule)."""

    def __init__(self, url: str, log_dir: Path, env: dict[str, str]) -> None:
        self.log_path = log_dir / "worker.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskflow.cli", "worker", "tests.apps.web:task_manager"],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "TASKFLOW_SERVE_TEST_APP": "1",
                "TASKFLOW_DATABASE_URL": url,
                "TASKFLOW_INSTANCE_TIMEOUT": "60",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._log.close()


def wal_sender(pair: PgPair) -> int:
    return int(pair.primary.psql("SELECT pid FROM pg_stat_replication"))


def waiting_for_replica(pair: PgPair) -> int:
    """Commits on the primary waiting for the synchronous replica to confirm them."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    return int(pair.primary.psql(sql))


def acknowledged(loads: list[Load]) -> list[str]:
    return [task_id for load in loads for task_id in load.acknowledged()]


def settle(db: Database) -> dict[str, dict[str, Any]]:
    """Wait until no task is pending or running; return every task row by id."""

    def settled() -> dict[str, dict[str, Any]] | None:
        tasks = db.tasks()
        busy = [row for row in tasks.values() if row["status"] in ("pending", "running")]
        return None if busy else tasks

    return poll(settled, timeout=90, what="every task to end", interval=0.5)


def check_slots(db: Database, runs: collections.Counter[str]) -> int:
    """No schedule slot fired twice and no slot's task ran twice; returns slots fired."""
    rows = slot_rows(db)
    doubles = [s for s, n in collections.Counter(r["slot"] for r in rows).items() if n > 1]
    assert not doubles, f"slots fired more than once: {doubles}"
    rerun = [(row["slot"], runs[row["id"]]) for row in rows if runs[row["id"]] > 1]
    assert not rerun, f"slot tasks run more than once: {rerun}"
    return len(rows)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("replication", ["synchronous", "asynchronous"])
def test_failover_to_a_promoted_replica_under_load(replication, pair_factory, tmp_path):
    """Two servers and a worker under load; the replica lags, the primary is killed with
    ``kill -9``, the replica is promoted. Enqueues meanwhile get a clear 503, everything
    resumes by itself through the multi-host URL, and what was acknowledged survives
    (synchronous) or is lost only from the lag just before the crash (asynchronous)."""
    synchronous = replication == "synchronous"
    pair = pair_factory(synchronous=synchronous)
    url = pair.url()
    migrate.upgrade(url)
    run_log = tmp_path / "runs.log"
    env = {
        RUN_LOG_ENV: str(run_log),
        SCHEDULE_EVERY_ENV: "1",
        "TASKFLOW_POOL_SIZE": "4",
        # After an asynchronous failover the database may say an instance owns a task
        # whose claim or outcome it wrote on the lost primary: settle those soon.
        "TASKFLOW_TEST_ORPHAN_AGE": str(ORPHAN_AGE),
    }
    # An instance timeout longer than the failover: no process may declare another dead.
    servers = [
        Server(url, tmp_path, f"s{i}", extra_env=env, instance_timeout=60.0) for i in range(2)
    ]
    worker: Worker | None = None
    db: Database | None = None
    loads: list[Load] = []
    try:
        try:
            for server in servers:
                server.start(wait=False)
            worker = Worker(url, tmp_path, env)
            for server in servers:
                server.wait_ready()
            identities = [whoami(server) for server in servers]
            db = Database(url)
            loads = [Load(server.url, threads=2, seconds=TASK_SECONDS) for server in servers]
            poll(
                lambda: len(acknowledged(loads)) >= 150 and len(slot_rows(db)) >= 2,
                timeout=60,
                what="150 acknowledged tasks and 2 schedule slots",
            )

            # The replica falls behind: the primary sends it nothing more.
            sender = wal_sender(pair)
            os.kill(sender, signal.SIGSTOP)
            lag_began = time.monotonic()
            before_lag = len(acknowledged(loads))
            poll(
                lambda: (
                    waiting_for_replica(pair) > 0
                    or len(acknowledged(loads)) >= before_lag + LAG_ACKNOWLEDGED
                ),
                timeout=60,
                what="commits to wait for the replica, or acknowledgements it never got",
            )
            # The primary's machine fails: every process of the primary dies at once.
            pair.kill_primary()
            down = time.monotonic()
            # Nothing accepts writes: requests are refused, with a reason, until promotion.
            poll(
                lambda: all(
                    any(a.status == 503 and a.sent > down for a in load.answers()) for load in loads
                ),
                timeout=60,
                what="a 503 from each server while no primary answers",
            )
            pair.promote()
            up = time.monotonic()
            for load in loads:
                resumed(load, up)
            poll(
                lambda: len([r for r in slot_rows(db) if r["status"] == "success"]) >= 3,
                timeout=60,
                what="the schedule to fire on the new primary",
            )
        finally:
            answers: list[Answer] = [a for load in loads for a in load.stop(timeout=150)]
            statuses = check_answers(answers, problem="is unavailable")
            assert any(a.status == 503 and down < a.sent < up for a in answers), statuses
            paused = httpx.post(f"{servers[0].url}/schedules/{SCHEDULE_NAME}/pause", timeout=60)
            assert paused.status_code == 200, paused.text
            tasks = settle(db)
            runs = read_runs(run_log)
            acked = acknowledged(loads)
            assert len(set(acked)) == len(acked), "an id was acknowledged twice"
            lost = [task_id for task_id in acked if task_id not in tasks]
            by_task = {t: a for a in answers if a.status == 200 for t in a.body["task_ids"]}
            orphaned = sum(1 for row in tasks.values() if "lost track" in (row["error"] or ""))
            twice = [
                (task_id, row["func_name"], runs[task_id])
                for task_id, row in tasks.items()
                if runs[task_id] > 1 and row["func_name"] != "counted_rerunnable"
            ]
            print(
                f"{replication}: answers {dict(statuses)}, acknowledged {len(acked)}, "
                f"{len(acked) - before_lag} of them since the replica began to lag, lost "
                f"{len(lost)}, stored {len(tasks)}, not re-runnable tasks run twice {len(twice)}, "
                f"settled as lost track of {orphaned}"
            )
            if synchronous:
                assert not lost, f"{len(lost)} acknowledged tasks were lost, e.g. {lost[:3]}"
                assert not twice, f"tasks run twice: {twice[:10]}"
                slots = check_slots(db, runs)
                bad = [
                    (task_id, row["status"], row["attempts"], runs[task_id], row["error"])
                    for task_id, row in tasks.items()
                    if row["status"] != "success" or runs[task_id] != 1
                ]
                assert not bad, f"{len(bad)} tasks did not run exactly once: {bad[:10]}"
            else:
                # Only what the primary acknowledged after the replica stopped receiving.
                early = [t for t in lost if by_task[t].answered < lag_began]
                assert not early, f"tasks acknowledged before the lag were lost: {early[:3]}"
                late = [t for t in lost if by_task[t].sent > down]
                assert not late, f"tasks sent after the failover were lost: {late[:3]}"
                assert len(lost) <= len(acked) - before_lag
                slots = len(slot_rows(db))
            print(f"{slots} schedule slots fired")
            for server, identity in zip(servers, identities, strict=True):
                check_same_process_serves(server, identity, db)
            assert worker is not None and worker.proc.poll() is None, worker.log()[-4000:]
    finally:
        if db is not None:
            db.close()
        for server in servers:
            if server.running():
                server.kill()
            server._reap()
            print(f"===== {server.name} =====\n{server.log(tail=8000)}")
        if worker is not None:
            worker.close()
            print(f"===== worker =====\n{worker.log()[-8000:]}")


@pytest.mark.slow
def test_no_writable_host_is_database_unavailable(pair_factory):
    """No host of the URL accepts writes (a standby, a demoted primary: the moment
    before a promotion): taskflow raises ``DatabaseUnavailable`` saying so, at startup
    and for a write of a store that is open already."""
    pair = pair_factory(synchronous=False)
    standby_only = (
        f"postgresql+asyncpg://postgres@/postgres?host={pair.replica.address}"
        "&target_session_attrs=read-write"
    )

    async def open_standby() -> None:
        store = Store(standby_only)
        try:
            await store.open(auto_upgrade=False)
        finally:
            await store.close()

    with pytest.raises(DatabaseUnavailable, match="none of its hosts accepts writes"):
        asyncio.run(open_standby())

    async def write_when_no_host_accepts_writes() -> None:
        store = Store(pair.url())
        await store.open(auto_upgrade=True)
        try:
            # The primary turns read-only (as a demoted one does); new connections
            # find no read-write host among the two.
            pair.primary.psql("ALTER SYSTEM SET default_transaction_read_only = on")
            pair.primary.psql("SELECT pg_reload_conf()")
            await store.require_engine().dispose()
            async with store.write() as conn:
                await conn.exec_driver_sql("SELECT 1")
        finally:
            await store.close()

    with pytest.raises(DatabaseUnavailable, match="none of its hosts accepts writes"):
        asyncio.run(write_when_no_host_accepts_writes())


def test_a_multi_host_url_is_accepted_masked_and_compared_as_a_set():
    """A multi-host URL keeps its hosts through taskflow's URL handling, hides its
    password, and a session on the same servers (in any order, in either of the two
    spellings) is the same database for ``enqueue(session=...)``; other servers are not."""
    url = (
        "postgresql://app:secret@/tasks?host=db1:5432&host=db2:5433&target_session_attrs=read-write"
    )
    normalized = normalize_url(url)
    assert normalized.drivername == "postgresql+asyncpg"
    assert normalized.query["host"] == ("db1:5432", "db2:5433")
    assert normalized.query["target_session_attrs"] == "read-write"
    assert "secret" not in mask(normalized) and "db2" in mask(normalized)
    check_same_database(
        make_url("postgresql+asyncpg://app@/tasks?host=db2,db1&port=5433,5432"), url
    )
    for other in (
        "postgresql+asyncpg://app@/tasks?host=db1:5432&host=db3:5433",
        "postgresql+asyncpg://app@/tasks?host=db1,db2&port=5433,5432",
        "postgresql+asyncpg://app@db1:5432/tasks",
    ):
        with pytest.raises(ConfigurationError, match="the session is bound to"):
            check_same_database(make_url(other), url)
