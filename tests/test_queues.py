"""Named queues as fastapi-taskflow documents them: ``QueueConfig``, per-queue
concurrency, ``max_size`` back-pressure with ``QueueFullError`` and ``rejected``
records, ``queue_stats()`` and ``update_queue_config()``; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

import taskflow
from taskflow import ConfigurationError, QueueConfig, QueueFullError, TaskManager, UnknownQueue
from taskflow._engine.queues import meta_key
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio

GATES: dict[str, threading.Event] = defaultdict(threading.Event)
INSIDE: dict[str, int] = defaultdict(int)
MOST_INSIDE: dict[str, int] = defaultdict(int)
LOCK = threading.Lock()


@pytest.fixture(autouse=True)
def _fresh_gates():
    """Gates and counters start closed and at zero in each test (and each database)."""
    for state in (GATES, INSIDE, MOST_INSIDE):
        state.clear()
    yield
    for gate in GATES.values():  # let anything still blocked finish before shutdown
        gate.set()


def blocked(gate: str) -> str:
    """A thread task that waits until the test opens its gate."""
    with LOCK:
        INSIDE[gate.split(":")[0]] += 1
        group = gate.split(":")[0]
        MOST_INSIDE[group] = max(MOST_INSIDE[group], INSIDE[group])
    try:
        assert GATES[gate].wait(20), f"gate {gate} never opened"
    finally:
        with LOCK:
            INSIDE[gate.split(":")[0]] -= 1
    return gate


def quick(n: int) -> int:
    return n


def _register(manager: TaskManager, queue: str = "reports") -> None:
    manager.task(queue=queue)(blocked)
    manager.task(queue=queue)(quick)


async def _enqueue_waiting(manager: TaskManager, n: int, queue: str = "reports") -> str:
    """A task due now in ``queue``: it waits while no process serves the queue, or
    while the queue's concurrency is taken."""
    return await manager.enqueue(quick, n, queue=queue)


def _not_serving(manager: TaskManager, queue: str = "reports") -> None:
    """Keep ``queue``'s limits on ``manager`` but leave running it to other processes
    (a web process in front of workers), so its tasks wait."""
    manager.queues = tuple(name for name in manager.queues if name != queue)


# -- configuration forms (no database) ---------------------------------------------------


def test_dict_of_queue_configs_serves_those_queues_and_default():
    manager = TaskManager(
        queues={"email": QueueConfig(concurrency=30, max_size=500), "reports": QueueConfig(4)}
    )
    assert manager.queues == ("email", "reports", "default")
    assert manager.queue_configs["email"] == QueueConfig(concurrency=30, max_size=500)
    assert manager.queue_configs["reports"].concurrency == 4
    assert manager.queue_configs["default"] == QueueConfig()


def test_list_of_names_keeps_its_meaning_and_max_size_is_the_default_queues():
    assert TaskManager(queues=["a", "b"]).queues == ("a", "b")
    manager = TaskManager(max_size=1000)
    assert manager.queues == ("default",)
    assert manager.queue_configs["default"].max_size == 1000
    own = TaskManager(queues={"default": QueueConfig(max_size=5)}, max_size=1000)
    assert own.queue_configs["default"].max_size == 5


def test_queue_config_defaults_and_compat_import_paths():
    from taskflow.exceptions import QueueFullError as FromExceptions
    from taskflow.models import QueueConfig as FromModels

    assert FromModels is QueueConfig and FromExceptions is QueueFullError
    assert QueueConfig() == QueueConfig(concurrency=None, max_size=None)
    assert issubclass(QueueFullError, taskflow.TaskflowError)
    assert issubclass(QueueFullError, RuntimeError)
    assert taskflow.TaskStatus.REJECTED == "rejected" and taskflow.TaskStatus.REJECTED.is_final


@pytest.mark.parametrize(
    "make",
    [
        lambda: QueueConfig(concurrency=0),
        lambda: QueueConfig(max_size=-1),
        lambda: QueueConfig(max_size=True),
        lambda: TaskManager(queues={"x": {"concurrency": 2}}),
        lambda: TaskManager(queues={"": QueueConfig()}),
        lambda: TaskManager(queues="default"),
        lambda: TaskManager(max_size=0),
    ],
)
def test_invalid_queue_configs_are_refused(make):
    with pytest.raises(ConfigurationError):
        make()


# -- back-pressure ------------------------------------------------------------------------


async def test_full_queue_raises_records_rejected_and_accepts_after_a_task_finishes(
    manager_factory,
):
    manager = manager_factory(queues={"reports": QueueConfig(concurrency=1, max_size=2)})
    _register(manager)
    await manager.startup()
    first = await manager.enqueue(blocked, "full:1")
    await wait_for_status(manager, first, "running")
    second = await manager.enqueue(blocked, "full:2")
    third = await manager.enqueue(blocked, "full:3")

    with pytest.raises(QueueFullError) as caught:
        await manager.enqueue(quick, 4)
    error = caught.value
    assert str(error) == (
        "queue 'reports' is full: 2 tasks waiting, max_size is 2; the task was stored as rejected"
    )
    assert (error.queue, error.size, error.limit) == ("reports", 2, 2)
    rejected = await wait_for_status(manager, error.task_id, "rejected")
    assert rejected.args == (4,) and rejected.queue == "reports"
    assert rejected.error == str(error)

    GATES["full:1"].set()
    await wait_for_status(manager, first, "success")
    await wait_for_status(manager, second, "running")
    accepted = await manager.enqueue(quick, 5)
    for gate in ("full:2", "full:3"):
        GATES[gate].set()
    for task_id in (second, third, accepted):
        assert (await wait_for_status(manager, task_id)).status == "success"
    assert MOST_INSIDE["full"] == 1  # concurrency=1 held throughout


async def test_queues_without_max_size_are_not_counted(manager_factory):
    manager = manager_factory(queues={"reports": QueueConfig(max_size=1)})
    _register(manager, queue="default")
    await manager.startup()
    counted: list[str] = []
    manager._engine.runtime.bridge.call(
        lambda store: _spy_on(store, counted)
    )  # where the count runs
    for n in range(3):
        await manager.enqueue(quick, n, defer=3600)
    assert counted == []
    await _enqueue_waiting(manager, 1)
    assert counted == ["reports"]


async def _spy_on(store: Any, counted: list[str]) -> None:
    original = store.count_waiting

    async def spy(queue: str, *, now: Any) -> int:
        counted.append(queue)
        return await original(queue, now=now)

    store.count_waiting = spy


async def test_tasks_deferred_to_later_do_not_fill_the_queue(manager_factory):
    """A one-off firing or a deferred task is not waiting to run yet: a queue full of
    them still takes work that is due now."""
    manager = manager_factory(queues={"reports": QueueConfig(max_size=1)})
    _register(manager)
    await manager.startup()
    later = datetime.now(UTC) + timedelta(hours=1)
    await manager.schedule_once(quick, 1, run_at=later, run_key="later:1")
    deferred = await manager.enqueue(quick, 2, defer=3600)
    due = await manager.enqueue(quick, 3)
    assert (await wait_for_status(manager, due)).status == "success"
    assert (await manager.get_task(deferred)).status == "pending"


async def test_the_limit_holds_across_two_managers(manager_factory):
    config = {"reports": QueueConfig(max_size=2)}
    one, two = manager_factory(queues=config), manager_factory(queues=config)
    for manager in (one, two):
        _not_serving(manager)
        _register(manager)
        await manager.startup()
    first = await _enqueue_waiting(one, 1)
    await _enqueue_waiting(two, 2)
    for manager in (one, two):
        with pytest.raises(QueueFullError, match="2 tasks waiting, max_size is 2"):
            await _enqueue_waiting(manager, 3)
    assert await one.cancel(first)
    assert await _enqueue_waiting(two, 4)
    with pytest.raises(QueueFullError):
        await _enqueue_waiting(one, 5)


async def test_idempotency_key_returns_the_existing_task_even_when_full(manager_factory):
    manager = manager_factory(queues={"reports": QueueConfig(max_size=1)})
    _not_serving(manager)
    _register(manager)
    await manager.startup()
    held = await manager.enqueue(quick, 1, queue="reports", idempotency_key="k")
    again = await manager.enqueue(quick, 1, queue="reports", idempotency_key="k")
    assert again == held
    with pytest.raises(QueueFullError) as caught:
        await manager.enqueue(quick, 2, queue="reports", idempotency_key="other")
    record = await wait_for_status(manager, caught.value.task_id, "rejected")
    assert record.idempotency_key is None  # the key stays free for a later attempt


def tick() -> str:
    return "tick"


async def _first(manager: TaskManager, status: str, *, after: Any = None) -> Any:
    """The first ``tick`` task in ``status`` (created after ``after``), polled for."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            task
            for task in await manager.list_tasks(status=status)
            if task.func_name == "tick" and (after is None or task.created_at > after)
        ]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {status} scheduled task"
        await asyncio.sleep(0.02)


async def test_a_schedule_slot_into_a_full_queue_is_rejected_and_the_next_one_runs(
    manager_factory,
):
    # One task of the queue runs at a time and two may wait: while "slot:1" holds the
    # slot, the schedule's next two slots wait behind it and the third is rejected.
    # (Before "slot:1" starts, slots run at once, so they never fill the queue.)
    manager = manager_factory(queues={"reports": QueueConfig(concurrency=1, max_size=2)})
    _register(manager)
    manager.schedule(every=0.2, queue="reports")(tick)
    await manager.startup()
    running = await manager.enqueue(blocked, "slot:1")
    await wait_for_status(manager, running, "running")
    rejected = await _first(manager, "rejected")
    assert rejected.source == "scheduled"
    assert "queue 'reports' is full: 2 tasks waiting" in rejected.error
    GATES["slot:1"].set()
    freed_at = (await wait_for_status(manager, running, "success")).end_time
    assert (await _first(manager, "success", after=freed_at)).source == "scheduled"


# -- queue_stats and update_queue_config ----------------------------------------------------


async def test_queue_stats_counts_from_the_database(manager_factory):
    manager = manager_factory(
        queues={
            "email": QueueConfig(concurrency=30, max_size=500),
            "reports": QueueConfig(concurrency=4, max_size=1),
        }
    )
    _not_serving(manager)
    _register(manager, queue="email")
    await manager.startup()
    done = await manager.enqueue(quick, 1)
    await wait_for_status(manager, done, "success")
    await _enqueue_waiting(manager, 2)
    with pytest.raises(QueueFullError) as caught:
        await _enqueue_waiting(manager, 3)
    await wait_for_status(manager, caught.value.task_id, "rejected")

    stats = manager.queue_stats()
    assert stats == [
        {
            "name": "default",
            "concurrency": None,
            "max_size": None,
            "pending": 0,
            "running": 0,
            "finished": 0,
            "rejected": 0,
        },
        {
            "name": "email",
            "concurrency": 30,
            "max_size": 500,
            "pending": 0,
            "running": 0,
            "finished": 1,
            "rejected": 0,
        },
        {
            "name": "reports",
            "concurrency": 4,
            "max_size": 1,
            "pending": 1,
            "running": 0,
            "finished": 0,
            "rejected": 1,
        },
    ]


async def test_update_queue_config_applies_at_once_and_survives_a_restart(
    manager_factory,
):
    manager = manager_factory(queues={"reports": QueueConfig(concurrency=1, max_size=2)})
    _register(manager)
    await manager.startup()
    first = await manager.enqueue(blocked, "update:1")
    await wait_for_status(manager, first, "running")
    second = await manager.enqueue(blocked, "update:2")
    await _enqueue_waiting(manager, 3)
    with pytest.raises(QueueFullError):
        await _enqueue_waiting(manager, 4)

    # From a thread, as a sync route would call it.
    stats = await asyncio.to_thread(manager.update_queue_config, "reports", 2, 5)
    assert stats["concurrency"] == 2 and stats["max_size"] == 5
    assert stats["rejected"] >= 0 and set(stats) >= {"pending", "running", "finished"}
    await wait_for_status(manager, second, "running")  # the second slot opened at once
    assert await _enqueue_waiting(manager, 5)

    with pytest.raises(UnknownQueue) as unknown:
        manager.update_queue_config("nope", concurrency=1, max_size=None)
    assert isinstance(unknown.value, KeyError) and "nope" in str(unknown.value)
    with pytest.raises(ConfigurationError):
        manager.update_queue_config("reports", concurrency=0, max_size=None)

    deadline = time.monotonic() + 10
    while await manager.db.get_meta(meta_key("reports")) is None:
        assert time.monotonic() < deadline, "the new config was never stored"
        await asyncio.sleep(0.02)
    GATES["update:1"].set()
    GATES["update:2"].set()
    await manager.shutdown()
    restarted = manager_factory(queues={"reports": QueueConfig(concurrency=1, max_size=2)})
    await restarted.startup()
    assert restarted.queue_configs["reports"] == QueueConfig(concurrency=2, max_size=5)


# -- the fastapi-taskflow guide's example, with only the import changed -----------------------

REPORTS_STARTED = threading.Semaphore(0)
REPORTS_GATE = threading.Event()


class _Gateway:
    sent: list[str] = []

    async def send(self, phone: str) -> None:
        self.sent.append(phone)


sms_gateway = _Gateway()


def build_report(user_id: int) -> None:
    REPORTS_STARTED.release()
    assert REPORTS_GATE.wait(20)


def _guide_app(db_url: str) -> Any:
    """The "Full example" of fastapi-taskflow's named-queues guide, verbatim but for
    ``fastapi_taskflow`` → ``taskflow`` and the test database in place of
    ``snapshot_db="tasks.db"``."""
    from fastapi import Depends, FastAPI, HTTPException

    from taskflow import ManagedBackgroundTasks, QueueFullError, TaskAdmin, TaskManager
    from taskflow.models import QueueConfig

    task_manager = TaskManager(
        snapshot_backend=db_url,
        queues={
            "email": QueueConfig(concurrency=30, max_size=500),
            "reports": QueueConfig(concurrency=4, max_size=50),
        },
    )
    app = FastAPI()
    TaskAdmin(app, task_manager)

    @task_manager.task(retries=3, queue="email", priority=9)
    async def send_otp(phone: str) -> None:
        await sms_gateway.send(phone)

    @task_manager.task(retries=1, queue="reports")
    def generate_report(user_id: int) -> None:
        build_report(user_id)

    @app.post("/otp")
    async def otp(
        phone: str,
        tasks: ManagedBackgroundTasks = Depends(task_manager.background_tasks),
    ):
        task_id = tasks.add_task(send_otp, phone)
        return {"task_id": task_id}

    @app.post("/report")
    async def request_report(
        user_id: int,
        tasks: ManagedBackgroundTasks = Depends(task_manager.background_tasks),
    ):
        try:
            task_id = tasks.add_task(generate_report, user_id)
        except QueueFullError:
            raise HTTPException(status_code=429, detail="Report queue is full")  # noqa: B904
        return {"task_id": task_id}

    # Not in the guide: the same in a sync route (add_task runs off the event loop).
    @app.post("/sync-report")
    def sync_report(
        user_id: int,
        tasks: ManagedBackgroundTasks = Depends(task_manager.background_tasks),
    ):
        try:
            return {"task_id": tasks.add_task(generate_report, user_id, queue="reports")}
        except QueueFullError as exc:
            raise HTTPException(status_code=429, detail=str(exc)) from None

    return app, task_manager


def _status(client: TestClient, task_id: str, *wanted: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        body = client.get(f"/tasks/{task_id}").json()
        if body.get("status") in wanted:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def test_the_guides_full_example_with_only_the_import_changed(db_url):
    REPORTS_GATE.clear()
    while REPORTS_STARTED.acquire(blocking=False):
        pass
    app, task_manager = _guide_app(db_url)
    with TestClient(app) as client:
        otp_id = client.post("/otp", params={"phone": "+1555"}).json()["task_id"]
        assert _status(client, otp_id, "success")["queue"] == "email"

        ids = [client.post("/report", params={"user_id": i}).json()["task_id"] for i in range(4)]
        for _ in range(4):  # the four concurrency slots are taken
            assert REPORTS_STARTED.acquire(timeout=10)
        for i in range(50):
            assert client.post("/report", params={"user_id": 100 + i}).status_code == 200
        full = client.post("/report", params={"user_id": 999})
        assert full.status_code == 429
        assert full.json() == {"detail": "Report queue is full"}
        sync_full = client.post("/sync-report", params={"user_id": 998})
        assert sync_full.status_code == 429
        assert "50 tasks waiting, max_size is 50" in sync_full.json()["detail"]
        rejected = client.get("/tasks", params={"status": "rejected"}).json()
        assert len(rejected) == 2
        assert {task["queue"] for task in rejected} == {"reports"}
        assert all("max_size is 50" in task["error"] for task in rejected)
        stats = {s["name"]: s for s in task_manager.queue_stats()}
        assert stats["reports"]["running"] == 4
        assert stats["reports"]["pending"] == 50
        assert stats["reports"]["rejected"] == 2
        assert client.get("/tasks/queues").json() == task_manager.queue_stats()
        assert client.get("/tasks/metrics").json()["rejected"] == 2
        runs = client.get("/tasks/dashboard/runs", params={"status": "rejected"})
        assert runs.status_code == 200 and runs.text.count('class="badge st-rejected"') == 2
        overview = client.get("/tasks/dashboard/")
        assert overview.status_code == 200 and "count st-rejected" in overview.text

        # PATCH /tasks/queues/{name}: a missing field keeps its value.
        patched = client.patch("/tasks/queues/reports", json={"max_size": 51})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["concurrency"], patched.json()["max_size"]) == (4, 51)
        assert client.post("/report", params={"user_id": 51}).status_code == 200
        assert client.post("/report", params={"user_id": 52}).status_code == 429
        assert client.patch("/tasks/queues/nope", json={"max_size": 1}).status_code == 404
        bad = client.patch("/tasks/queues/reports", json={"concurrency": 0})
        assert bad.status_code == 422

        REPORTS_GATE.set()
        _status(client, ids[0], "success")
        deadline = time.monotonic() + 20
        while task_manager.queue_stats()[2]["finished"] < 55:
            assert time.monotonic() < deadline, task_manager.queue_stats()
            time.sleep(0.05)
        assert client.post("/report", params={"user_id": 1000}).status_code == 200
