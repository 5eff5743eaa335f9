"""Real processes: uvicorn serving ``tests/apps/web.py``, killed with SIGKILL, stopped
with SIGTERM, and several of them sharing one database.

Every check reads the database (or asks a server over HTTP); nothing sleeps blindly.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.servers import Database, Server, post, start_all

pytestmark = pytest.mark.slow

FINAL = {"success", "failed", "cancelled", "interrupted"}


def report(server: Server, task_id: str) -> dict:
    response = httpx.get(f"{server.url}/report/{task_id}", timeout=10.0)
    assert response.status_code == 200, (task_id, response.status_code, response.text)
    return response.json()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux's /proc")
def test_kill_9_of_a_server_leaves_no_worker_process_behind(db, spawn, tmp_path):
    """A server killed with SIGKILL cannot stop its children: its process-task worker
    (busy with a task) and the process carrying workers' logs home end with it."""
    server = spawn("a").start()
    pid_file = tmp_path / "worker.pid"
    answer = httpx.post(
        f"{server.url}/process-sleep", params={"path": str(pid_file), "seconds": 120}
    )
    assert answer.status_code == 200, answer.text
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30)
    worker = int(pid_file.read_text().split()[0])
    children = server.children()
    assert worker in children and len(children) >= 2, children  # and the log channel
    server.kill()
    wait_until(lambda: not any(_alive(pid) for pid in children), timeout=30)


# -- 1. SIGKILL: nothing acknowledged is lost, the next process takes over ------------------


def test_kill_9_loses_no_acknowledged_task_and_next_process_takes_over(db, spawn):
    a = spawn("a").start()
    rerun = [post(a.url, "/slow", seconds=5, rerun="true")["task_id"] for _ in range(3)]
    once = [post(a.url, "/slow", seconds=5, rerun="false")["task_id"] for _ in range(3)]
    slow = rerun + once

    # Enqueue batches from three threads and keep going until the kill: requests in
    # flight at that moment fail, every one that was answered counts.
    acknowledged: list[str] = []
    answered = threading.Lock()
    stop = threading.Event()

    def fire() -> None:
        with httpx.Client(base_url=a.url, timeout=10.0) as client:
            while not stop.is_set():
                try:
                    response = client.post("/batch", params={"count": 25})
                except httpx.TransportError:
                    return
                assert response.status_code == 200, response.text
                with answered:
                    acknowledged.extend(response.json()["task_ids"])

    def slow_running() -> bool:
        rows = db.tasks()
        return all(rows.get(t, {}).get("status") == "running" for t in slow)

    with ThreadPoolExecutor(3) as pool:
        firing = [pool.submit(fire) for _ in range(3)]
        wait_until(
            lambda: len(acknowledged) >= 300 and slow_running(),
            timeout=20,
            what="300 acknowledged batch tasks and 6 running slow tasks",
        )
        a.kill()
        stop.set()
        for future in firing:
            future.result()  # a non-200 answer before the kill fails here

    at_kill = db.tasks()
    missing = [t for t in acknowledged if t not in at_kill]
    assert not missing, f"{len(missing)} acknowledged tasks are not in the database"
    assert len(set(acknowledged)) == len(acknowledged) >= 300
    assert {at_kill[t]["status"] for t in slow} == {"running"}, "slow tasks finished too early"
    owners = {at_kill[t]["owner"] for t in slow}
    assert len(owners) == 1 and None not in owners
    instance_a = owners.pop()
    running_adds = {
        t for t, row in at_kill.items() if row["func_name"] == "add" and row["status"] == "running"
    }
    pending_adds = [
        t for t, row in at_kill.items() if row["func_name"] == "add" and row["status"] == "pending"
    ]
    assert pending_adds, "precondition: some acknowledged tasks had not run when A died"

    # B must find A dead by its pid: with a 60 s instance timeout, a heartbeat-based
    # takeover could not happen within this test's deadlines.
    b = spawn("b", instance_timeout=60.0).start()
    wait_until(
        lambda: all(db.tasks()[t]["status"] == "interrupted" for t in once),
        timeout=3,
        what="B to settle A's tasks at once (dead pid)",
    )

    def all_final() -> bool:
        return all(row["status"] in FINAL for row in db.tasks().values())

    wait_until(all_final, timeout=30, what="every task to end")
    final = db.tasks()
    assert set(final) >= set(acknowledged)
    for task_id, row in final.items():
        if row["func_name"] != "add":
            continue
        if task_id in running_adds:  # ran on A when it died; not declared re-runnable
            assert row["status"] == "interrupted", row
            assert instance_a in row["error"], row
        else:
            assert (row["status"], row["attempts"]) == ("success", 1), row
    for task_id in rerun:
        record = report(b, task_id)
        assert (record["status"], record["attempts"], record["result"]) == ("success", 2, "done"), (
            record
        )
    for task_id in once:
        record = report(b, task_id)
        assert (record["status"], record["attempts"]) == ("interrupted", 1), record
        assert f"instance {instance_a}" in record["error"], record
    instances = {row["id"] for row in db.rows("SELECT id FROM taskflow_instances")}
    assert instance_a not in instances
    assert b.running()


# -- 2. two processes race on one idempotency key --------------------------------------------


@pytest.mark.parametrize("route", ["/invoice/7/send", "/async-invoice/7"])
def test_two_processes_racing_on_one_idempotency_key_store_one_task(db, spawn, route):
    servers = start_all([spawn("a"), spawn("b")])
    gate = threading.Barrier(20)

    def send(server: Server) -> str:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            gate.wait(timeout=10)
            response = client.post(route)
        assert response.status_code == 200, response.text
        return response.json()["task_id"]

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(send, [servers[i % 2] for i in range(20)]))

    rows = db.rows("SELECT id, status FROM taskflow_tasks WHERE idempotency_key = 'invoice-7'")
    assert len(rows) == 1, rows
    winner = rows[0]["id"]
    assert db.rows("SELECT count(*) AS n FROM taskflow_tasks")[0]["n"] == 1
    for task_id in set(ids):
        for server in servers:
            assert report(server, task_id)["task_id"] == winner, (task_id, server.name)
    wait_until(
        lambda: report(servers[0], winner)["status"] in FINAL,
        timeout=10,
        what="the invoice task to end",
    )
    record = report(servers[1], winner)
    assert (record["status"], record["attempts"], record["result"]) == ("success", 1, "sent 7@x"), (
        record
    )


# -- 3. several processes on one SQLite file -------------------------------------------------


def test_three_processes_share_one_sqlite_file(db_url, db, spawn):
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite-specific: several processes writing one file")
    servers = start_all([spawn(f"s{i}") for i in range(3)])

    def batch(i: int) -> list[str]:
        return post(servers[i % 3].url, "/batch", count=25)["task_ids"]

    with ThreadPoolExecutor(20) as pool:
        ids = [t for chunk in pool.map(batch, range(20)) for t in chunk]
    assert len(set(ids)) == len(ids) == 500

    def all_done() -> bool:
        rows = db.tasks()
        return len(rows) == 500 and all(row["status"] in FINAL for row in rows.values())

    wait_until(all_done, timeout=30, what="500 tasks to end")
    rows = db.tasks()
    assert set(rows) == set(ids)
    bad = [row for row in rows.values() if (row["status"], row["attempts"]) != ("success", 1)]
    assert not bad, bad[:5]
    attempts = db.attempts()
    assert {task_id: len(history) for task_id, history in attempts.items()} == dict.fromkeys(ids, 1)
    for server in servers:
        log = server.log(tail=10**7)
        assert "database is locked" not in log, server.name
        assert "Traceback" not in log, (server.name, log)
        assert server.running(), server.name


# -- 4. graceful stop --------------------------------------------------------------------------


def test_sigterm_after_batch_tasks_exits_cleanly(db, spawn):
    server = spawn("a").start()
    ids = [t for _ in range(4) for t in post(server.url, "/batch", count=25)["task_ids"]]

    def all_success() -> bool:
        rows = db.tasks()
        return all(rows.get(t, {}).get("status") == "success" for t in ids)

    wait_until(all_success, timeout=15, what="100 batch tasks to succeed")
    assert len(db.rows("SELECT id FROM taskflow_instances")) == 1
    # uvicorn >= 0.29 re-raises the signal it caught once shutdown is complete, so a
    # graceful exit on SIGTERM is -SIGTERM; the log proves the lifespan shutdown ran.
    assert server.stop(timeout=15) in (0, -signal.SIGTERM), server.log()
    rows = db.tasks()
    assert {(rows[t]["status"], rows[t]["attempts"]) for t in ids} == {("success", 1)}
    assert db.rows("SELECT id FROM taskflow_instances") == [], "instance not deregistered"
    log = server.log()
    assert "Application shutdown complete" in log and "Traceback" not in log, log


def test_sigterm_with_own_backlog_leaves_it_to_the_next_process(db, spawn):
    # One sync thread, held for 5 s: the batch below is certainly a backlog at the stop.
    a = spawn("a", extra_env={"TASKFLOW_TEST_SYNC_THREADS": "1"}).start()
    blocker = post(a.url, "/sync-slow", seconds=5)["task_id"]
    with ThreadPoolExecutor(4) as pool:
        ids = [
            t
            for chunk in pool.map(lambda _: post(a.url, "/batch", count=25)["task_ids"], range(16))
            for t in chunk
        ]
    assert a.stop(timeout=15) in (0, -signal.SIGTERM), a.log()
    after_a = db.tasks()
    assert set(after_a) == {*ids, blocker}
    assert after_a[blocker]["status"] == "success", "A did not let its running task finish"
    left = [t for t in ids if after_a[t]["status"] != "success"]
    assert left, "precondition: A still had a backlog when it was stopped"
    assert {after_a[t]["status"] for t in left} <= {"pending"}, "A settled its backlog badly"
    assert all(after_a[t]["owner"] is None for t in left), "A's backlog is still owned by A"
    assert db.rows("SELECT id FROM taskflow_instances") == []

    b = spawn("b").start()
    wait_until(
        lambda: all(row["status"] in FINAL for row in db.tasks().values()),
        timeout=20,
        what="B to run what A left",
    )
    rows = db.tasks()
    assert {(rows[t]["status"], rows[t]["attempts"]) for t in ids} == {("success", 1)}
    assert b.running()


# -- 5. graceful stop while claimed tasks wait for a thread ----------------------------------


def _orphan_pending_tasks(spawn: Callable[..., Server], db: Database, count: int) -> list[str]:
    """Enqueue ``count`` thread tasks on a server and SIGKILL it before most of them ran
    (enqueueing is much faster than running them); returns the ids still pending then."""
    a = spawn("a").start()
    with ThreadPoolExecutor(4) as pool:
        ids = [
            t
            for chunk in pool.map(
                lambda _: post(a.url, "/batch", count=25)["task_ids"], range(count // 25)
            )
            for t in chunk
        ]
    a.kill()
    rows = db.tasks()
    assert set(rows) >= set(ids), "acknowledged tasks are missing after SIGKILL"
    pending = [t for t in ids if rows[t]["status"] == "pending"]
    assert len(pending) >= 100, f"precondition: A died with only {len(pending)} pending tasks"
    return pending


def test_sigterm_releases_claimed_tasks_that_never_started(db, spawn):
    """A process that claimed more tasks than it has threads and is then stopped must
    give the unstarted ones back (pending, unowned, no attempt counted), not end them
    ``interrupted``."""
    orphans = _orphan_pending_tasks(spawn, db, 500)
    # One sync thread: B claims far more than it can run, so it has a backlog at the stop.
    b = spawn("b", instance_timeout=60.0, extra_env={"TASKFLOW_TEST_SYNC_THREADS": "1"}).start()

    def claimed_by_live_instance() -> int:
        rows = db.rows(
            "SELECT count(*) AS n FROM taskflow_tasks t JOIN taskflow_instances i "
            "ON t.owner = i.id WHERE t.status IN ('pending', 'running')"
        )
        return rows[0]["n"]

    # Owning more unfinished tasks than its one thread means claimed tasks are waiting
    # in B's memory for a thread.
    wait_until(
        lambda: claimed_by_live_instance() > 40,
        timeout=10,
        what="B to claim a backlog of A's pending tasks",
    )
    assert b.stop(timeout=15) in (0, -signal.SIGTERM), b.log()
    rows = db.tasks()
    interrupted = [rows[t] for t in orphans if rows[t]["status"] == "interrupted"]
    assert not interrupted, (
        f"{len(interrupted)} of A's pending tasks ended interrupted after "
        f"B's graceful stop, e.g. {interrupted[0]}"
    )
    outcomes = {(rows[t]["status"], rows[t]["attempts"], rows[t]["owner"] is None) for t in orphans}
    assert outcomes <= {("success", 1, False), ("pending", 0, True)}, outcomes
    assert ("pending", 0, True) in outcomes, "precondition: B still had a backlog when stopped"
    assert db.rows("SELECT id FROM taskflow_instances") == []
