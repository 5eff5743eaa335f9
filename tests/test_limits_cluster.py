"""Concurrency and rate limits of task functions (``concurrency=``, ``rate_limit=``,
``limit_key=``), enforced by the database: in one manager and across real processes,
on SQLite and PostgreSQL (the store's start on both, and in memory)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taskflow import TaskGroup, TaskManager
from taskflow._store.protocol import Store
from taskflow._store.rows import Limit, LimitHold, NewTask, Outcome
from taskflow.errors import ConfigurationError, TaskArgumentError
from tests.admin_support import build, call, wait_status
from tests.conftest import wait_for_status
from tests.store_support import at, new_task

GATE_TIMEOUT = 20.0
ROOT = Path(__file__).resolve().parent.parent


class Running:
    """What a test's tasks record: how many run at once now, the most ever, and the
    order they started in; ``gate`` holds them until the test opens it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.started: list[Any] = []
        self.gate = threading.Event()

    def enter(self, label: Any) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.started.append(label)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def run(self, label: Any) -> None:
        """A task's body: counted while it waits for the gate."""
        self.enter(label)
        try:
            assert self.gate.wait(GATE_TIMEOUT), "the test never opened the gate"
        finally:
            self.leave()


async def wait_until_async(
    condition: Callable[[], bool], *, what: str, timeout: float = 15.0
) -> None:
    """Poll ``condition`` on the event loop until it holds, or fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def held(manager: TaskManager) -> int:
    """Jobs this manager has waiting (held by a limit, here)."""
    dispatcher = manager._engine.runtime.dispatcher
    assert dispatcher is not None
    return dispatcher.waiting()


# -- the store: SQLite, PostgreSQL and memory -----------------------------------------


def limited_task(limit_key: str | None = "f", **changes: Any) -> NewTask:
    """A pending task created at ``T0`` that counts against ``limit_key``."""
    changes = {"func_name": "f", "max_retries": 1, "owner": "i1", **changes}
    return new_task(limit_key=limit_key, **changes)


async def insert(store: Store, *tasks: NewTask) -> list[str]:
    """Insert through group commit, as the engine does."""
    return [await store.insert_task(task) for task in tasks]


@pytest.mark.anyio
async def test_store_starts_up_to_the_concurrency_and_a_takeover_frees_the_slots(store):
    one, two, three, four = (limited_task() for _ in range(4))
    other = limited_task("f:other")
    plain = limited_task(None)
    await insert(store, one, two, three, four, other, plain)
    assert (await store.get_task(one.id)).limit_key == "f"
    assert (await store.get_task(plain.id)).limit_key is None
    limit = Limit(key="f", concurrency=2)

    async def start(task: NewTask, now: datetime, on: Limit = limit) -> Any:
        return await store.start_limited(task.id, instance="i1", limit=on, now=now)

    assert await start(one, at(1)) == 1
    assert await start(two, at(2)) == 1
    assert await start(two, at(2)) == 1  # the same start asked again (its reply was lost)
    assert await start(three, at(3)) == LimitHold(reason="concurrency", count=2)
    assert (await store.get_task(three.id)).status == "pending"
    assert await start(other, at(3), Limit(key="f:other", concurrency=2)) == 1  # its own key
    assert await start(one, at(4)) is None  # not pending any more: never held
    await store.finish_task(
        Outcome(id=one.id, owner="i1", attempt=1, status="success", finished_at=at(5))
    )
    assert await start(one, at(5)) is None  # not pending any more
    assert await start(three, at(6)) == 1
    assert await start(four, at(7)) == LimitHold(reason="concurrency", count=2)
    # The instance running two and three dies: taking over its tasks frees their slots.
    await store.settle_instance("i1", now=at(8), reason="instance lost", remove=False)
    assert (await store.limit_usage("f", since=None)).running == 0
    assert await start(four, at(9)) == 1


@pytest.mark.anyio
async def test_store_counts_starts_in_the_rate_window_retries_included(store):
    first, second = limited_task("r"), limited_task("r")
    await insert(store, first, second)
    limit = Limit(key="r", rate=2, period=60.0)

    async def start(task: NewTask, now: datetime) -> Any:
        return await store.start_limited(task.id, instance="i1", limit=limit, now=now)

    assert await start(first, at(0)) == 1
    await store.finish_task(
        Outcome(
            id=first.id,
            owner="i1",
            attempt=1,
            status="pending",
            finished_at=at(1),
            error="boom",
            next_attempt_at=at(1),
        )
    )
    assert await start(first, at(10)) == 2  # the retry: a second start in the window
    assert await start(second, at(20)) == LimitHold(reason="rate", count=2, retry_at=at(60))
    usage = await store.limit_usage("r", since=at(0))
    assert (usage.running, usage.starts, usage.oldest_start) == (1, 2, at(0))
    assert await start(second, at(61)) == 1  # the first start left the window


# -- one manager ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrency_two_never_runs_a_third(manager_factory):
    manager = manager_factory()
    seen = Running()

    @manager.task(concurrency=2)
    def limited(n: int) -> None:
        seen.run(n)

    await manager.startup()
    ids = [await manager.enqueue(limited, n) for n in range(6)]
    await wait_until_async(lambda: seen.now == 2 and held(manager) == 4, what="2 run, 4 held")
    statuses = [(await manager.get_task(task_id)).status.value for task_id in ids]
    assert sorted(statuses) == ["pending"] * 4 + ["running"] * 2
    seen.gate.set()
    for task_id in ids:
        assert (await wait_for_status(manager, task_id)).status.value == "success"
    assert seen.most == 2
    assert sorted(seen.started) == list(range(6))


@pytest.mark.anyio
async def test_per_key_limits_run_two_keys_at_once_and_one_key_alone(manager_factory):
    manager = manager_factory()
    seen = Running()
    b_started = threading.Event()

    @manager.task(concurrency=1, limit_key=lambda tenant, n: tenant)
    def per_tenant(tenant: str, n: int) -> None:
        if tenant == "b":
            b_started.set()
            seen.run((tenant, n))
        else:  # runs only if b's task can run beside it
            seen.enter((tenant, n))
            try:
                assert b_started.wait(GATE_TIMEOUT), "the other key never started"
                assert seen.gate.wait(GATE_TIMEOUT)
            finally:
                seen.leave()

    await manager.startup()
    ids = [await manager.enqueue(per_tenant, tenant, n) for n in range(3) for tenant in "ab"]
    await wait_until_async(lambda: seen.now == 2 and held(manager) == 4, what="one task a key")
    assert {tenant for tenant, _ in seen.started} == {"a", "b"}
    seen.gate.set()
    for task_id in ids:
        assert (await wait_for_status(manager, task_id)).status.value == "success"
    assert seen.most == 2
    rows = [await manager.db.get_task(task_id) for task_id in ids]
    assert {row.limit_key for row in rows} == {"per_tenant:a", "per_tenant:b"}


@pytest.mark.anyio
async def test_held_tasks_start_in_priority_order(manager_factory):
    manager = manager_factory()
    seen = Running()

    @manager.task(concurrency=1)
    def one_at_a_time(label: str) -> None:
        seen.enter(label)
        seen.leave()
        if label == "first":
            assert seen.gate.wait(GATE_TIMEOUT)

    await manager.startup()
    first = await manager.enqueue(one_at_a_time, "first")
    await wait_until_async(lambda: seen.started == ["first"], what="the first task")
    ids = [first]
    for label, priority in [("low", 0), ("high", 10), ("mid", 5), ("low2", 0), ("top", 20)]:
        ids.append(await manager.enqueue(one_at_a_time, label, priority=priority))
    await wait_until_async(lambda: held(manager) == 5, what="five held tasks")
    seen.gate.set()
    for task_id in ids:
        assert (await wait_for_status(manager, task_id)).status.value == "success"
    assert seen.started == ["first", "top", "high", "mid", "low", "low2"]


@pytest.mark.anyio
async def test_rate_limit_spaces_the_starts_by_the_period(manager_factory):
    manager = manager_factory()

    @manager.task(rate_limit="2/s")
    def rated(n: int) -> int:
        return n

    await manager.startup()
    ids = [await manager.enqueue(rated, n) for n in range(5)]
    for task_id in ids:
        assert (await wait_for_status(manager, task_id, timeout=30)).status.value == "success"
    starts = sorted([(await manager.db.get_task(task_id)).started_at for task_id in ids])
    # Any second holds at most two starts: the third after a start is a period later.
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in zip(starts, starts[2:], strict=False)
    ]
    assert min(gaps) >= 1.0, gaps
    assert (starts[-1] - starts[0]).total_seconds() < 20  # held tasks did start again


@pytest.mark.anyio
async def test_a_retry_is_a_new_start_of_the_rate(manager_factory):
    manager = manager_factory()
    attempts: list[int] = []

    @manager.task(rate_limit="2/m", retries=2, delay=0)
    def flaky() -> None:
        attempts.append(len(attempts))
        raise RuntimeError("again")

    await manager.startup()
    task_id = await manager.enqueue(flaky)
    # Two starts fit in the minute; the third attempt waits for the window.
    await wait_until_async(lambda: len(attempts) == 2 and held(manager) == 1, what="held retry")
    row = await manager.db.get_task(task_id)
    assert (row.status, row.attempts) == ("pending", 2)


def test_bad_limits_are_refused_when_the_function_is_registered():
    manager = TaskManager()

    def work(n: int) -> None: ...

    for options, field in [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"rate_limit": "10"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit": "10/d"}, "rate_limit"),
        ({"rate_limit": " 10/s"}, "rate_limit"),
        ({"rate_limit": 10}, "rate_limit"),
        ({"limit_key": lambda n: n}, "limit_key"),  # no limit to apply it to
        ({"concurrency": 1, "limit_key": "tenant"}, "limit_key"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            manager.task(**options)(work)
        assert caught.value.field == field, options
        assert field in str(caught.value)
    assert "work" not in manager.registry


@pytest.mark.anyio
async def test_a_limit_key_that_fails_refuses_the_enqueue_and_stores_nothing(manager_factory):
    manager = manager_factory()

    @manager.task(concurrency=1, limit_key=lambda account: account["id"])
    def bill(account: dict[str, int]) -> None: ...

    await manager.startup()
    with pytest.raises(TaskArgumentError, match="limit_key of bill raised KeyError"):
        await manager.enqueue(bill, {})
    assert await manager.list_tasks() == []
    long_key = {"id": "x" * 400}
    task_id = await manager.enqueue(bill, long_key)
    stored = (await manager.db.get_task(task_id)).limit_key
    assert stored is not None and len(stored) <= 255 and stored.startswith("bill:xxx")


@pytest.mark.anyio
async def test_a_dynamic_schedule_firing_counts_against_its_key(manager_factory):
    manager = manager_factory()
    group = TaskGroup("tenants")

    @group.register_function(concurrency=1, limit_key=lambda tenant: tenant)
    async def sync_tenant(tenant: str) -> str:
        return tenant

    manager.add_task_group(group)
    await manager.startup()
    await group.add_dynamic_task_async(
        "sync_tenant", "0 9 * * *", kwargs={"tenant": "acme"}, name="acme-sync"
    )
    task_id = await manager.trigger_schedule("acme-sync")
    assert (await wait_for_status(manager, task_id)).result == "acme"
    assert (await manager.db.get_task(task_id)).limit_key == "tenants.sync_tenant:acme"


def test_the_task_page_says_which_limit_holds_a_pending_task(db_url):
    built = build(db_url)
    manager = built.manager
    gate = threading.Event()

    @manager.task(concurrency=1)
    def one_report(n: int) -> None:
        assert gate.wait(GATE_TIMEOUT)

    @manager.task(rate_limit="1/h")
    def hourly_mail(n: int) -> int:
        return n

    with TestClient(built.app) as client:
        first = call(client, manager.enqueue, one_report, 1)
        second = call(client, manager.enqueue, one_report, 2)
        wait_status(client, manager, first, "running")
        page = client.get(f"/tasks/dashboard/runs/{second}").text
        assert "Waiting: held by the concurrency limit of one_report (1 running)" in page
        sent = call(client, manager.enqueue, hourly_mail, 1)
        wait_status(client, manager, sent, "success")
        later = call(client, manager.enqueue, hourly_mail, 2)
        page = client.get(f"/tasks/dashboard/runs/{later}").text
        assert "Waiting: held by the rate limit of hourly_mail (1 started in the window)" in page
        assert "next start at" in page
        gate.set()
        assert wait_status(client, manager, second).status.value == "success"


# -- real processes --------------------------------------------------------------------


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Any:
    """Start ``tests/apps/limits_worker.py`` processes on the test database; any still
    alive at teardown are killed, and their output printed (shown when a test fails)."""
    started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, plan: str, expected: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TASKFLOW_DATABASE_URL": db_url,
            "LIMITS_DIR": str(tmp_path),
        }
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it
        command = [sys.executable, "-m", "tests.apps.limits_worker", name, plan, str(expected)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append((name, proc))
        return proc

    start.dir = tmp_path  # type: ignore[attr-defined]
    yield start
    for name, proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        print(f"===== {name} =====\n{(tmp_path / f'{name}.log').read_text(errors='replace')}")


def runs(directory: Path) -> dict[str, list[tuple[int, int, str]]]:
    """The ended runs of ``runs.log`` by limit: ``(start, end, pid)``, earliest first."""
    opened: dict[tuple[str, str], tuple[int, str]] = {}
    by_limit: dict[str, list[tuple[int, int, str]]] = {}
    path = directory / "runs.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        event, limit, label, pid, moment = line.split()
        if event == "start":
            opened[(limit, label)] = (int(moment), pid)
        else:
            begun, pid = opened.pop((limit, label))
            by_limit.setdefault(limit, []).append((begun, int(moment), pid))
    return {limit: sorted(found) for limit, found in by_limit.items()}


def assert_one_at_a_time(intervals: list[tuple[int, int, str]]) -> None:
    for (_, end, _), (start, _, _) in itertools.pairwise(intervals):
        assert start >= end, f"two runs overlapped: {intervals}"


def finish(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        assert proc.wait(90) == 0, "a worker process failed (its output is printed below)"


def test_two_processes_never_run_two_tasks_of_a_concurrency_one_function(workers):
    finish([workers("a", "serial:4", 2), workers("b", "serial:4", 2)])
    intervals = runs(workers.dir)["serial"]
    assert len(intervals) == 8
    assert_one_at_a_time(intervals)
    assert len({pid for _, _, pid in intervals}) == 2  # both processes ran some


def test_per_key_limits_hold_across_processes(workers):
    finish([workers("a", "tenants:3", 2), workers("b", "tenants:3", 2)])
    found = runs(workers.dir)
    for tenant in ("tenant-a", "tenant-b"):
        assert len(found[tenant]) == 6
        assert_one_at_a_time(found[tenant])
    pids = {pid for intervals in found.values() for _, _, pid in intervals}
    assert len(pids) == 2


@pytest.mark.anyio
async def test_kill_9_of_the_process_holding_the_slot_frees_it_after_takeover(
    manager_factory, workers
):
    hog = workers("a", "hog", 1)
    log = workers.dir / "runs.log"
    await wait_until_async(lambda: log.exists() and "hog" in log.read_text(), what="the hog")
    manager = manager_factory(heartbeat_interval=0.5, instance_timeout=2.0)

    @manager.task(concurrency=1, name="serial")
    def serial_here(label: str) -> str:
        return label

    await manager.startup()
    task_id = await manager.enqueue(serial_here, "after the crash")
    await wait_until_async(lambda: held(manager) == 1, what="the task held by the hog")
    hog_row = next(row for row in await manager.db.list_tasks(limit=None) if row.id != task_id)
    assert (hog_row.func_name, hog_row.status) == ("serial", "running")
    assert (await manager.get_task(task_id)).status.value == "pending"
    os.kill(hog.pid, signal.SIGKILL)
    hog.wait(10)
    done = await wait_for_status(manager, task_id, timeout=30)
    assert done.status.value == "success"
    settled = await manager.db.get_task(hog_row.id)
    assert settled.status == "interrupted"
    started = (await manager.db.get_task(task_id)).started_at
    assert started >= settled.finished_at
