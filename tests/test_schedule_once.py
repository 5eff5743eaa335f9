"""One-off scheduled tasks (fastapi-taskflow's ``schedule_once``): durable pending
firings, replaced by ``run_key``, cancelled, listed, surviving restarts and races."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import ScheduledOnce, TaskManager
from taskflow.errors import ScheduleError, TaskArgumentError, UnknownTaskFunction
from tests.conftest import wait_for_status

SOON = 1.0  # seconds ahead: far enough to see the firing pending first


async def wait_for_calls(calls: list[Any], count: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(calls) < count:
        assert time.monotonic() < deadline, f"{len(calls)} of {count} calls: {calls}"
        await asyncio.sleep(0.02)


async def only_record(manager: TaskManager, func_name: str) -> Any:
    """The single task of ``func_name``, once it is final (fails on a second one)."""
    [record] = await manager.list_tasks(func_name=func_name)
    return await wait_for_status(manager, record.task_id)


async def execute(url: str, statement: str, **params: Any) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), params)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_fires_at_run_at_as_a_scheduled_task(manager_factory):
    manager = manager_factory()
    calls: list[tuple[str, str, datetime]] = []

    @manager.task()
    async def settle(listing: str, *, channel: str) -> str:
        calls.append((listing, channel, datetime.now(UTC)))
        return f"settled {listing}"

    await manager.startup()
    run_at = datetime.now(UTC) + timedelta(seconds=SOON)
    result = await manager.schedule_once(
        settle, "L1", channel="sms", run_at=run_at, run_key="close:L1", tags={"kind": "close"}
    )
    assert result is None
    [pending] = await manager.list_scheduled()
    assert (pending.run_key, pending.func_name, pending.fire_at) == ("close:L1", "settle", run_at)
    record = await only_record(manager, "settle")
    assert record.status.value == "success" and record.result == "settled L1"
    assert record.source == "scheduled" and record.tags == {"kind": "close"}
    assert calls[0][:2] == ("L1", "sms") and calls[0][2] >= run_at
    assert record.start_time >= run_at
    assert await manager.list_scheduled() == []
    assert await manager.cancel_scheduled("close:L1") is False  # it fired already


@pytest.fixture
def far_from_utc(monkeypatch):
    """Local time 5.5 hours ahead of UTC, so reading naive times as local would show."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.anyio
async def test_naive_run_at_is_utc_and_a_past_one_fires_at_once(manager_factory, far_from_utc):
    manager = manager_factory()
    calls: list[int] = []

    @manager.task()
    def late(n: int) -> None:
        calls.append(n)

    await manager.startup()
    naive_future = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    await manager.schedule_once(late, 1, run_at=naive_future, run_key="late")
    [entry] = await manager.list_scheduled()
    assert entry.fire_at == naive_future.replace(tzinfo=UTC)
    naive_past = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    await manager.schedule_once(late, 2, run_at=naive_past, run_key="late")
    record = await only_record(manager, "late")
    assert record.status.value == "success" and calls == [2]


@pytest.mark.anyio
async def test_same_run_key_replaces_the_pending_firing(manager_factory):
    manager = manager_factory()
    calls: list[str] = []

    @manager.task()
    async def auto_complete(transaction: str, note: str) -> None:
        calls.append(note)

    await manager.startup()
    now = datetime.now(UTC)
    first, later = now + timedelta(seconds=SOON + 0.5), now + timedelta(seconds=SOON + 1)
    await manager.schedule_once(auto_complete, "T1", "first", run_at=first, run_key="ac:T1")
    await manager.schedule_once(auto_complete, "T1", "moved", run_at=later, run_key="ac:T1")
    [pending] = await manager.list_scheduled()
    assert pending.fire_at == later and pending.args == ("T1", "moved")
    record = await only_record(manager, "auto_complete")  # one task, not two
    assert record.status.value == "success" and calls == ["moved"]
    assert record.start_time >= later


@pytest.mark.anyio
async def test_cancel_removes_the_pending_firing(manager_factory):
    manager = manager_factory()

    @manager.task()
    async def remind(patient: str) -> None:
        return None

    await manager.startup()
    run_at = datetime.now(UTC) + timedelta(hours=24)
    await manager.schedule_once(remind, "p1", run_at=run_at, run_key="reminder:1")
    await manager.schedule_once(remind, "p2", run_at=run_at, run_key="reminder:2")
    assert await manager.cancel_scheduled("reminder:1") is True
    assert await manager.cancel_scheduled("reminder:1") is False
    assert await manager.cancel_scheduled("never-scheduled") is False
    assert [entry.run_key for entry in await manager.list_scheduled()] == ["reminder:2"]
    [left] = await manager.list_tasks(func_name="remind")
    assert left.args == ("p2",)


@pytest.mark.anyio
async def test_list_scheduled_fields_order_and_before(manager_factory):
    manager = manager_factory()

    @manager.task(queue="mail")
    async def send(to: str, *, subject: str) -> None:
        return None

    await manager.startup()
    now = datetime.now(UTC).replace(microsecond=0)
    for hours in (3, 1, 2):
        await manager.schedule_once(
            send,
            f"u{hours}",
            subject="hi",
            run_at=now + timedelta(hours=hours),
            run_key=f"mail:{hours}",
            idempotency_key=f"sent:{hours}",
            tags={"h": str(hours)},
            priority=hours,
        )
    entries = await manager.list_scheduled()
    assert [entry.run_key for entry in entries] == ["mail:1", "mail:2", "mail:3"]
    first = entries[0]
    assert isinstance(first, ScheduledOnce)
    assert (first.func_name, first.args, first.kwargs) == ("send", ("u1",), {"subject": "hi"})
    assert (first.queue, first.priority, first.idempotency_key) == ("mail", 1, "sent:1")
    assert first.tags == {"h": "1"} and first.encrypted_payload is None
    assert first.fire_at == now + timedelta(hours=1) and first.created_at <= datetime.now(UTC)
    assert first.to_dict()["run_key"] == "mail:1"
    soon = await manager.list_scheduled(before=now + timedelta(minutes=90))
    assert [entry.run_key for entry in soon] == ["mail:1"]
    naive = (now + timedelta(hours=2)).replace(tzinfo=None)
    assert len(await manager.list_scheduled(before=naive)) == 2


@pytest.mark.anyio
async def test_idempotency_key_is_held_by_the_pending_firing(manager_factory):
    manager = manager_factory()

    @manager.task()
    async def complete(transaction: str) -> None:
        return None

    await manager.startup()
    run_at = datetime.now(UTC) + timedelta(hours=1)
    for hours in (1, 2):  # replacing keeps the key: it moves with the firing
        await manager.schedule_once(
            complete,
            "T1",
            run_at=run_at + timedelta(hours=hours),
            run_key="complete:T1",
            idempotency_key="completed:T1",
        )
    [entry] = await manager.list_scheduled()
    assert entry.idempotency_key == "completed:T1"
    # A manual task with the key returns the pending firing instead of a second task.
    assert await manager.enqueue(complete, "T1", idempotency_key="completed:T1") == entry.task_id
    # A firing under another run_key with a held key is not stored, as add_task would not.
    await manager.schedule_once(
        complete, "T1", run_at=run_at, run_key="other:T1", idempotency_key="completed:T1"
    )
    assert [e.run_key for e in await manager.list_scheduled()] == ["complete:T1"]
    assert len(await manager.list_tasks(func_name="complete")) == 1


@pytest.mark.anyio
async def test_encrypted_arguments_are_not_listed_in_clear(manager_factory):
    from cryptography.fernet import Fernet

    manager = manager_factory(encrypt_args_key=Fernet.generate_key())

    @manager.task()
    async def charge(card: str) -> None:
        return None

    await manager.startup()
    run_at = datetime.now(UTC) + timedelta(hours=1)
    await manager.schedule_once(charge, "4111-secret", run_at=run_at, run_key="charge:1")
    [entry] = await manager.list_scheduled()
    assert entry.args == () and entry.kwargs == {}
    assert entry.encrypted_payload and b"4111" not in entry.encrypted_payload


@pytest.mark.anyio
async def test_pending_firing_survives_a_restart(manager_factory, db_url):
    def declare(manager: TaskManager, calls: list[str]) -> Any:
        @manager.task()
        async def expire_trial(account: str) -> None:
            calls.append(account)

        return expire_trial

    first_calls: list[str] = []
    first = manager_factory()
    expire = declare(first, first_calls)
    await first.startup()
    run_at = datetime.now(UTC) + timedelta(days=14)
    await first.schedule_once(expire, "acct-9", run_at=run_at, run_key="trial:acct-9")
    await first.shutdown()

    # Fourteen days later: move the stored firing into the past, as time would.
    await execute(
        db_url,
        "UPDATE taskflow_tasks SET next_attempt_at = :due WHERE run_key = 'trial:acct-9'",
        due=(datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)
        if db_url.startswith("sqlite")
        else datetime.now(UTC) - timedelta(seconds=1),
    )
    second_calls: list[str] = []
    second = manager_factory()
    declare(second, second_calls)
    await second.startup()
    record = await only_record(second, "expire_trial")
    assert record.status.value == "success" and record.source == "scheduled"
    assert second_calls == ["acct-9"] and first_calls == []


@pytest.mark.anyio
async def test_two_managers_racing_on_one_run_key_leave_one_firing(manager_factory):
    def declare(manager: TaskManager) -> Any:
        @manager.task()
        async def close_auction(listing: str, version: int) -> None:
            return None

        return close_auction

    managers = [manager_factory(), manager_factory()]
    funcs = [declare(manager) for manager in managers]
    for manager in managers:
        await manager.startup()
    base = datetime.now(UTC) + timedelta(hours=1)
    await asyncio.gather(
        *(
            manager.schedule_once(
                func, "L7", version, run_at=base + timedelta(seconds=version), run_key="close:L7"
            )
            for version in range(12)
            for manager, func in zip(managers, funcs, strict=True)
        )
    )
    for manager in managers:
        [entry] = await manager.list_scheduled()
        assert entry.run_key == "close:L7"
    assert len(await managers[0].list_tasks(func_name="close_auction")) == 1
    assert await managers[1].cancel_scheduled("close:L7") is True
    assert await managers[0].list_scheduled() == []


@pytest.mark.anyio
async def test_refuses_unregistered_functions_bad_keys_and_a_throwaway_database(
    manager_factory,
):
    manager = manager_factory()

    async def not_registered() -> None:
        return None

    @manager.task()
    async def registered() -> None:
        return None

    await manager.startup()
    run_at = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(UnknownTaskFunction, match="@task_manager.task"):
        await manager.schedule_once(not_registered, run_at=run_at, run_key="k")
    with pytest.raises(TaskArgumentError, match="run_key"):
        await manager.schedule_once(registered, run_at=run_at, run_key="")
    with pytest.raises(TaskArgumentError, match="run_at"):
        await manager.schedule_once(registered, run_at="tomorrow", run_key="k")
    assert await manager.list_scheduled() == []

    throwaway = TaskManager()  # no database configured: a temporary one

    @throwaway.task()
    async def job() -> None:
        return None

    await throwaway.startup()
    try:
        with pytest.raises(ScheduleError, match="snapshot_db") as info:
            await throwaway.schedule_once(job, run_at=run_at, run_key="k")
        assert isinstance(info.value, RuntimeError)  # as fastapi-taskflow raises
    finally:
        await throwaway.shutdown()


# -- the guide's example, with only the import changed -----------------------------------


def test_the_guides_basic_example(db_url: str, tmp_path: Path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from fastapi import FastAPI

    from taskflow import TaskAdmin, TaskManager

    if db_url.startswith("sqlite"):
        monkeypatch.chdir(tmp_path)
        task_manager = TaskManager(snapshot_db="tasks.db")
    else:
        task_manager = TaskManager(database_url=db_url)
    app = FastAPI()
    TaskAdmin(app, task_manager)

    @task_manager.task()
    async def auto_complete_transaction(transaction_id: str) -> None: ...

    @app.post("/transactions/{transaction_id}/acknowledge")
    async def acknowledge(transaction_id: str):
        await task_manager.schedule_once(
            auto_complete_transaction,
            transaction_id,
            run_at=datetime.now(timezone.utc) + timedelta(hours=48),  # noqa: UP017 (as in the guide)
            run_key=f"auto-complete:{transaction_id}",
        )
        return {"status": "acknowledged"}

    @app.post("/transactions/{transaction_id}/dispute")
    async def raise_dispute(transaction_id: str):
        await task_manager.cancel_scheduled(f"auto-complete:{transaction_id}")
        return {"status": "disputed"}

    with TestClient(app) as client:
        for transaction in ("t1", "t2", "t1"):
            response = client.post(f"/transactions/{transaction}/acknowledge")
            assert response.json() == {"status": "acknowledged"}
        pending = client.portal.call(task_manager.list_scheduled)
        assert sorted(entry.run_key for entry in pending) == [
            "auto-complete:t1",
            "auto-complete:t2",
        ]
        assert pending[0].fire_at > datetime.now(UTC) + timedelta(hours=47)
        assert client.post("/transactions/t1/dispute").json() == {"status": "disputed"}
        pending = client.portal.call(task_manager.list_scheduled)
        assert [entry.run_key for entry in pending] == ["auto-complete:t2"]
