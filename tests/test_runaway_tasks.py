"""Runaway tasks: a task that blocks forever or leaks memory is settled by its timeout,
and a process task that crashes its worker fails alone while the pool recovers.

What each executor can do about a task that overran its timeout:

- async: the coroutine is cancelled; one that swallows the cancellation is abandoned
  after a grace period (it cannot be stopped from outside);
- thread: a Python thread cannot be killed; the task is settled, its thread is abandoned
  (a daemon, so it never holds up the exit) and no longer takes a slot of the pool;
- process: the worker process is killed and replaced.

Process tasks must be importable by name, so they are defined at module level here.
(``tests/test_limits.py`` covers a worker that exits with ``os._exit``.)
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from taskflow import get_task_context, task_log
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
SETTLE = 60.0  # generous deadline for a task to reach a final status (2 shared cores)


# -- process task functions (importable by name) -----------------------------------------


def worker_pid() -> int:
    """The pid of the worker process running this task."""
    return os.getpid()


def block_forever(seconds: float = 300.0) -> None:
    """Block without ever looking at ``is_cancelled()`` (bounded for CI safety)."""
    time.sleep(seconds)


def hoard_memory(cap_mb: int = 256, chunk_mb: int = 8) -> None:
    """Leak memory until the timeout: keep allocating, never release. Bounded at
    ``cap_mb`` for CI safety; past the cap it only holds what it took, forever."""
    hoard: list[bytes] = []
    while True:
        if len(hoard) * chunk_mb < cap_mb:
            hoard.append(b"x" * (chunk_mb << 20))  # filled, so the pages are really used
            task_log(f"holding {len(hoard) * chunk_mb} MB")
        time.sleep(0.02)


def segfault() -> None:
    """Crash the worker with a real segmentation fault (a read of address 0)."""
    ctypes.string_at(0)


def wait_for_file(path: str, limit: float = 120.0) -> str:
    """Wait until ``path`` exists (polling; bounded), then return its content."""
    deadline = time.monotonic() + limit
    target = Path(path)
    while not target.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return target.read_text()


# -- helpers --------------------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_gone(pid: int, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} is still alive")
        await asyncio.sleep(0.05)


async def wait_for_log(manager, task_id: str, fragment: str, timeout: float = SETTLE):
    """Poll a task's logs until a line contains ``fragment``."""
    deadline = time.monotonic() + timeout
    while True:
        record = await manager.get_task(task_id)
        if record is not None and any(fragment in line.message for line in record.logs):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line of {task_id} contains {fragment!r}")
        await asyncio.sleep(0.05)


def assert_timed_out(record) -> None:
    assert record.status == "failed", (record.status, record.error)
    assert record.error.startswith("TaskTimeout"), record.error


# -- async ----------------------------------------------------------------------------------


async def test_async_task_awaiting_forever_is_settled_and_others_keep_running(
    manager_factory,
):
    manager = manager_factory(max_concurrent_tasks=1)
    forever = asyncio.Event()

    @manager.task(timeout=0.5)
    async def hangs() -> None:
        await forever.wait()

    @manager.task()
    async def quick(n: int) -> int:
        return n + 1

    await manager.startup()
    hung = await manager.enqueue(hangs)
    after = await manager.enqueue(quick, 1)  # waits for the only async slot
    assert_timed_out(await wait_for_status(manager, hung, timeout=SETTLE))
    record = await wait_for_status(manager, after, timeout=SETTLE)
    assert (record.status, record.result) == ("success", 2)
    again = await wait_for_status(manager, await manager.enqueue(quick, 5), timeout=SETTLE)
    assert (again.status, again.result) == ("success", 6)


async def test_async_task_swallowing_its_cancellation_is_still_settled(manager_factory):
    """A coroutine that catches CancelledError and carries on cannot be stopped; the
    task is settled anyway and its slot freed (the coroutine is abandoned)."""
    manager = manager_factory(max_concurrent_tasks=1)
    release = asyncio.Event()
    swallowed: list[int] = []

    @manager.task(timeout=0.5)
    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                swallowed.append(1)

    @manager.task()
    async def quick() -> str:
        return "ran"

    await manager.startup()
    try:
        hung = await manager.enqueue(stubborn)
        after = await manager.enqueue(quick)
        assert_timed_out(await wait_for_status(manager, hung, timeout=SETTLE))
        assert swallowed, "the coroutine was never cancelled"
        record = await wait_for_status(manager, after, timeout=SETTLE)
        assert (record.status, record.result) == ("success", "ran")
    finally:
        release.set()


# -- threads --------------------------------------------------------------------------------


async def test_thread_task_blocked_forever_is_settled_and_frees_its_slot(manager_factory):
    """The stuck thread cannot be killed: the task is settled at its timeout and the
    next sync task gets a thread even though the pool has only one."""
    manager = manager_factory(max_sync_threads=1)
    never = threading.Event()  # set at the end, so the thread does not outlive the test

    @manager.task(timeout=0.5)
    def stuck() -> None:
        never.wait()

    @manager.task()
    def quick() -> str:
        return threading.current_thread().name

    await manager.startup()
    try:
        hung = await manager.enqueue(stuck)
        assert_timed_out(await wait_for_status(manager, hung, timeout=SETTLE))
        record = await wait_for_status(manager, await manager.enqueue(quick), timeout=SETTLE)
        assert record.status == "success", record.error
        assert record.result.startswith("taskflow")
        assert not never.is_set()  # the first thread is still stuck
        async with asyncio.timeout(SETTLE):
            await manager.shutdown()  # a stuck thread does not hold up shutdown
    finally:
        never.set()


# A process that shuts its manager down with a stuck thread task and a stuck process
# task still running: the interpreter must still exit (the real test of "shutdown does
# not hang", since ThreadPoolExecutor joins its threads at exit).
EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    from taskflow import TaskManager
    from tests.test_runaway_tasks import block_forever, worker_pid

    async def main(url):
        manager = TaskManager(
            database_url=url, poll_interval=0.05, shutdown_timeout=1.0,
            process_shutdown_timeout=1.0, max_sync_threads=1, max_process_workers=1,
        )
        never = threading.Event()

        @manager.task(timeout=0.5)
        def stuck_with_timeout():
            never.wait()

        @manager.task()
        def stuck_without_timeout():
            never.wait()

        manager.task(executor="process")(block_forever)
        manager.task(executor="process")(worker_pid)
        await manager.startup()
        pid = None
        ids = {}
        ids["timed_out"] = await manager.enqueue(stuck_with_timeout)
        while (await manager.get_task(ids["timed_out"])).status.value != "failed":
            await asyncio.sleep(0.02)
        ids["thread"] = await manager.enqueue(stuck_without_timeout)
        warm = await manager.enqueue(worker_pid)
        while (record := await manager.get_task(warm)).status.value != "success":
            await asyncio.sleep(0.02)
        pid = record.result
        ids["process"] = await manager.enqueue(block_forever)
        for task_id in (ids["thread"], ids["process"]):
            while (await manager.get_task(task_id)).status.value != "running":
                await asyncio.sleep(0.02)
        await manager.shutdown()
        print(json.dumps({"ids": ids, "worker": pid}), flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_stuck_thread_and_process_tasks_do_not_keep_the_process_from_exiting(
    db_url: str, tmp_path: Path
):
    from tests.servers import Database

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, db_url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the process did not exit:\n{exc.stdout}\n{exc.stderr}") from None
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert process_gone(report["worker"])
    db = Database(db_url)
    try:
        rows = db.tasks()
    finally:
        db.close()
    assert rows[report["ids"]["timed_out"]]["status"] == "failed"
    for kind in ("thread", "process"):
        assert rows[report["ids"][kind]]["status"] == "interrupted", (kind, rows)


# -- processes ------------------------------------------------------------------------------


async def test_process_task_blocked_forever_is_killed_and_replaced(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(worker_pid)
    manager.task(executor="process", timeout=2.0)(block_forever)
    await manager.startup()
    warm = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert warm.status == "success", warm.error
    hung = await manager.enqueue(block_forever)
    record = await wait_for_status(manager, hung, timeout=SETTLE)
    assert_timed_out(record)
    assert "worker process was stopped" in record.error
    await wait_gone(warm.result)  # the only worker ran the stuck task: it was killed
    fresh = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert fresh.status == "success", fresh.error
    assert fresh.result != warm.result


async def test_process_task_leaking_memory_is_settled_by_its_timeout(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(worker_pid)
    manager.task(executor="process", timeout=3.0)(hoard_memory)
    await manager.startup()
    warm = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert warm.status == "success", warm.error
    hog = await manager.enqueue(hoard_memory)
    assert_timed_out(await wait_for_status(manager, hog, timeout=SETTLE))
    await wait_for_log(manager, hog, "MB")  # it did grow before it was stopped
    await wait_gone(warm.result)  # its memory went with its process
    fresh = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert fresh.status == "success", fresh.error
    assert fresh.result != warm.result


async def test_segfaulting_process_task_fails_naming_the_signal(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(segfault)
    manager.task(executor="process")(worker_pid)
    await manager.startup()
    crashed = await wait_for_status(manager, await manager.enqueue(segfault), timeout=SETTLE)
    assert crashed.status == "failed"
    assert "worker process" in crashed.error and "SIGSEGV" in crashed.error, crashed.error
    fine = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert fine.status == "success", fine.error


async def test_a_crash_or_a_kill_fails_only_its_own_process_task(manager_factory, tmp_path):
    """With two workers, a neighbour running while another worker segfaults, and while
    another is killed for its timeout, finishes normally."""
    manager = manager_factory(max_process_workers=2)
    manager.task(executor="process")(wait_for_file)
    manager.task(executor="process")(segfault)
    manager.task(executor="process", timeout=2.0)(block_forever)
    gate = tmp_path / "gate"
    await manager.startup()
    neighbour = await manager.enqueue(wait_for_file, str(gate))
    await wait_for_status(manager, neighbour, "running", timeout=SETTLE)
    crashed = await wait_for_status(manager, await manager.enqueue(segfault), timeout=SETTLE)
    assert "SIGSEGV" in crashed.error, crashed.error
    assert_timed_out(
        await wait_for_status(manager, await manager.enqueue(block_forever), timeout=SETTLE)
    )
    assert (await manager.get_task(neighbour)).status.value == "running"
    gate.write_text("open")
    record = await wait_for_status(manager, neighbour, timeout=SETTLE)
    assert (record.status, record.result) == ("success", "open"), record.error


async def test_cooperative_process_task_stops_itself_at_its_timeout(manager_factory):
    """A process task that watches ``is_cancelled()`` is told at its timeout and stops
    within the grace period; its worker is kept."""
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(worker_pid)
    manager.task(executor="process", timeout=1.0)(stop_when_told)
    await manager.startup()
    warm = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    told = await wait_for_status(manager, await manager.enqueue(stop_when_told), timeout=SETTLE)
    assert_timed_out(told)
    assert "worker process was stopped" not in told.error
    again = await wait_for_status(manager, await manager.enqueue(worker_pid), timeout=SETTLE)
    assert again.result == warm.result  # the same worker: it was not killed


def stop_when_told(limit: float = 120.0) -> str:
    """Loop until the task is cancelled (bounded)."""
    context = get_task_context()
    assert context is not None
    deadline = time.monotonic() + limit
    while not context.is_cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "stopped"
