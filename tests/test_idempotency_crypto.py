"""Idempotency keys enforced by the database, and encryption at rest."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import TaskManager
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio


async def test_same_key_returns_the_existing_task(manager_factory):
    manager = manager_factory()
    manager.task()(app_tasks.add)
    await manager.startup()
    first = await manager.enqueue(app_tasks.add, 1, 2, idempotency_key="invoice-1")
    second = await manager.enqueue(app_tasks.add, 1, 2, idempotency_key="invoice-1")
    assert first == second
    await wait_for_status(manager, first)
    third = await manager.enqueue(app_tasks.add, 1, 2, idempotency_key="invoice-1")
    assert third == first  # a successful task keeps its key
    assert len(await manager.list_tasks()) == 1


async def test_key_is_free_again_after_failure(manager_factory):
    manager = manager_factory()

    @manager.task()
    async def boom() -> None:
        raise RuntimeError("no")

    await manager.startup()
    first = await manager.enqueue(boom, idempotency_key="k")
    await wait_for_status(manager, first)
    second = await manager.enqueue(boom, idempotency_key="k")
    assert second != first


async def test_two_managers_racing_on_one_key_store_one_task(manager_factory):
    managers = [manager_factory(), manager_factory()]
    for manager in managers:
        manager.task()(app_tasks.add)
        await manager.startup()
    ids = await asyncio.gather(
        *[managers[i % 2].enqueue(app_tasks.add, i, 0, idempotency_key="race") for i in range(20)]
    )
    assert len(set(ids)) == 1
    assert len(await managers[0].list_tasks()) == 1


async def _raw_rows(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT payload, result FROM taskflow_tasks"))
            return [f"{row.payload} {row.result}" for row in rows]
    finally:
        await engine.dispose()


async def test_arguments_and_results_are_encrypted_at_rest(manager_factory, db_url):
    key = Fernet.generate_key()
    manager = manager_factory(encrypt_args_key=key)

    @manager.task()
    async def secret(card: str) -> str:
        return f"charged {card}"

    await manager.startup()
    record = await wait_for_status(manager, await manager.enqueue(secret, "4111-1111"))
    assert record.result == "charged 4111-1111"
    assert record.args == ("4111-1111",)
    raw = await _raw_rows(db_url)
    assert raw and all("4111" not in row for row in raw)
    assert manager.fernet is not None


async def test_key_rotation_keeps_old_tasks_readable(manager_factory):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    writer = manager_factory(encrypt_args_key=old)
    writer.task()(app_tasks.add)
    await writer.startup()
    task_id = await writer.enqueue(app_tasks.add, 20, 22)
    await wait_for_status(writer, task_id)
    await writer.shutdown()
    reader = manager_factory(encrypt_args_key=[new, old])
    await reader.startup()
    record = await reader.get_task(task_id)
    assert (record.args, record.result) == ((20, 22), 42)


async def test_wrong_key_fails_only_that_task(manager_factory, db_url):
    writer = manager_factory(encrypt_args_key=Fernet.generate_key())
    writer.task()(app_tasks.add)
    await writer.startup()
    row_id = await _insert_held(writer)
    await writer.shutdown()  # leaves the task pending and unowned
    runner = manager_factory(encrypt_args_key=Fernet.generate_key())
    runner.task()(app_tasks.add)
    await runner.startup()
    record = await wait_for_status(runner, row_id)
    assert record.status == "failed"
    assert record.error.startswith("DecryptionError")
    assert record.attempts == 1
    fine = await runner.enqueue(app_tasks.add, 1, 1)
    assert (await wait_for_status(runner, fine)).result == 2


async def _insert_held(manager: TaskManager) -> str:
    """Store a task without letting it start (as a request that never finished would)."""
    task_id, write, _ = manager.submit(app_tasks.add, (1, 2), {})
    await write
    return task_id


def test_invalid_key_is_a_clear_error():
    with pytest.raises(ValueError, match="key"):
        TaskManager(encrypt_args_key="not-a-fernet-key")
