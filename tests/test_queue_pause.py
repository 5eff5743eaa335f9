"""Paused queues: no process starts a paused queue's tasks, whether it enqueued them
itself or claims them; resuming starts them without a restart; on SQLite and
PostgreSQL, with one manager and with two on the same database."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from taskflow import ConfigurationError, TaskManager
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio

GATE = threading.Event()


@pytest.fixture(autouse=True)
def _closed_gate():
    GATE.clear()
    yield
    GATE.set()


def quick(n: int) -> int:
    return n


def held(n: int) -> int:
    """A thread task that runs until the test opens the gate."""
    assert GATE.wait(20), "the gate never opened"
    return n


def _manager(manager_factory, **kwargs) -> TaskManager:
    manager = manager_factory(queues=["default", "reports"], **kwargs)
    manager.task(queue="reports")(quick)
    manager.task(queue="reports")(held)
    return manager


def _parked(manager: TaskManager) -> set[str]:
    """Tasks this process holds back, not started."""
    dispatcher = manager._engine.runtime.dispatcher
    assert dispatcher is not None
    return dispatcher.waiting_ids()


async def _wait_paused(manager: TaskManager, *names: str, timeout: float = 10.0) -> None:
    """Wait until ``manager`` has read that exactly ``names`` are paused (its poll)."""
    deadline = time.monotonic() + timeout
    while set(manager._engine.queues.paused) != set(names):
        assert time.monotonic() < deadline, f"{manager.instance_id} never saw {names} paused"
        await _tick()


async def _tick() -> None:
    await asyncio.sleep(0.02)  # between two reads of what the manager has seen


async def test_a_paused_queue_starts_nothing_here_until_it_is_resumed(manager_factory):
    manager = _manager(manager_factory)
    await manager.startup()
    pause = await manager.pause_queue("reports", by="alice")
    assert pause["name"] == "reports" and pause["paused_by"] == "alice"
    assert [p["name"] for p in await manager.paused_queues()] == ["reports"]

    waiting = await manager.enqueue(quick, 1)  # stored, handed to this process, held back
    other = await manager.enqueue(quick, 2, queue="default")  # other queues run
    assert (await wait_for_status(manager, other)).status == "success"
    assert await manager.coordinator.claim_now() == 0
    assert (await manager.get_task(waiting)).status == "pending"
    assert waiting in _parked(manager)

    assert await manager.resume_queue("reports") is True
    assert (await wait_for_status(manager, waiting)).result == 1
    assert await manager.paused_queues() == []
    assert await manager.resume_queue("reports") is False


async def test_pausing_does_not_interrupt_a_running_task_and_keeps_the_first_pause(
    manager_factory,
):
    manager = _manager(manager_factory)
    await manager.startup()
    running = await manager.enqueue(held, 7)
    await wait_for_status(manager, running, "running")
    first = await manager.pause_queue("reports", by="alice")
    again = await manager.pause_queue("reports", by="bob")
    assert again == first  # who paused it first, and when, stay
    GATE.set()
    assert (await wait_for_status(manager, running)).status == "success"
    with pytest.raises(ConfigurationError):
        await manager.pause_queue("")


async def test_a_pause_survives_a_restart(manager_factory):
    first = _manager(manager_factory)
    await first.startup()
    await first.pause_queue("reports", by="alice")
    await first.shutdown()
    second = _manager(manager_factory)
    await second.startup()
    task_id = await second.enqueue(quick, 3)
    assert await second.coordinator.claim_now() == 0
    assert task_id in _parked(second)
    assert (await second.get_task(task_id)).status == "pending"
    await second.resume_queue("reports")
    assert (await wait_for_status(second, task_id)).status == "success"


async def test_another_manager_honours_a_pause_after_its_poll(manager_factory):
    one = _manager(manager_factory)
    two = _manager(manager_factory)
    web = manager_factory(queues=["default"])  # enqueues to "reports", runs none of it
    web.task(queue="reports")(quick)
    for manager in (one, two, web):
        await manager.startup()

    await two.pause_queue("reports", by="ops")
    await _wait_paused(one, "reports")
    claimable = await web.enqueue(quick, 1)  # unowned: only a claim could start it
    own = await one.enqueue(quick, 2)  # one's in-process fast path
    for manager in (one, two):
        assert await manager.coordinator.claim_now() == 0
    assert own in _parked(one)
    for task_id in (claimable, own):
        assert (await one.get_task(task_id)).status == "pending"

    await two.resume_queue("reports")  # one learns it at its next poll
    for task_id in (claimable, own):
        assert (await wait_for_status(one, task_id)).status == "success"
    await _wait_paused(one)
