"""The task database becomes unavailable under load, with real server processes: a
SQLite file locked by another process (for less and for longer than the busy timeout), a
full disk, a read-only file, and PostgreSQL stopped for 10 s.

What every outage test checks, as a client and from the database:

- an enqueue request during the outage either succeeds once the database is back or is
  answered 503 with a JSON ``detail`` naming the problem and a ``Retry-After`` header:
  never a 500, never a hang, never a body with SQL or task arguments in it;
- every acknowledged task is stored and ends ``success`` after exactly one run (counted
  by the database and by the ``$TASKFLOW_TEST_RUN_LOG`` side channel), and so does every
  task that was stored for a request that was then refused;
- the same server process serves and runs new work afterwards: nothing needs a restart;
- a full disk or a read-only file leaves a SQLite file that passes ``integrity_check``.

Holding a lock (or an outage) for a fixed 10 s is the fault itself; every wait polls
with a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskflow import ConfigurationError, TaskManager
from taskflow.errors import DatabaseFull, DatabaseReadOnly, DatabaseUnavailable
from tests.apps import tasks as app_tasks
from tests.apps.web import RUN_LOG_ENV
from tests.servers import (
    Answer,
    Database,
    Load,
    Server,
    SqliteLock,
    fill_disk,
    integrity_check,
    mount_or_skip,
    pg_ctl,
    pg_ready,
    poll,
    read_runs,
    unmount,
)

pytestmark = pytest.mark.slow

OUTAGE = 10.0  # seconds the database stays unavailable
SHORT_BUSY_TIMEOUT = 1.0  # seconds, for the lock that outlasts it


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make servers; all are killed at teardown and their logs printed (pytest shows
    them only when the test failed)."""
    made: list[Server] = []

    def make(url: str, name: str = "server", **options: Any) -> Server:
        server = Server(url, tmp_path, name, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.running():
            server.kill()
        server._reap()
        print(f"===== {server.name} (port {server.port}) =====\n{server.log(tail=20000)}")


@pytest.fixture
def sqlite_file(sqlite_template: Path, tmp_path: Path) -> Path:
    """A migrated, empty SQLite database file of its own."""
    target = tmp_path / "db" / "tasks.db"
    target.parent.mkdir()
    shutil.copy(sqlite_template, target)
    return target


def sqlite_url(path: Path, **query: Any) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"sqlite+aiosqlite:///{path}" + (f"?{params}" if params else "")


def run_log_env(tmp_path: Path) -> dict[str, str]:
    return {RUN_LOG_ENV: str(tmp_path / "runs.log"), "TASKFLOW_POOL_SIZE": "4"}


# -- what every outage must leave behind ------------------------------------------------------


def check_answers(answers: list[Answer], *, problem: str) -> collections.Counter[Any]:
    """Every answer is a 200 or the documented 503: JSON ``{"detail": "task could not be
    stored: ..."}`` naming ``problem``, with ``Retry-After``, and no SQL or arguments.
    Returns the count of answers by status."""
    statuses = collections.Counter(answer.status for answer in answers)
    bad = [answer for answer in answers if answer.status not in (200, 503)]
    assert not bad, f"answers other than 200/503 ({statuses}): {bad[:3]}"
    for answer in answers:
        if answer.status != 503:
            continue
        assert isinstance(answer.body, dict), answer
        detail = answer.body.get("detail", "")
        assert detail.startswith("task could not be stored: "), answer
        assert problem in detail, (problem, answer)
        assert "[SQL" not in detail and "parameters" not in detail, answer
        assert answer.retry_after is not None, answer
    return statuses


def check_every_task_ran_once(db: Database, run_log: Path, acknowledged: list[str]) -> int:
    """Wait until no task is pending or running; then every acknowledged task is stored,
    and every stored task (acknowledged or not) succeeded on its first attempt and ran
    exactly once. Returns how many tasks are stored."""
    assert len(set(acknowledged)) == len(acknowledged), "an id was acknowledged twice"

    def settled() -> dict[str, dict[str, Any]] | None:
        tasks = db.tasks()
        left = [row for row in tasks.values() if row["status"] in ("pending", "running")]
        return None if left else tasks

    tasks = poll(settled, timeout=120, what="every task to end", interval=0.5)
    missing = [task_id for task_id in acknowledged if task_id not in tasks]
    assert not missing, f"{len(missing)} acknowledged tasks were lost, e.g. {missing[:3]}"
    runs = read_runs(run_log)
    bad = [
        (task_id, row["status"], row["attempts"], runs[task_id], row["error"])
        for task_id, row in tasks.items()
        if (row["status"], row["attempts"], runs[task_id]) != ("success", 1, 1)
    ]
    assert not bad, f"{len(bad)} tasks did not run exactly once: {bad[:10]}"
    phantom = [task_id for task_id in runs if task_id not in tasks]
    assert not phantom, f"runs of tasks that are not stored: {phantom[:3]}"
    return len(tasks)


def whoami(server: Server) -> tuple[int, str]:
    """The server's process id and taskflow instance id."""
    body = httpx.get(f"{server.url}/whoami", timeout=60.0).json()
    return body["pid"], body["instance"]


def check_same_process_serves(server: Server, identity: tuple[int, str], db: Database) -> None:
    """The server that lived through the outage is the same process with the same
    instance (not declared dead, not re-registered), still answers, and never failed a
    request with an exception."""
    assert server.running(), f"{server.name} died:\n{server.log()}"
    assert whoami(server) == identity
    registered = {row["id"] for row in db.rows("SELECT id FROM taskflow_instances")}
    assert identity[1] in registered, (identity, registered)
    assert "Exception in ASGI application" not in server.log(tail=10**8)


def resumed(load: Load, since: float, count: int = 20) -> None:
    """Wait until ``count`` requests sent after ``since`` were acknowledged."""
    poll(
        lambda: load.ok_after(since) >= count,
        timeout=120,
        what=f"{count} acknowledged requests after the outage",
    )


# -- SQLite: a lock held by another process --------------------------------------------------


@pytest.mark.timeout(240)
def test_sqlite_lock_shorter_than_the_busy_timeout_costs_latency_not_errors(
    sqlite_file, spawn, tmp_path
):
    """Another process holds ``BEGIN EXCLUSIVE`` on the file for 10 s, within the 30 s
    busy timeout, while clients enqueue continuously (async and sync routes). Requests
    wait for the lock and succeed: no error at all; every acknowledged task runs exactly
    once; the same server carries on."""
    env = run_log_env(tmp_path)
    server = spawn(sqlite_url(sqlite_file), extra_env=env, instance_timeout=60.0).start()
    identity = whoami(server)
    db = Database(sqlite_url(sqlite_file))
    load = Load(server.url)
    try:
        poll(lambda: len(load.acknowledged()) >= 100, timeout=60, what="100 acknowledged")
        lock = SqliteLock(sqlite_file, OUTAGE)
        try:
            locked = lock.wait_locked()
            released = lock.wait_released(timeout=OUTAGE + 60)
        finally:
            lock.kill()
        resumed(load, released)
    finally:
        answers = load.stop(timeout=150)
    try:
        statuses = check_answers(answers, problem="locked")
        assert set(statuses) == {200}, f"a lock within the busy timeout caused errors: {statuses}"
        # Sent before the lock was taken, answered (200) after it was given back.
        waited = [a for a in answers if a.sent < locked and a.answered > released]
        assert waited, "precondition: requests were waiting while the file was locked"
        stored = check_every_task_ran_once(db, Path(env[RUN_LOG_ENV]), load.acknowledged())
        check_same_process_serves(server, identity, db)
    finally:
        db.close()
    assert integrity_check(sqlite_file) == "ok"
    print(f"answers {dict(statuses)}, waited through the lock {len(waited)}, stored {stored}")


@pytest.mark.timeout(240)
def test_sqlite_lock_longer_than_the_busy_timeout_is_a_clear_503(sqlite_file, spawn, tmp_path):
    """The same lock for 10 s with the busy timeout set to 1 s (``?timeout=1`` in the
    URL): requests that wait longer are answered 503 with a JSON body saying the database
    is locked, while the lock is still held (a failure is reported, not stalled);
    nothing acknowledged is lost or run twice, and the server recovers by itself."""
    env = run_log_env(tmp_path)
    url = sqlite_url(sqlite_file, timeout=SHORT_BUSY_TIMEOUT)
    server = spawn(url, extra_env=env, instance_timeout=60.0).start()
    identity = whoami(server)
    db = Database(sqlite_url(sqlite_file))
    load = Load(server.url)
    try:
        poll(lambda: len(load.acknowledged()) >= 100, timeout=60, what="100 acknowledged")
        lock = SqliteLock(sqlite_file, OUTAGE)
        try:
            locked = lock.wait_locked()
            released = lock.wait_released(timeout=OUTAGE + 60)
        finally:
            lock.kill()
        resumed(load, released)
    finally:
        answers = load.stop(timeout=150)
    try:
        statuses = check_answers(answers, problem="is locked by another connection")
        refused = [a for a in answers if a.status == 503]
        assert all(a.answered > locked for a in refused), "refused before the lock"
        assert any(a.answered < released for a in refused), (
            "no request was refused while the lock was held",
            statuses,
        )
        assert {a.route for a in refused} == set(Load.ROUTES), "both routes answer 503"
        assert "busy timeout" in refused[0].body["detail"], refused[0]
        stored = check_every_task_ran_once(db, Path(env[RUN_LOG_ENV]), load.acknowledged())
        check_same_process_serves(server, identity, db)
    finally:
        db.close()
    assert integrity_check(sqlite_file) == "ok"
    print(f"answers {dict(statuses)}, stored {stored}")


@pytest.mark.anyio
async def test_a_locked_batch_fails_as_one_not_one_operation_at_a_time(sqlite_file):
    """Group commit retries a failed batch one operation at a time, to isolate a bad
    operation. A lock is not a bad operation: retrying 20 writes one by one would make the
    last caller wait 21 busy timeouts. The batch fails once, every caller gets
    :class:`DatabaseUnavailable`, and the next enqueue after the lock succeeds."""
    manager = TaskManager(database_url=sqlite_url(sqlite_file, timeout=0.5), poll_interval=0.05)
    manager.task()(app_tasks.add)
    await manager.startup()
    try:
        transactions = 0
        real = manager.db._committer._write_batch

        async def counted(groups: Any) -> Any:
            nonlocal transactions
            transactions += 1
            return await real(groups)

        manager.db._committer._write_batch = counted
        lock = SqliteLock(sqlite_file, 3600)
        try:
            await asyncio.to_thread(lock.wait_locked)
            outcomes = await asyncio.gather(
                *(manager.enqueue(app_tasks.add, i, 1) for i in range(20)), return_exceptions=True
            )
        finally:
            lock.kill()
        assert all(isinstance(o, DatabaseUnavailable) for o in outcomes), outcomes
        assert "locked" in str(outcomes[0]) and "[SQL" not in str(outcomes[0]), outcomes[0]
        assert transactions <= 2, f"{transactions} write transactions for one locked batch"
        task_id = await manager.enqueue(app_tasks.add, 40, 2)
        deadline = time.monotonic() + 20
        while (record := await manager.get_task(task_id)).status.value != "success":
            assert time.monotonic() < deadline, record
            await asyncio.sleep(0.02)
    finally:
        await manager.shutdown()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_sqlite_busy_timeout_is_refused_at_construction(value, tmp_path):
    with pytest.raises(ConfigurationError, match="timeout"):
        TaskManager(database_url=f"sqlite:///{tmp_path}/x.db?timeout={value}")


# -- SQLite: the disk is full ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs: filling it gives SQLite a real ENOSPC (``SQLITE_FULL``)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mount_or_skip(
        ["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount_point)], "a full disk"
    )
    try:
        yield mount_point
    finally:
        unmount(mount_point)


@pytest.mark.timeout(300)
def test_sqlite_full_disk_is_a_clear_503_and_never_corrupts(
    sqlite_template, small_disk, spawn, tmp_path
):
    """Under load, the disk holding the database fills up (a real ENOSPC on a small
    tmpfs). Enqueues are answered 503 saying the database is full; the server stays up;
    once space is freed it carries on by itself. Every acknowledged task runs exactly
    once, and the file passes ``PRAGMA integrity_check`` while served and after a
    graceful stop."""
    database = small_disk / "tasks.db"
    shutil.copy(sqlite_template, database)
    env = run_log_env(tmp_path)
    server = spawn(sqlite_url(database), extra_env=env, instance_timeout=60.0).start()
    identity = whoami(server)
    db = Database(sqlite_url(database))
    load = Load(server.url)
    try:
        poll(lambda: len(load.acknowledged()) >= 100, timeout=60, what="100 acknowledged")
        ballast = fill_disk(small_disk)
        full = time.monotonic()

        def refused_on_both_routes() -> bool:
            refused = collections.Counter(
                a.route for a in load.answers() if a.status == 503 and a.sent > full
            )
            return all(refused[route] >= 10 for route in Load.ROUTES)

        poll(refused_on_both_routes, timeout=120, what="10 refusals per route on the full disk")
        assert server.running(), server.log()
        ballast.unlink()
        freed = time.monotonic()
        resumed(load, freed)
    finally:
        answers = load.stop(timeout=150)
    try:
        statuses = check_answers(answers, problem="is full")
        assert "Free disk space" in next(a for a in answers if a.status == 503).body["detail"]
        stored = check_every_task_ran_once(db, Path(env[RUN_LOG_ENV]), load.acknowledged())
        check_same_process_serves(server, identity, db)
        assert integrity_check(database) == "ok"
    finally:
        db.close()
    # uvicorn re-raises SIGTERM after its graceful shutdown
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    assert "Finished server process" in server.log(), server.log()
    assert integrity_check(database) == "ok"
    rows = Database(sqlite_url(database))
    try:
        assert len(rows.tasks()) == stored
    finally:
        rows.close()
    print(f"answers {dict(statuses)}, stored {stored}")


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_enqueue_on_a_full_disk_raises_database_full(sqlite_template, small_disk):
    """``enqueue`` on a full disk raises :class:`DatabaseFull` saying so, leaves nothing
    half-written, and works again as soon as space is freed, in the same manager."""
    database = small_disk / "tasks.db"
    shutil.copy(sqlite_template, database)
    manager = TaskManager(database_url=sqlite_url(database), poll_interval=0.05)
    manager.task()(app_tasks.add)
    await manager.startup()
    try:
        stored = [await manager.enqueue(app_tasks.add, i, 1) for i in range(20)]
        ballast = fill_disk(small_disk)
        caught: DatabaseFull | None = None
        for i in range(100_000):  # the WAL may have room for a few more rows
            try:
                stored.append(await manager.enqueue(app_tasks.add, i, 1))
            except DatabaseFull as exc:
                caught = exc
                break
        assert caught is not None, "the disk never filled"
        assert "is full" in str(caught) and "Free disk space" in str(caught), caught
        assert "[SQL" not in str(caught), caught
        ballast.unlink()
        stored.append(await manager.enqueue(app_tasks.add, 40, 2))
        deadline = time.monotonic() + 60
        for task_id in stored:
            while (record := await manager.get_task(task_id, logs=False)).status.value != "success":
                assert time.monotonic() < deadline, record
                await asyncio.sleep(0.02)
    finally:
        await manager.shutdown()
    assert integrity_check(database) == "ok"


# -- SQLite: a read-only file ------------------------------------------------------------------


def make_read_only(how: str, directory: Path, tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    """Make the database in ``directory`` read-only; returns the path to open and an
    undo. ``mount``: a read-only bind mount of the directory (EROFS); ``immutable``:
    ``chattr +i`` on the file, which stops root too (EPERM)."""
    if how == "mount":
        view = tmp_path / "read-only-view"
        view.mkdir()
        mount_or_skip(["--bind", str(directory), str(view)], "a read-only file system")
        result = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, text=True
        )
        if result.returncode != 0:
            unmount(view)
            pytest.skip(f"a read-only bind mount is not allowed here: {result.stderr.strip()}")
        return view / "tasks.db", lambda: unmount(view)
    path = directory / "tasks.db"
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {result.stderr.strip()}")
    return path, lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["mount", "immutable"])
def test_read_only_sqlite_is_a_clear_error_at_startup(how, sqlite_file, spawn, tmp_path):
    """A SQLite file that cannot be written (read-only file system, or an immutable
    file: tests run as root, so ``chmod 444`` would not stop a write) makes
    ``startup()`` raise :class:`DatabaseReadOnly` saying what to make writable, before
    anything starts; a real server exits at startup with that message. The file is
    untouched."""
    before = digest(sqlite_file)
    path, undo = make_read_only(how, sqlite_file.parent, tmp_path)
    try:

        async def start() -> None:
            manager = TaskManager(database_url=sqlite_url(path))
            try:
                await manager.startup()
            finally:
                await manager.shutdown()

        with pytest.raises(DatabaseReadOnly) as caught:
            asyncio.run(start())
        message = str(caught.value)
        assert "is read-only" in message and "writable" in message, message
        assert "[SQL" not in message, message
        why = "read-only file system" if how == "mount" else "tasks.db is not writable"
        assert why in message, message

        server = spawn(sqlite_url(path), extra_env=run_log_env(tmp_path)).start(wait=False)
        assert server.proc is not None
        code = server.proc.wait(60)
        log = server.log(tail=10**6)
        assert code != 0, log
        errors = [line for line in log.splitlines() if line.startswith("taskflow.errors.")]
        assert errors and errors[-1].startswith("taskflow.errors.DatabaseReadOnly: "), log
        assert why in errors[-1], errors[-1]
    finally:
        undo()
    assert digest(sqlite_file) == before, "the read-only database was changed"
    assert integrity_check(sqlite_file) == "ok"


# -- PostgreSQL: the server is stopped for 10 s --------------------------------------------------


@pytest.mark.timeout(300)
def test_postgresql_stopped_for_10s_under_load(db_url, spawn, tmp_path):
    """PostgreSQL is stopped for 10 s while two servers take enqueues (async and sync
    routes) and run tasks, then started again. During the outage requests are answered
    503 saying the database is unavailable (never 500); afterwards every acknowledged
    task runs exactly once and both servers carry on without a restart."""
    if not db_url.startswith("postgresql"):
        pytest.skip("stops PostgreSQL")
    if os.environ.get("CI") != "true" and os.environ.get("TASKFLOW_TEST_PG_RESTART") != "1":
        pytest.skip(
            "stops the shared PostgreSQL server: set TASKFLOW_TEST_PG_RESTART=1 "
            "(always runs with CI=true)"
        )
    env = run_log_env(tmp_path)
    # The library default instance_timeout (30 s) is longer than the outage: neither
    # server may declare the other dead.
    servers = [spawn(db_url, f"s{i}", extra_env=env, instance_timeout=30.0) for i in range(2)]
    for server in servers:
        server.start(wait=False)
    for server in servers:
        server.wait_ready()
    identities = [whoami(server) for server in servers]
    db = Database(db_url)
    loads = [Load(server.url, threads=3) for server in servers]
    try:
        poll(
            lambda: sum(len(load.acknowledged()) for load in loads) >= 200,
            timeout=60,
            what="200 acknowledged",
        )
        try:
            pg_ctl("stop")
            down = time.monotonic()
            poll(lambda: not pg_ready(db_url), timeout=30, what="PostgreSQL to be down")
            time.sleep(OUTAGE)  # the outage itself
        finally:
            pg_ctl("start")
        poll(lambda: pg_ready(db_url), timeout=60, what="PostgreSQL to accept connections")
        up = time.monotonic()
        for load in loads:
            resumed(load, up)
    finally:
        answers = [answer for load in loads for answer in load.stop(timeout=150)]
    try:
        statuses = check_answers(answers, problem="is unavailable")
        during = [a for a in answers if down < a.sent < up]
        assert during, "precondition: requests were sent while PostgreSQL was down"
        assert any(a.status == 503 for a in during), ("nothing was refused", statuses)
        acknowledged = [task_id for load in loads for task_id in load.acknowledged()]
        stored = check_every_task_ran_once(db, Path(env[RUN_LOG_ENV]), acknowledged)
        for server, identity in zip(servers, identities, strict=True):
            check_same_process_serves(server, identity, db)
    finally:
        db.close()
    print(f"answers {dict(statuses)}, stored {stored}")
