"""taskflow.testing as users use it: a FastAPI app under TestClient (and async tests),
tasks held or run inline, assertions on what was enqueued, drain and time travel."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from taskflow import ConfigurationError, ManagedBackgroundTasks, TaskManager
from taskflow.testing import TaskTesting

CALLS: list[str] = []
FLAKY: Counter[str] = Counter()


def send_welcome(email: str, *, plan: str = "free") -> str:
    CALLS.append(f"welcome {email} {plan}")
    return f"sent {email}"


def flaky(key: str) -> str:
    FLAKY[key] += 1
    if FLAKY[key] < 3:
        raise RuntimeError(f"attempt {FLAKY[key]} fails")
    return "third time"


async def first_step(order: str) -> None:
    CALLS.append(f"first {order}")
    await MANAGERS[-1].enqueue(second_step, order)


async def second_step(order: str) -> None:
    CALLS.append(f"second {order}")


def tick() -> None:
    CALLS.append("tick")


def hourly() -> None:
    CALLS.append("hourly")


MANAGERS: list[TaskManager] = []


def build(db_url: str) -> tuple[FastAPI, TaskManager]:
    manager = TaskManager(database_url=db_url, poll_interval=0.05)
    MANAGERS.append(manager)
    manager.task()(send_welcome)
    manager.task(retries=2, delay=3600)(flaky)
    manager.task()(first_step)
    manager.task()(second_step)
    manager.schedule(every=600, name="tick")(tick)
    manager.schedule(cron="0 * * * *", name="hourly")(hourly)
    app = FastAPI()
    manager.init_app(app)

    @app.post("/signup")
    def signup(
        email: str, background_tasks: ManagedBackgroundTasks = Depends(manager.get_tasks)
    ) -> dict[str, str]:
        background_tasks.add_task(send_welcome, email, plan="pro")
        return {"ok": email}

    return app, manager


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()
    FLAKY.clear()


def test_held_tasks_wait_for_drain(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager) as tasks, TestClient(app) as client:
        assert client.post("/signup", params={"email": "a@x.io"}).json() == {"ok": "a@x.io"}
        record = tasks.assert_enqueued(send_welcome, args=("a@x.io",), kwargs={"plan": "pro"})
        assert record.status == "pending" and CALLS == []
        tasks.assert_not_enqueued(send_welcome, args=("b@x.io",))
        [ran] = tasks.drain()
        assert (ran.task_id, ran.status, ran.result) == (record.task_id, "success", "sent a@x.io")
        assert CALLS == ["welcome a@x.io pro"]
        assert tasks.drain() == []


def test_assertion_messages_say_what_was_enqueued(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager) as tasks, TestClient(app) as client:
        with pytest.raises(AssertionError, match="nothing was enqueued"):
            tasks.assert_enqueued(send_welcome)
        client.post("/signup", params={"email": "a@x.io"})
        with pytest.raises(AssertionError, match=r"send_welcome\('a@x.io', plan='pro'\)"):
            tasks.assert_enqueued(send_welcome, args=("z@x.io",))
        with pytest.raises(AssertionError, match="was enqueued"):
            tasks.assert_not_enqueued(send_welcome, kwargs={"plan": "pro"})
        with pytest.raises(ConfigurationError, match="not a task function"):
            tasks.assert_enqueued(lambda: None)


def test_drain_runs_retries_without_their_delay_and_what_tasks_enqueue(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager) as tasks, TestClient(app):
        portal_enqueue(manager, flaky, "k")
        portal_enqueue(manager, first_step, "o-1")
        ran = {record.func_name: record for record in tasks.drain()}
        assert (ran["flaky"].status, ran["flaky"].attempts, ran["flaky"].result) == (
            "success",
            3,
            "third time",
        )
        assert ran["second_step"].status == "success"
        assert CALLS == ["first o-1", "second o-1"]


def test_inline_tasks_start_at_once(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager, mode="inline") as tasks, TestClient(app) as client:
        client.post("/signup", params={"email": "a@x.io"})
        [ran] = tasks.drain()
        assert ran.status == "success"
        assert CALLS == ["welcome a@x.io pro"]
        assert tasks.assert_enqueued(send_welcome).status == "success"
        assert tasks._unreported == {}  # reported once, then forgotten


def test_drain_forgets_what_it_reported(db_url: str) -> None:
    # The ids drain() reports and the jobs it holds are kept only until it reports them,
    # so a long test (or one in inline mode) does not accumulate them.
    app, manager = build(db_url)
    runtime = manager._engine.runtime
    with TaskTesting(manager) as tasks, TestClient(app) as client:
        for n in range(3):
            client.post("/signup", params={"email": f"{n}@x.io"})
            enqueued = tasks.assert_enqueued(send_welcome, args=(f"{n}@x.io",))
            assert list(runtime.kept) == [enqueued.task_id]
            assert [record.task_id for record in tasks.drain()] == [enqueued.task_id]
            assert tasks._unreported == {} and not runtime.kept
        fired = tasks.advance(minutes=10)
        assert fired and tasks._fired is None
        assert sorted(record.task_id for record in tasks.drain()) == sorted(fired)
        assert tasks._unreported == {} and not runtime.kept


def test_advance_fires_each_slot_in_the_window_once(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager) as tasks, TestClient(app):
        assert tasks.advance(seconds=1) == []
        fired = tasks.advance(hours=3)
        assert len(tasks.enqueued(tick)) == 18  # every 600 s
        assert len(tasks.enqueued(hourly)) == 3  # at minute 0 of each hour
        assert len(fired) == 21
        assert len(tasks.drain()) == 21
        assert Counter(CALLS) == {"tick": 18, "hourly": 3}
        tasks.advance(minutes=10)
        assert len(tasks.enqueued(tick)) == 19


def test_deferred_tasks_become_due_when_the_clock_moves(db_url: str) -> None:
    app, manager = build(db_url)
    with TaskTesting(manager) as tasks, TestClient(app):
        before = tasks.now
        portal_enqueue(manager, send_welcome, "later@x.io", defer=3600)
        assert tasks.drain() == []
        tasks.advance(hours=1)  # the schedules' slots in that hour fire too
        assert tasks.now - before >= timedelta(hours=1)
        [ran] = [record for record in tasks.drain() if record.func_name == "send_welcome"]
        assert (ran.status, ran.result) == ("success", "sent later@x.io")


@pytest.mark.anyio
async def test_async_tests_await_the_async_forms(manager_factory) -> None:
    manager = manager_factory()
    manager.task()(send_welcome)
    manager.schedule(every=60, name="tick")(tick)
    async with TaskTesting(manager) as tasks:
        await manager.startup()
        task_id = await manager.enqueue(send_welcome, "a@x.io")
        assert tasks.assert_enqueued(send_welcome).task_id == task_id
        with pytest.raises(RuntimeError, match="drain_async"):
            tasks.drain()
        assert len(await tasks.advance_async(minutes=5)) == 5
        ran = await tasks.drain_async()
        assert [r.func_name for r in ran].count("tick") == 5
        assert all(r.status == "success" for r in ran)
        await manager.shutdown()


@pytest.mark.anyio
async def test_test_mode_is_set_before_start_and_left_cleanly(manager_factory) -> None:
    manager = manager_factory()
    manager.task()(send_welcome)
    with pytest.raises(ConfigurationError, match="mode"):
        TaskTesting(manager, mode="eager")  # type: ignore[arg-type]
    tasks = TaskTesting(manager)
    with pytest.raises(ConfigurationError, match="already has"):
        TaskTesting(manager)
    await manager.startup()
    with pytest.raises(ConfigurationError, match="before the manager starts"):
        TaskTesting(manager)
    await tasks.advance_async(hours=2)
    assert tasks.now - datetime.now(UTC) > timedelta(hours=1)
    tasks.close()
    assert abs(tasks.now - datetime.now(UTC)) < timedelta(minutes=1)  # the real clock again
    await manager.enqueue(send_welcome, "after@x.io")  # starts at once again
    await _wait_for(lambda: "welcome after@x.io free" in CALLS)
    await manager.shutdown()


async def _wait_for(condition) -> None:
    import anyio

    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)


def portal_enqueue(manager: TaskManager, func, *args, **kwargs) -> str:
    """``await manager.enqueue(...)`` from the test's thread (TestClient runs the app's
    event loop in another thread)."""
    import asyncio

    loop = manager._engine.runtime.loop
    assert loop is not None
    coro = manager.enqueue(func, *args, **kwargs)
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)
