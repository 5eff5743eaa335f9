"""A network partition between a process and its PostgreSQL database, made with a TCP
proxy the test controls (``tests/netproxy.py``): packets silently dropped (the proxy
accepts and never answers: no error ever arrives), then connections reset, then the
network heals.

What the tests check:

- waits are bounded: a statement, a ``COMMIT`` and a new connection give up after the
  URL's ``command_timeout`` / ``connect_timeout`` with ``DatabaseUnavailable``; a request
  that enqueues during a 20 s partition is answered 503 (never a 500, never a hang) well
  before the partition ends; afterwards the same server carries on by itself and every
  acknowledged task runs exactly once;
- self-fencing: of two instances, the one cut off from the database stops its running
  tasks before the other takes them over, so no two runs of a task ever overlap.

PostgreSQL only: SQLite is a file, with no network to cut. Holding a partition for a
fixed time is the fault itself; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from taskflow import ConfigurationError, TaskManager
from taskflow._store.database import Database as StoreDatabase
from taskflow._store.engine import PG_TIMEOUTS_DEFAULT, normalize_url, pg_timeouts
from taskflow._store.sql import SQLStore
from taskflow.errors import DatabaseUnavailable
from tests.apps.web import SPAN_LOG_ENV
from tests.netproxy import NetProxy
from tests.servers import Database, Load, Server, poll
from tests.store_support import new_task
from tests.test_outages import (
    check_answers,
    check_every_task_ran_once,
    check_same_process_serves,
    resumed,
    run_log_env,
    whoami,
)
from tests.test_runaway_tasks import process_gone

pytestmark = pytest.mark.slow

PARTITION = 20.0  # seconds a blackholed partition lasts
CONNECT_TIMEOUT, COMMAND_TIMEOUT = 2.0, 3.0  # the servers' bounds, set in their URL
# The longest a request may wait for its answer during the partition: a free pool
# connection (connect + command timeout), a new connection, a statement, plus room for a
# loaded machine. Without bounds requests hang until the partition ends (20 s).
ANSWER_BOUND = 14.0
HANG = 30.0  # a wait this long is a hang (the partition of the store test never ends)


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("a network partition needs a network: PostgreSQL only (SQLite is a file)")
    return db_url


@pytest.fixture
def proxy(pg_url: str) -> Iterator[NetProxy]:
    parsed = make_url(pg_url)
    with NetProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as started:
        yield started


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make servers on any URL; all are killed at teardown and their logs printed."""
    made: list[Server] = []

    def make(url: str, name: str, **options: Any) -> Server:
        server = Server(url, tmp_path, name, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.running():
            server.kill()
        server._reap()
        print(f"===== {server.name} (port {server.port}) =====\n{server.log(tail=20000)}")


def through(proxy: NetProxy, url: str, **query: float) -> str:
    """``url`` reaching the database through ``proxy``, with ``query`` added."""
    parsed = make_url(url).set(host="127.0.0.1", port=proxy.port)
    parsed = parsed.update_query_dict({key: str(value) for key, value in query.items()})
    return parsed.render_as_string(hide_password=False)


# -- the bounds, configured ----------------------------------------------------------------


def test_timeouts_have_defaults_and_refuse_nonsense():
    assert pg_timeouts(normalize_url("postgresql://u@h/db")) == PG_TIMEOUTS_DEFAULT == (10, 30)
    url = normalize_url("postgresql://u@h/db?connect_timeout=2.5&command_timeout=7")
    assert pg_timeouts(url) == (2.5, 7.0)
    assert pg_timeouts(normalize_url("postgresql://u@h/db?timeout=4")) == (
        4.0,
        30.0,
    )  # asyncpg's name
    for bad in ("connect_timeout=0", "command_timeout=soon", "command_timeout=inf"):
        with pytest.raises(ConfigurationError, match="seconds > 0"):
            normalize_url(f"postgresql://u@h/db?{bad}")


def test_instance_timeout_must_leave_room_for_self_fencing():
    """An instance fences itself at instance_timeout - 2 x heartbeat_interval: that must
    be positive, at construction."""
    with pytest.raises(ConfigurationError, match="2 x heartbeat_interval"):
        TaskManager(database_url="sqlite:///x.db", heartbeat_interval=5, instance_timeout=10)
    TaskManager(database_url="sqlite:///x.db", heartbeat_interval=1, instance_timeout=2.5)


@pytest.mark.anyio
async def test_a_hung_statement_commit_and_connect_fail_within_their_timeouts(pg_url, proxy):
    """Blackholed: a statement, a ``COMMIT`` whose reply never arrives, and a new
    connection each raise DatabaseUnavailable after their timeout, not never. The
    ``COMMIT`` the proxy held reaches the server when the network heals (as TCP would
    deliver it): the write then landed whole though the caller was told it failed, which
    at-least-once allows (a task stored that way just runs); never half of it."""
    url = through(proxy, pg_url, connect_timeout=1, command_timeout=1.5)
    store = StoreDatabase(url, pool_size=2)
    await store.open(auto_upgrade=False)
    probe = sa.text("SELECT value FROM taskflow_meta WHERE key = 'partition-probe'")
    try:
        # a statement
        proxy.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="unavailable") as caught:
            async with asyncio.timeout(HANG), store.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        assert time.monotonic() - started < 10, "the statement waited past its bounds"
        assert "did not answer in time" in str(caught.value)
        assert "[SQL" not in str(caught.value)
        proxy.recover()

        # a COMMIT
        started = None
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(HANG), store.write() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO taskflow_meta (key, value, updated_at) "
                        "VALUES ('partition-probe', 'x', now())"
                    )
                )
                proxy.set_mode("blackhole")  # the COMMIT is sent into the partition
                started = time.monotonic()
        assert started is not None and time.monotonic() - started < 10
        proxy.recover()
        async with store.write() as conn:
            assert (await conn.execute(probe)).scalars().all() in ([], ["x"])
            await conn.execute(sa.text("DELETE FROM taskflow_meta WHERE key = 'partition-probe'"))

        # a new connection (the pool's are gone: reset them all)
        proxy.set_mode("drop")
        proxy.set_mode("blackhole")
        await store.require_engine().dispose()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(HANG), store.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        assert time.monotonic() - started < 10
        proxy.recover()
        async with store.read() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        proxy.recover()
        await store.close()


@pytest.mark.anyio
async def test_a_begin_held_by_the_partition_does_not_swallow_later_writes(pg_url, proxy):
    """A ``BEGIN`` (the pool's ping opens one) that timed out in the partition reaches
    the server when it heals, as TCP delivers it: the session is then in a transaction
    the driver no longer tracks, and asyncpg would turn the next transactions on that
    connection into savepoints inside it, reported committed and never committed. The
    connection must not be used again: every write after the heal is visible to
    others, on the engine's connections and on group commit's."""
    url = through(proxy, pg_url, connect_timeout=1, command_timeout=1.5)
    store = StoreDatabase(url, pool_size=1)
    tasks = SQLStore(url)
    direct = StoreDatabase(pg_url)
    for opened in (store, tasks, direct):
        await opened.open(auto_upgrade=False)
    keys = [f"held-begin-{n}" for n in range(3)]
    insert = sa.text("INSERT INTO taskflow_meta (key, value, updated_at) VALUES (:key, 'x', now())")
    try:
        async with store.read() as conn:  # the pool now holds one connection
            await conn.execute(sa.text("SELECT 1"))
        await tasks.insert_task(new_task())  # and group commit holds its own
        proxy.set_mode("blackhole")
        for attempt in (store.write(), store.read()):
            with pytest.raises(DatabaseUnavailable):
                async with asyncio.timeout(HANG), attempt as conn:
                    await conn.execute(sa.text("SELECT 1"))
        with pytest.raises(DatabaseUnavailable):
            async with asyncio.timeout(HANG):
                await tasks.insert_task(new_task())
        proxy.recover()
        for key in keys:
            async with store.write() as conn:
                await conn.execute(insert, {"key": key})
        stored = [await tasks.insert_task(new_task()) for _ in range(3)]
        async with direct.read() as conn:
            found = (
                await conn.execute(
                    sa.text("SELECT key FROM taskflow_meta WHERE key LIKE 'held-begin-%'")
                )
            ).scalars()
            assert sorted(found) == keys
            rows = await conn.execute(
                sa.text("SELECT count(*) FROM taskflow_tasks WHERE id = ANY(:ids)"), {"ids": stored}
            )
            assert rows.scalar() == len(stored)
    finally:
        proxy.recover()
        async with direct.write() as conn:
            await conn.execute(sa.text("DELETE FROM taskflow_meta WHERE key LIKE 'held-begin-%'"))
        for opened in (store, tasks, direct):
            await opened.close()


# -- a partition under load -----------------------------------------------------------------


@pytest.mark.timeout(240)
def test_partition_then_reset_connections_under_load(pg_url, proxy, spawn, tmp_path):
    """A server reaches PostgreSQL through the proxy while clients enqueue (async and
    sync routes). The network is blackholed for 20 s, then every connection is reset for
    a few seconds, then it heals. During the partition requests get 503 "… is
    unavailable" with Retry-After within the bounds (never a 500, never a hang); after
    it the same process carries on by itself, and every acknowledged task (and every
    stored one) ran exactly once."""
    env = run_log_env(tmp_path)
    url = through(proxy, pg_url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    # instance_timeout outlasts the partition: nobody else should take anything over.
    server = spawn(url, "s", extra_env=env, instance_timeout=60.0).start()
    identity = whoami(server)
    db = Database(pg_url)
    load = Load(server.url, threads=3, timeout=90.0)
    try:
        poll(lambda: len(load.acknowledged()) >= 100, timeout=60, what="100 acknowledged")
        proxy.set_mode("blackhole")
        cut = time.monotonic()
        poll(
            lambda: any(a.status == 503 and a.sent > cut for a in load.answers()),
            timeout=PARTITION,
            what="a 503 during the partition",
        )
        time.sleep(max(cut + PARTITION - time.monotonic(), 0))  # the partition itself
        proxy.set_mode("drop")
        dropped = time.monotonic()
        poll(
            lambda: any(a.status == 503 and a.sent > dropped for a in load.answers()),
            timeout=30,
            what="a 503 while connections are reset",
        )
        healed_at = time.monotonic()
        proxy.recover()
        resumed(load, healed_at)
    finally:
        proxy.recover()
        answers = load.stop(timeout=150)
    try:
        statuses = check_answers(answers, problem="is unavailable")
        # Sent and answered while the network was cut: nothing could be acknowledged.
        # (A request in flight at the cut may take up to ANSWER_BOUND, so which requests
        # fall inside is decided by their answers, not by when they were sent.)
        partitioned = [a for a in answers if cut < a.sent and a.answered < cut + PARTITION]
        assert partitioned, "precondition: requests were sent and answered during the partition"
        sent_during = [a for a in answers if cut < a.sent < cut + PARTITION]
        slow = [a for a in sent_during if a.answered - a.sent > ANSWER_BOUND]
        assert not slow, f"{len(slow)} requests hung past {ANSWER_BOUND}s: {slow[:3]}"
        assert all(a.status == 503 for a in partitioned), collections.Counter(
            a.status for a in partitioned
        )
        assert any(a.status == 503 for a in answers if a.sent > dropped), statuses
        stored = check_every_task_ran_once(
            db, Path(env["TASKFLOW_TEST_RUN_LOG"]), load.acknowledged()
        )
        check_same_process_serves(server, identity, db)
    finally:
        db.close()
    print(f"answers {dict(statuses)}, stored {stored}, proxy connections {proxy.accepted}")


# -- self-fencing ---------------------------------------------------------------------------

HEARTBEAT, INSTANCE_TIMEOUT = 1.0, 6.0  # the lease: 6 - 2 x 1 = 4 s
TASK_SECONDS = 15.0


def read_spans(path: Path) -> dict[str, list[tuple[int, float, float | None]]]:
    """Runs per task id from the span log: (pid, start, end or None if still running)."""
    runs: dict[str, list[tuple[int, float, float | None]]] = collections.defaultdict(list)
    open_runs: dict[tuple[str, int], float] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        edge, task_id, pid, moment = line.split()
        if edge == "start":
            open_runs[(task_id, int(pid))] = float(moment)
        else:
            runs[task_id].append((int(pid), open_runs.pop((task_id, int(pid))), float(moment)))
    for (task_id, pid), started in open_runs.items():
        runs[task_id].append((pid, started, None))
    return runs


def overlaps(runs: dict[str, list[tuple[int, float, float | None]]]) -> list[Any]:
    """Pairs of runs of one task that overlapped in time."""
    found = []
    for task_id, spans in runs.items():
        ordered = sorted(spans, key=lambda span: span[1])
        for before, after in zip(ordered, ordered[1:], strict=False):
            if before[2] is None or before[2] > after[1]:
                found.append((task_id, before, after))
    return found


@pytest.mark.timeout(180)
def test_a_partitioned_instance_stops_its_tasks_before_another_takes_them_over(
    pg_url, proxy, spawn, tmp_path
):
    """Instance A reaches PostgreSQL through the proxy, B directly. A runs 15 s
    re-runnable tasks when its network is blackholed. A cannot renew its heartbeat, so
    after its lease (instance_timeout - 2 heartbeats, 4 s) it cancels them; B takes them
    over after instance_timeout (6 s) and runs them again. No two runs of a task overlap
    (A's end before B's start, from a side channel with pids and one clock); when the
    network heals, A finds it was taken over, re-registers and runs new work; every
    acknowledged task ends ``success``."""
    spans = tmp_path / "spans.log"
    env = {SPAN_LOG_ENV: str(spans), "TASKFLOW_POOL_SIZE": "4"}
    options = {"extra_env": env, "heartbeat": HEARTBEAT, "instance_timeout": INSTANCE_TIMEOUT}
    a_url = through(proxy, pg_url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    a, b = spawn(a_url, "a", **options), spawn(pg_url, "b", **options)
    for server in (a, b):
        server.start(wait=False)
    for server in (a, b):
        server.wait_ready()
    db = Database(pg_url)
    try:
        on_a = httpx.post(
            f"{a.url}/spanned", params={"count": 6, "seconds": TASK_SECONDS}, timeout=30
        ).json()["task_ids"]
        on_b = httpx.post(
            f"{b.url}/spanned", params={"count": 2, "seconds": TASK_SECONDS}, timeout=30
        ).json()["task_ids"]

        def started_on(pid: int, task_ids: list[str]) -> bool:
            runs = read_spans(spans)
            return all(any(run[0] == pid for run in runs.get(t, [])) for t in task_ids)

        poll(lambda: started_on(a.pid, on_a), timeout=30, what="A to run its tasks")
        proxy.set_mode("blackhole")
        poll(
            lambda: started_on(b.pid, on_a),
            timeout=60,
            what="B to take over and run A's tasks",
        )
        proxy.recover()

        def ended() -> dict[str, dict[str, Any]] | None:
            tasks = db.tasks()
            return (
                tasks
                if all(row["status"] not in ("pending", "running") for row in tasks.values())
                else None
            )

        tasks = poll(ended, timeout=90, what="every task to end", interval=0.5)
        found = overlaps(read_spans(spans))
        assert not found, f"runs of one task overlapped: {found}"
        statuses = {task_id: tasks[task_id]["status"] for task_id in on_a + on_b}
        assert set(statuses.values()) == {"success"}, statuses
        assert "fenced itself (no heartbeat went through" in a.log(tail=10**8), "no fencing"
        # A carries on by itself: it is registered again and runs new work.
        again = httpx.post(f"{a.url}/spanned", params={"count": 1, "seconds": 0.1}, timeout=30)
        assert again.status_code == 200, again.text
        new_id = again.json()["task_ids"][0]
        poll(
            lambda: db.tasks()[new_id]["status"] == "success",
            timeout=30,
            what="A to run new work",
        )
        registered = {row["id"] for row in db.rows("SELECT id FROM taskflow_instances")}
        assert whoami(a)[1] in registered
        assert "Exception in ASGI application" not in a.log(tail=10**8)
    finally:
        proxy.recover()
        db.close()


@pytest.mark.timeout(180)
def test_a_fenced_instance_not_taken_over_settles_its_own_tasks(pg_url, proxy, spawn, tmp_path):
    """A partition longer than the lease but shorter than instance_timeout: the instance
    stops its tasks, nobody takes them over, and when its heartbeat goes through again it
    settles them itself (re-runnable ones back to the queue) instead of leaving them
    ``running`` until the orphan check, two minutes later. They run again, never two runs
    at once, and end ``success``."""
    spans = tmp_path / "spans.log"
    env = {SPAN_LOG_ENV: str(spans), "TASKFLOW_POOL_SIZE": "4"}
    url = through(proxy, pg_url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    a = spawn(url, "a", extra_env=env, heartbeat=HEARTBEAT, instance_timeout=INSTANCE_TIMEOUT)
    a.start()
    db = Database(pg_url)
    try:
        task_ids = httpx.post(
            f"{a.url}/spanned", params={"count": 4, "seconds": 8.0}, timeout=30
        ).json()["task_ids"]
        poll(lambda: len(read_spans(spans)) == 4, timeout=30, what="A to run its tasks")
        proxy.set_mode("blackhole")
        poll(lambda: "fenced itself" in a.log(tail=10**8), timeout=30, what="A to fence itself")
        proxy.recover()

        def ended() -> dict[str, dict[str, Any]] | None:
            rows = {task_id: db.tasks().get(task_id) for task_id in task_ids}
            done = all(row is not None and row["status"] == "success" for row in rows.values())
            return rows if done else None

        poll(ended, timeout=60, what="every task to run again and succeed", interval=0.5)
        runs = read_spans(spans)
        assert all(len(runs[task_id]) == 2 for task_id in task_ids), runs
        found = overlaps(runs)
        assert not found, f"runs of one task overlapped: {found}"
        assert "was declared dead" not in a.log(tail=10**8), "precondition: not taken over"
    finally:
        proxy.recover()
        db.close()


@pytest.mark.timeout(180)
def test_a_fenced_instance_kills_the_workers_of_its_process_tasks(pg_url, proxy, spawn, tmp_path):
    """A process task (a worker that never looks at ``is_cancelled()``) is running when
    its instance is cut off: at fencing its worker process is killed, while the
    partition lasts, not left running beside a re-run elsewhere. Once back, the instance
    runs the re-runnable task again in a new worker and it succeeds."""
    pids = tmp_path / "pids.txt"
    url = through(proxy, pg_url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    a = spawn(url, "a", heartbeat=HEARTBEAT, instance_timeout=INSTANCE_TIMEOUT).start()
    db = Database(pg_url)
    try:
        task_id = httpx.post(
            f"{a.url}/process-sleep", params={"path": str(pids), "seconds": 12.0}, timeout=30
        ).json()["task_id"]

        def worker_pids() -> list[int]:
            return [int(line) for line in pids.read_text().split()] if pids.exists() else []

        first = poll(worker_pids, timeout=60, what="the process task to start")[0]
        proxy.set_mode("blackhole")
        poll(lambda: "fenced itself" in a.log(tail=10**8), timeout=30, what="A to fence itself")
        poll(lambda: process_gone(first), timeout=15, what="the fenced task's worker to die")
        proxy.recover()
        poll(
            lambda: db.tasks()[task_id]["status"] == "success",
            timeout=60,
            what="the task to run again and succeed",
            interval=0.5,
        )
        assert len(worker_pids()) == 2 and worker_pids()[1] != first, worker_pids()
    finally:
        proxy.recover()
        db.close()
