"""Limits and faults: oversized arguments, results and logs; a crashing worker process."""

from __future__ import annotations

import pytest

from taskflow import TaskArgumentError, task_log
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio


async def test_oversized_arguments_are_refused_and_nothing_is_stored(manager_factory):
    manager = manager_factory(max_payload_bytes=1000)
    manager.task()(app_tasks.add)
    await manager.startup()
    with pytest.raises(TaskArgumentError, match="over the limit of 1000"):
        await manager.enqueue(app_tasks.add, "x" * 2000, "y")
    assert await manager.list_tasks() == []


async def test_oversized_result_fails_the_task(manager_factory):
    manager = manager_factory(max_payload_bytes=1000)

    @manager.task()
    async def big() -> str:
        return "z" * 5000

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(big))
    assert record.status == "failed"
    assert "result" in record.error and "over the limit" in record.error


async def test_log_lines_are_truncated_and_capped(manager_factory):
    manager = manager_factory(max_log_message_chars=20, max_log_lines_per_task=5)

    @manager.task()
    async def chatty() -> None:
        task_log("a" * 50)
        for i in range(100):
            task_log(f"line {i}")

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(chatty))
    messages = [line.message for line in record.logs]
    assert messages[0] == "a" * 20 + "… [truncated 30 characters]"
    assert len(messages) == 6
    assert messages[-1] == "log limit of 5 lines reached; later lines dropped"


async def test_a_crashing_worker_process_fails_its_task_and_the_pool_recovers(manager_factory):
    manager = manager_factory(max_process_workers=1)
    manager.task(executor="process")(app_tasks.exit_abruptly)
    manager.task(executor="process")(app_tasks.process_info)
    await manager.startup()
    crashed = await wait_for_status(
        manager, await manager.enqueue(app_tasks.exit_abruptly), timeout=60
    )
    assert crashed.status == "failed"
    assert "worker process" in crashed.error
    fine = await wait_for_status(
        manager, await manager.enqueue(app_tasks.process_info, 2), timeout=60
    )
    assert (fine.status, fine.result["value"]) == ("success", 4)
