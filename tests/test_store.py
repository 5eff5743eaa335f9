"""The contracts of the store (``taskflow._store.protocol.Store``), checked on every
implementation: SQLite and PostgreSQL (``SQLStore`` on a freshly migrated database) and
the in-memory ``MemoryStore``. Each test runs once per store, on fixed timestamps."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from taskflow._payloads.payloads import MEMORY_ONLY, MEMORY_ONLY_LOST
from taskflow._store.ids import dashed, new_hex_id, new_task_id
from taskflow._store.key_reader import SQLiteKeyReader
from taskflow._store.memory import MemoryStore
from taskflow._store.protocol import Store
from taskflow._store.rows import (
    AttemptRow,
    InstanceRow,
    NewLogLine,
    NewTask,
    Outcome,
    ProgressUpdate,
    RunTimes,
    ScheduleRow,
)
from taskflow._store.schema import task_attempts, task_logs
from taskflow._store.sql import SQLStore
from taskflow.errors import DatabaseError, NotStarted
from tests.store_support import (
    FINISHED_AT,
    MEMORY_URL,
    STARTED_AT,
    T0,
    OpenStore,
    at,
    new_task,
)

pytestmark = pytest.mark.anyio


def test_the_memory_store_is_a_store() -> None:
    store: Store = MemoryStore()  # checked by the type checker, structurally
    assert store.display_url == "memory://"


def firing(run_key: str, due: datetime, **changes: Any) -> NewTask:
    """A one-off firing (``schedule_once``) of ``run_key`` due at ``due``."""
    return new_task(run_key=run_key, source="scheduled", next_attempt_at=due, **changes)


def schedule(name: str, **changes: Any) -> ScheduleRow:
    row = ScheduleRow(
        id=new_hex_id(),
        name=name,
        group_name=None,
        func_name="add",
        kind="static",
        cron=None,
        every=60.0,
        timezone="UTC",
        payload='{"args": [1, 2]}',
        options={"queue": "reports", "max_retries": 2},
        description="adds",
        tags=["nightly"],
        enabled=True,
        next_run_at=at(60),
        last_run_at=None,
        last_task_id=None,
        created_at=T0,
        updated_at=T0,
    )
    return replace(row, **changes)


def run_of(row: ScheduleRow, slot: datetime) -> NewTask:
    """The task of one slot of a schedule."""
    return new_task(source="scheduled", schedule_id=row.id, schedule_slot=slot)


def instance(**changes: Any) -> InstanceRow:
    row = InstanceRow(
        id=new_hex_id(),
        hostname="host-a",
        pid=100,
        queues=["default"],
        started_at=T0,
        heartbeat_at=T0,
        info={"version": "1"},
    )
    return replace(row, **changes)


async def started(
    store: Store, owner: str = "a", *, now: datetime = STARTED_AT, **changes: Any
) -> str:
    """Insert a task and start its first attempt on ``owner``; its id."""
    task_id = await store.insert_task_now(new_task(**changes))
    assert await store.start_task(task_id, instance=owner, now=now) == 1
    return task_id


async def finished(
    store: Store,
    status: str = "success",
    *,
    start: datetime = STARTED_AT,
    end: datetime = FINISHED_AT,
    **changes: Any,
) -> str:
    """Insert a task, run it on instance ``a`` from ``start`` and end it at ``end``."""
    task_id = await started(store, now=start, **changes)
    await store.finish_task(Outcome(task_id, "a", 1, status, end, error=_error(status)))
    return task_id


def _error(status: str) -> str | None:
    return None if status == "success" else f"ended {status}"


async def status_of(store: Store, task_id: str) -> str:
    row = await store.get_task(task_id)
    assert row is not None
    return row.status


def ids(rows: Any) -> list[str]:
    return [row.id for row in rows]


# -- inserting and reading tasks ---------------------------------------------------------


async def test_an_inserted_task_reads_back_in_either_id_shape(store: Store) -> None:
    task = new_task(
        tags={"team": "billing"},
        priority=3,
        queue="reports",
        max_retries=2,
        retry_delay=1.5,
        retry_max_delay=30.0,
        requeue_on_interrupt=True,
        encrypted=True,
        next_attempt_at=at(5),
    )
    assert await store.insert_task(task) == task.id
    legacy = new_task(id=uuid.uuid4().hex)  # the shape earlier releases stored
    assert await store.insert_task_now(legacy) == legacy.id

    shapes = {
        task.id: task.id,
        task.id.replace("-", ""): task.id,
        task.id.upper(): task.id,
        legacy.id: legacy.id,
        dashed(legacy.id): legacy.id,
    }
    for given, stored in shapes.items():
        row = await store.get_task(given)
        assert row is not None and row.id == stored, given
    row = await store.get_task(task.id)
    assert row is not None
    expected = {**task.columns(), "result": None, "traceback": None, "started_at": None}
    assert {name: getattr(row, name) for name in expected} == expected
    assert await store.get_task(new_task_id()) is None
    assert await store.get_task("no-such-task") is None


async def test_timestamps_are_stored_as_aware_utc(store: Store) -> None:
    two_hours_east = timezone(timedelta(hours=2))
    task = new_task(created_at=T0.astimezone(two_hours_east), next_attempt_at=at(5))
    await store.insert_task_now(task)
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.created_at, row.next_attempt_at) == (T0, at(5))
    assert row.created_at.utcoffset() == timedelta(0)

    with pytest.raises(DatabaseError):
        await store.insert_task_now(new_task(created_at=T0.replace(tzinfo=None)))
    good = store.insert_task(new_task())  # group commit too; its batch-mate is stored
    with pytest.raises(DatabaseError):
        await store.insert_task(new_task(next_attempt_at=T0.replace(tzinfo=None)))
    await good
    assert await store.count_by_status() == {"pending": 2}
    task_id = await started(store)
    with pytest.raises(DatabaseError):
        await store.finish_task(Outcome(task_id, "a", 1, "success", at(2).replace(tzinfo=None)))
    assert await status_of(store, task_id) == "running"


async def test_both_write_paths_store_the_same_values(store: Store, store_url: str) -> None:
    # Group commit writes through the driver (tuples on SQLite, arrays on PostgreSQL),
    # single inserts through the column types; the stored values must not differ (on
    # SQLite timestamps even compare as text).
    if store_url == MEMORY_URL:
        pytest.skip("only a database has two write paths")
    assert isinstance(store, SQLStore)
    moment = datetime(2024, 5, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    same = {"created_at": moment, "next_attempt_at": moment, "tags": {"a": "1", "b": "x y"}}
    same["trace_context"] = (
        '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    )
    by_driver, by_types = new_task(**same), new_task(**same)
    await store.insert_task(by_driver)
    await store.insert_task_now(by_types)
    tags = "tags" if store.dialect == "sqlite" else "CAST(tags AS TEXT)"
    columns = (
        f"created_at, next_attempt_at, {tags}, encrypted, requeue_on_interrupt, status,"
        " trace_context"
    )
    query = sa.text(f"SELECT {columns} FROM taskflow_tasks WHERE id = :id")
    async with store.read() as conn:
        stored = [
            tuple((await conn.execute(query, {"id": i})).one()) for i in (by_driver.id, by_types.id)
        ]
    assert stored[0] == stored[1]
    assert stored[0][-1] == same["trace_context"]
    if store.dialect == "sqlite":
        assert stored[0][0] == "2024-05-01 12:00:00.000000"


async def test_group_commit_stores_logs_starts_and_attempts_as_the_column_types_do(
    store: Store, store_url: str
) -> None:
    # On a SQLite file group commit writes through the stdlib driver on its own thread;
    # what it stores must read (and on SQLite compare as text) exactly as rows written
    # through the column types.
    if store_url == MEMORY_URL:
        pytest.skip("only a database has two write paths")
    assert isinstance(store, SQLStore)
    moment = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    task_id = await started(store, now=moment)
    for extra in (None, {"order": "cust-40", "n": 2}):
        await store.append_log(NewLogLine(task_id, moment, "INFO", "by the batch", extra))
        async with store.write() as conn:
            line = {"task_id": task_id, "at": moment, "level": "INFO", "extra": extra}
            await conn.execute(task_logs.insert(), [{**line, "message": "by the types"}])
    await store.finish_task(
        Outcome(
            task_id, "a", 1, "pending", moment, error="E", traceback="T", next_attempt_at=moment
        )
    )
    extra = "extra" if store.dialect == "sqlite" else "CAST(extra AS TEXT)"
    logs = sa.text(f"SELECT at, level, {extra} FROM taskflow_task_logs ORDER BY id")
    times = sa.text(
        "SELECT t.started_at, a.started_at, a.finished_at, a.status, a.error, a.traceback"
        " FROM taskflow_tasks t JOIN taskflow_task_attempts a ON a.task_id = t.id"
    )
    async with store.read() as conn:
        lines = [tuple(row) for row in (await conn.execute(logs)).all()]
        attempt = tuple((await conn.execute(times)).one())
    assert lines[0] == lines[1] and lines[2] == lines[3] and lines[0] != lines[2]
    assert attempt[3:] == ("failed", "E", "T")
    if store.dialect == "sqlite":
        text = "2024-05-01 12:00:00.000005"
        assert lines[0][0] == attempt[0] == attempt[1] == attempt[2] == text
    else:
        assert lines[0][0] == attempt[0] == attempt[1] == attempt[2] == moment
    attempts = await store.get_attempts(task_id)
    assert [(a.attempt, a.status, a.error) for a in attempts] == [(1, "failed", "E")]


async def test_group_commit_on_in_memory_sqlite_goes_through_the_engine() -> None:
    # An in-memory database lives in the engine's one connection, so its batches are
    # written there (the SQLite branches of the engine's handlers), not on a thread.
    store = SQLStore("sqlite+aiosqlite://")
    await store.open(auto_upgrade=True)
    try:
        keyed = new_task(idempotency_key="k")
        batch = [new_task(), keyed, new_task(idempotency_key="k", promised=True)]
        stored = await asyncio.gather(*(store.insert_task(task) for task in batch))
        assert stored == [batch[0].id, keyed.id, keyed.id]
        task_id = batch[0].id
        assert await store.start_task(task_id, instance="a", now=at(1)) == 1
        assert await store.start_task(task_id, instance="a", now=at(1)) == 1  # asked again
        await store.append_log(NewLogLine(task_id, at(1), "INFO", "hello", {"n": 1}))
        retry = Outcome(task_id, "a", 1, "pending", at(2), error="E", next_attempt_at=at(3))
        await store.finish_task(retry)
        assert [a.status for a in await store.get_attempts(task_id)] == ["failed"]
        assert [line.extra for line in await store.get_logs(task_id)] == [{"n": 1}]
        assert (await store.get_task(batch[2].id)).id == keyed.id  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_of_two_progress_reports_in_one_batch_the_later_is_kept(store: Store) -> None:
    # Both reports are queued in one pass of the loop, so one batch writes them; on
    # PostgreSQL one UPDATE ... FROM over arrays would apply either of the two.
    task_id = await started(store)
    for first, last in (('{"done": 1}', '{"done": 2}'), ('{"done": 4}', '{"done": 3}')):
        await asyncio.gather(
            store.set_progress(ProgressUpdate(task_id, first)),
            store.set_progress(ProgressUpdate(task_id, last)),
        )
        row = await store.get_task(task_id)
        assert row is not None and row.progress == last


async def test_group_committed_writes_resolve_on_the_calling_loop(store: Store) -> None:
    future = store.insert_task(new_task())
    assert future.get_loop() is asyncio.get_running_loop()
    task_id = await future
    assert await store.start_task(task_id, instance="a", now=at(1)) == 1
    await store.append_log(NewLogLine(task_id, at(1), "INFO", "hello"))
    await store.finish_task(Outcome(task_id, "a", 1, "success", at(2), result="3"))
    row = await store.get_task(task_id)
    assert row is not None and (row.status, row.result) == ("success", "3")


async def test_stored_values_cannot_be_changed_through_records(store: Store) -> None:
    task = new_task(tags={"team": "a"})
    await store.insert_task(task)
    task.tags["team"] = "changed after insert"
    first = await store.get_task(task.id)
    assert first is not None
    first.tags["team"] = "changed after read"
    again = await store.get_task(task.id)
    assert again is not None and again.tags == {"team": "a"}

    declared = schedule("copied")
    await store.create_schedule(declared)
    declared.options["queue"] = "changed"
    declared.tags.append("changed")
    read = await store.get_schedule("copied")
    assert read is not None
    read.options["queue"] = "changed too"
    stored = await store.get_schedule("copied")
    assert stored is not None
    assert (stored.options, stored.tags) == ({"queue": "reports", "max_retries": 2}, ["nightly"])

    info: dict[str, object] = {"running": 1}
    process = instance()
    await store.register_instance(process)
    await store.heartbeat(process.id, now=at(1), info=info)
    info["running"] = 99
    (listed,) = await store.list_instances()
    assert listed.info == {"running": 1}


async def test_a_closed_store_refuses_work(store: Store) -> None:
    await store.close()
    with pytest.raises(NotStarted):
        store.insert_task(new_task())
    with pytest.raises(DatabaseError):
        await store.get_task(new_task_id())
    with pytest.raises(DatabaseError):
        await store.insert_task_now(new_task())


async def test_listen_returns_none_where_the_store_has_no_notifications(
    store: Store, store_url: str
) -> None:
    calls: list[str] = []
    listening = await store.listen(calls.append)
    if store_url.startswith("postgresql"):
        assert listening is not None
        await listening.close()
    else:
        assert listening is None


# -- idempotency keys --------------------------------------------------------------------


async def test_an_idempotency_key_is_held_by_one_live_task(store: Store) -> None:
    holder = await store.insert_task(new_task(idempotency_key="order-1"))
    latecomer = new_task(idempotency_key="order-1")
    assert await store.insert_task(latecomer) == holder
    assert await store.insert_task_now(new_task(idempotency_key="order-1")) == holder
    assert await store.get_task(latecomer.id) is None  # not promised: no alias
    assert await store.find_live_by_key("order-1") == holder
    assert await store.find_live_by_key("order-2") is None
    assert await store.count_by_status() == {"pending": 1}


async def test_writes_arriving_together_with_one_key_store_one_task(store: Store) -> None:
    tasks = [new_task(idempotency_key="same") for _ in range(5)]
    stored = await asyncio.gather(*(store.insert_task(task) for task in tasks))
    assert len(set(stored)) == 1
    assert stored[0] in {task.id for task in tasks}
    assert await store.count_by_status() == {"pending": 1}


async def test_the_blocking_key_reader_answers_as_the_async_lookup(
    store: Store, open_store: OpenStore, store_url: str
) -> None:
    reader = store.key_reader()
    if store_url.startswith("postgresql"):
        assert reader is None  # no blocking driver: lookups use the bridge's thread
        return
    assert reader is not None
    holder = await store.insert_task(new_task(idempotency_key="order-1"))
    assert reader("order-1") == holder
    assert reader("order-2") is None
    await end_as(store, holder, "failed")
    assert reader("order-1") is None  # reads the latest commit, not a snapshot
    other = await open_store()  # another process's write is seen at once
    second = await other.insert_task(new_task(idempotency_key="order-1"))
    assert reader("order-1") == second
    await store.close()
    with pytest.raises(DatabaseError):
        reader("order-1")


def test_the_sqlite_key_reader_names_a_file_it_cannot_open(tmp_path: Path) -> None:
    url = make_url(f"sqlite+aiosqlite:///{tmp_path}/no-such-folder/tasks.db")
    reader = SQLiteKeyReader(url, display_url=str(url))
    with pytest.raises(DatabaseError, match="no-such-folder"):
        reader("order-1")
    assert not SQLiteKeyReader.supports(make_url("sqlite+aiosqlite://"))
    assert not SQLiteKeyReader.supports(make_url("sqlite:///file:x.db?mode=ro&uri=true"))


async def test_a_batch_of_keyed_writes_resolves_each_key_once(store: Store) -> None:
    taken = await store.insert_task_now(new_task(idempotency_key="taken"))
    failed = await store.insert_task_now(new_task(idempotency_key="free-again"))
    await end_as(store, failed, "failed")
    batch = [
        new_task(idempotency_key="taken", promised=True),  # held before the batch
        new_task(idempotency_key="new-a"),
        new_task(idempotency_key="new-a", promised=True),  # held by its batch-mate
        new_task(),
        new_task(idempotency_key="free-again"),  # its holder failed: free
        new_task(idempotency_key="new-b"),
    ]
    stored = await asyncio.gather(*(store.insert_task(task) for task in batch))
    assert stored == [taken, batch[1].id, batch[1].id, batch[3].id, batch[4].id, batch[5].id]
    for alias, holder in ((batch[0].id, taken), (batch[2].id, batch[1].id)):
        row = await store.get_task(alias)
        assert row is not None and row.id == holder
    for key, holder in (("taken", taken), ("new-a", batch[1].id), ("free-again", batch[4].id)):
        assert await store.find_live_by_key(key) == holder
    assert await store.count_by_status() == {"pending": 5, "failed": 1}


async def test_a_promised_id_becomes_an_alias_of_the_key_holder(store: Store) -> None:
    holder = await store.insert_task_now(new_task(idempotency_key="order-1"))
    promised = new_task(idempotency_key="order-1", promised=True)
    assert await store.insert_task(promised) == holder
    for shape in (promised.id, promised.id.replace("-", "")):
        row = await store.get_task(shape)
        assert row is not None and row.id == holder
    assert await store.count_by_status() == {"pending": 1}

    assert await store.start_task(holder, instance="a", now=at(1)) == 1
    await store.finish_task(Outcome(holder, "a", 1, "success", at(2)))
    assert await store.delete_task(holder)
    assert await store.get_task(promised.id) is None  # the alias went with its task


async def end_as(store: Store, task_id: str, status: str) -> None:
    """Bring a pending task to the final ``status`` the way the engine does."""
    if status == "cancelled":
        assert await store.cancel_task(task_id, now=at(1)) == "pending"
        return
    assert await store.start_task(task_id, instance="a", now=at(1)) == 1
    if status == "interrupted":
        await store.settle_instance("a", now=at(2), reason="stopped")
    else:
        await store.finish_task(Outcome(task_id, "a", 1, status, at(2), error=_error(status)))
    assert await status_of(store, task_id) == status


@pytest.mark.parametrize("status", ["failed", "cancelled", "interrupted"])
async def test_a_key_is_free_again_once_its_task_failed(store: Store, status: str) -> None:
    first = await store.insert_task_now(new_task(idempotency_key="order-1"))
    await end_as(store, first, status)
    assert await store.find_live_by_key("order-1") is None
    second = new_task(idempotency_key="order-1")
    assert await store.insert_task(second) == second.id
    assert await store.find_live_by_key("order-1") == second.id


async def test_a_key_stays_held_after_success(store: Store) -> None:
    first = await store.insert_task_now(new_task(idempotency_key="order-1"))
    await end_as(store, first, "success")
    assert await store.insert_task(new_task(idempotency_key="order-1")) == first
    assert await store.find_live_by_key("order-1") == first


async def test_a_rejected_task_is_recorded_final_and_keyless(store: Store) -> None:
    task = new_task(idempotency_key="order-1", created_at=at(3)).rejected("bad arguments")
    assert await store.insert_task(task) == task.id
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.error, row.finished_at, row.attempts) == (
        "rejected",
        "bad arguments",
        at(3),
        0,
    )
    assert row.idempotency_key is None and row.started_at is None
    assert await store.claim_tasks(instance="a", queues=["default"], limit=5, now=at(10)) == []
    assert await store.start_task(task.id, instance="a", now=at(10)) is None
    assert await store.count_waiting("default", now=at(10)) == 0
    retry = new_task(idempotency_key="order-1")
    assert await store.insert_task(retry) == retry.id


# -- claiming, starting, finishing -------------------------------------------------------


async def test_claims_take_the_best_priority_then_the_earliest_due(store: Store) -> None:
    low_late = new_task(priority=0, next_attempt_at=at(-5))
    high_late = new_task(priority=5, next_attempt_at=at(-10))
    low_early = new_task(priority=0, next_attempt_at=at(-30))
    high_early = new_task(priority=5, next_attempt_at=at(-20))
    # inserted worst first: the order must come from the claim, not from insertion
    for task in (low_late, low_early, high_late, high_early):
        await store.insert_task(task)
    order = []
    for _ in range(4):
        (claimed,) = await store.claim_tasks(instance="a", queues=["default"], limit=1, now=T0)
        order.append(claimed.id)
    assert order == [high_early.id, high_late.id, low_early.id, low_late.id]
    assert await store.claim_tasks(instance="a", queues=["default"], limit=1, now=T0) == []


async def test_claims_take_due_unowned_tasks_of_the_queues_asked(store: Store) -> None:
    due = new_task(next_attempt_at=at(-1))
    elsewhere = new_task(queue="reports")
    later = new_task(next_attempt_at=at(60))
    owned = new_task(owner="b")
    for task in (due, elsewhere, later, owned):
        await store.insert_task_now(task)

    claimed = await store.claim_tasks(instance="a", queues=["default"], limit=10, now=T0)
    assert ids(claimed) == [due.id]
    assert (claimed[0].owner, claimed[0].status, claimed[0].attempts) == ("a", "pending", 0)
    row = await store.get_task(due.id)
    assert row is not None and row.owner == "a"

    both = ["default", "reports"]
    assert ids(await store.claim_tasks(instance="a", queues=both, limit=5, now=T0)) == [
        elsewhere.id
    ]
    # due exactly now counts as due
    assert ids(await store.claim_tasks(instance="a", queues=both, limit=5, now=at(60))) == [
        later.id
    ]
    row = await store.get_task(owned.id)
    assert row is not None and row.owner == "b"


# Tasks inserted best first: the order in which a claim that rescans its candidates
# (``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` on PostgreSQL)
# would take every one of them.
async def test_claims_take_at_most_the_limit(store: Store) -> None:
    tasks = [new_task(next_attempt_at=at(-10 + n)) for n in range(5)]  # best first
    for task in tasks:
        await store.insert_task_now(task)
    first = await store.claim_tasks(instance="a", queues=["default"], limit=2, now=T0)
    assert set(ids(first)) == {tasks[0].id, tasks[1].id}
    second = await store.claim_tasks(instance="b", queues=["default"], limit=2, now=T0)
    assert set(ids(second)) == {tasks[2].id, tasks[3].id}
    assert await store.count_waiting("default", now=T0) == 5


async def test_concurrent_claims_never_share_a_task(store: Store, open_store: OpenStore) -> None:
    other = await open_store()
    tasks = [new_task() for _ in range(20)]
    for task in tasks:
        await store.insert_task(task)
    mine, theirs = await asyncio.gather(
        store.claim_tasks(instance="a", queues=["default"], limit=15, now=T0),
        other.claim_tasks(instance="b", queues=["default"], limit=15, now=T0),
    )
    assert not set(ids(mine)) & set(ids(theirs))
    assert len(mine) + len(theirs) == 20  # whoever waits or skips takes the rest
    for task in tasks:  # each task is owned by the claimer that got it, or by nobody
        stored = await store.get_task(task.id)
        assert stored is not None
        owner = "a" if task.id in ids(mine) else "b" if task.id in ids(theirs) else None
        assert stored.owner == owner


async def test_a_task_starts_only_from_pending_and_counts_attempts(store: Store) -> None:
    task = new_task()
    await store.insert_task(task)
    assert await store.start_task(task.id, instance="a", now=at(1)) == 1
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.owner, row.started_at, row.attempts) == ("running", "a", at(1), 1)
    assert await store.start_task(task.id, instance="b", now=at(2)) is None
    row = await store.get_task(task.id)
    assert row is not None and (row.owner, row.attempts) == ("a", 1)
    assert await store.start_task(new_task_id(), instance="a", now=at(2)) is None
    assert await store.get_attempts(task.id) == [
        AttemptRow(task.id, 1, "a", at(1), None, "running", None, None)
    ]

    await store.finish_task(Outcome(task.id, "a", 1, "success", at(3)))
    assert await store.start_task(task.id, instance="a", now=at(4)) is None


async def test_a_start_asked_again_by_its_owner_is_the_same_start(store: Store) -> None:
    # A start whose commit landed but whose reply was lost is asked again by the runner
    # with the same start time: it answers the attempt it counted and changes nothing,
    # so the task still runs (once). Another time or another instance is a new start.
    task = new_task()
    await store.insert_task(task)
    assert await store.start_task(task.id, instance="a", now=at(1)) == 1
    for _ in range(2):
        assert await store.start_task(task.id, instance="a", now=at(1)) == 1
    assert await store.start_task(task.id, instance="a", now=at(2)) is None
    assert await store.start_task(task.id, instance="b", now=at(1)) is None
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.owner, row.started_at, row.attempts) == ("running", "a", at(1), 1)
    await store.finish_task(Outcome(task.id, "a", 1, "success", at(3)))
    assert await store.start_task(task.id, instance="a", now=at(1)) is None


async def test_finishing_records_the_outcome_on_the_task_and_its_attempt(store: Store) -> None:
    task_id = await started(store)
    await store.finish_task(Outcome(task_id, "a", 1, "failed", at(2), error="boom", traceback="tb"))
    row = await store.get_task(task_id)
    assert row is not None
    assert (row.status, row.error, row.traceback, row.finished_at, row.result) == (
        "failed",
        "boom",
        "tb",
        at(2),
        None,
    )
    assert await store.get_attempts(task_id) == [
        AttemptRow(task_id, 1, "a", at(1), at(2), "failed", "boom", "tb")
    ]


async def test_a_retry_goes_back_to_pending_with_its_owner_until_due(store: Store) -> None:
    task_id = await started(store)
    retry = Outcome(task_id, "a", 1, "pending", at(2), error="boom", next_attempt_at=at(30))
    await store.finish_task(retry)
    row = await store.get_task(task_id)
    assert row is not None
    assert (row.status, row.owner, row.next_attempt_at, row.finished_at, row.error) == (
        "pending",
        "a",
        at(30),
        None,
        "boom",
    )
    assert await store.count_waiting("default", now=at(29)) == 0
    assert await store.count_waiting("default", now=at(30)) == 1
    # the owner runs its retries: nobody else claims the task
    assert await store.claim_tasks(instance="b", queues=["default"], limit=5, now=at(60)) == []

    assert await store.start_task(task_id, instance="a", now=at(30)) == 2
    await store.finish_task(Outcome(task_id, "a", 2, "success", at(31), result="3"))
    row = await store.get_task(task_id)
    assert row is not None
    assert (row.status, row.result, row.error, row.finished_at, row.attempts) == (
        "success",
        "3",
        None,
        at(31),
        2,
    )
    assert await store.get_attempts(task_id) == [
        AttemptRow(task_id, 1, "a", at(1), at(2), "failed", "boom", None),
        AttemptRow(task_id, 2, "a", at(30), at(31), "success", None, None),
    ]


async def test_a_finish_counts_only_from_the_owner_of_a_running_task(store: Store) -> None:
    task_id = await started(store, owner="a")
    await store.finish_task(Outcome(task_id, "b", 1, "success", at(2), result="stolen"))
    row = await store.get_task(task_id)
    assert row is not None and (row.status, row.owner, row.result) == ("running", "a", None)

    waiting = await store.insert_task_now(new_task())
    await store.finish_task(Outcome(waiting, "a", 1, "success", at(2)))
    assert await status_of(store, waiting) == "pending"

    await store.finish_task(Outcome(task_id, "a", 1, "success", at(3), result="3"))
    await store.finish_task(Outcome(task_id, "a", 1, "failed", at(4), error="late"))
    row = await store.get_task(task_id)
    assert row is not None and (row.status, row.result, row.finished_at) == ("success", "3", at(3))


async def test_an_attempt_costs_a_row_only_when_another_follows_it(
    store: Store, store_url: str
) -> None:
    # The history reads the same either way; what is stored is the SQL stores' concern.
    once = await started(store)
    await store.finish_task(Outcome(once, "a", 1, "success", at(2)))
    retried = await started(store)
    await store.finish_task(Outcome(retried, "a", 1, "pending", at(2), error="boom"))
    assert [a.status for a in await store.get_attempts(once)] == ["success"]
    assert [a.status for a in await store.get_attempts(retried)] == ["failed"]
    if store_url == MEMORY_URL:
        return
    assert isinstance(store, SQLStore)
    async with store.read() as conn:
        stored = (await conn.execute(sa.text("SELECT task_id FROM taskflow_task_attempts"))).all()
    assert [row.task_id for row in stored] == [retried]


async def test_an_attempt_row_written_at_its_start_is_completed_when_it_ends(
    store: Store, store_url: str
) -> None:
    # Earlier versions wrote a running attempt row at every start; a task running across
    # the upgrade ends on that row (retried here, then settled on its next attempt).
    if store_url == MEMORY_URL:
        pytest.skip("rows written by an earlier version exist only in a database")
    assert isinstance(store, SQLStore)
    task_id = await started(store, owner="a")
    await _running_attempt_row(store, task_id, 1, "a", STARTED_AT)
    await store.finish_task(Outcome(task_id, "a", 1, "pending", at(2), error="boom"))
    assert await store.start_task(task_id, instance="b", now=at(3)) == 2
    await _running_attempt_row(store, task_id, 2, "b", at(3))
    await store.settle_instance("b", now=at(4), reason="instance b stopped")
    history = await store.get_attempts(task_id)
    assert [(a.attempt, a.instance, a.status, a.error) for a in history] == [
        (1, "a", "failed", "boom"),
        (2, "b", "interrupted", "instance b stopped"),
    ]
    assert [a.finished_at for a in history] == [at(2), at(4)]


async def _running_attempt_row(
    store: SQLStore, task_id: str, attempt: int, instance: str, started_at: datetime
) -> None:
    """The attempt row an earlier version wrote when an attempt started."""
    row = {"task_id": task_id, "attempt": attempt, "instance": instance, "status": "running"}
    async with store.write() as conn:
        await conn.execute(task_attempts.insert().values(**row, started_at=started_at))


async def test_a_late_finish_after_settling_changes_neither_task_nor_attempt(
    store: Store,
) -> None:
    # The instance running the task was declared dead and its task settled; then the
    # process reports the attempt's end after all.
    task_id = await started(store, owner="a")
    await store.settle_instance("a", now=at(5), reason="instance a stopped")
    await store.finish_task(Outcome(task_id, "a", 1, "success", at(6), result="late"))
    row = await store.get_task(task_id)
    assert row is not None and (row.status, row.result) == ("interrupted", None)
    (attempt,) = await store.get_attempts(task_id)
    assert (attempt.status, attempt.finished_at) == ("interrupted", at(5))


# -- logs ----------------------------------------------------------------------------------


async def test_logs_read_oldest_first_up_to_the_limit(store: Store) -> None:
    task_id = await started(store)
    other = await started(store)
    lines = [
        NewLogLine(task_id, at(2), "INFO", "first", {"step": 1}),
        NewLogLine(other, at(2), "INFO", "someone else's"),
        NewLogLine(task_id, at(1), "WARNING", "second, stamped earlier"),
        NewLogLine(task_id, at(3), "ERROR", "third", {"nested": {"a": [1, 2]}}),
    ]
    await asyncio.gather(*(store.append_log(line) for line in lines))

    logs = await store.get_logs(task_id)
    assert [line.message for line in logs] == ["first", "second, stamped earlier", "third"]
    assert [line.extra for line in logs] == [{"step": 1}, None, {"nested": {"a": [1, 2]}}]
    assert [(line.at, line.level) for line in logs] == [
        (at(2), "INFO"),
        (at(1), "WARNING"),
        (at(3), "ERROR"),
    ]
    assert logs[0].id < logs[1].id < logs[2].id
    assert {line.task_id for line in logs} == {task_id}
    assert [line.message for line in await store.get_logs(task_id, limit=2)] == [
        "first",
        "second, stamped earlier",
    ]
    with pytest.raises(DatabaseError):
        await store.append_log(NewLogLine(new_task_id(), at(1), "INFO", "nobody's"))


# -- listing and counting ------------------------------------------------------------------


async def test_list_tasks_newest_first_filtered(store: Store) -> None:
    oldest = new_task(func_name="add", created_at=at(0))
    middle = new_task(func_name="mul", created_at=at(10))
    newest_b = new_task(id="00000000-0000-4000-8000-00000000000b", created_at=at(20))
    newest_a = new_task(id="00000000-0000-4000-8000-00000000000a", created_at=at(20))
    for task in (oldest, middle, newest_b, newest_a):
        await store.insert_task(task)
    await store.cancel_task(middle.id, now=at(11))

    assert ids(await store.list_tasks()) == [newest_a.id, newest_b.id, middle.id, oldest.id]
    assert ids(await store.list_tasks(limit=2)) == [newest_a.id, newest_b.id]
    assert len(await store.list_tasks(limit=None)) == 4
    assert ids(await store.list_tasks(status="cancelled")) == [middle.id]
    assert ids(await store.list_tasks(func_name="add", status="pending")) == [
        newest_a.id,
        newest_b.id,
        oldest.id,
    ]
    assert ids(await store.list_tasks(created_since=at(10))) == [
        newest_a.id,
        newest_b.id,
        middle.id,
    ]
    assert await store.list_tasks(func_name="missing") == []


async def test_counts_by_status_queue_and_waiting(store: Store) -> None:
    for task in (
        new_task(),
        new_task(next_attempt_at=at(-5)),
        new_task(next_attempt_at=at(60)),
        new_task(queue="reports"),
    ):
        await store.insert_task_now(task)
    await started(store)
    cancelled = await store.insert_task_now(new_task())
    await store.cancel_task(cancelled, now=at(1))

    assert await store.count_waiting("default", now=T0) == 2
    assert await store.count_waiting("default", now=at(60)) == 3
    assert await store.count_waiting("reports", now=T0) == 1
    assert await store.count_waiting("nothing", now=T0) == 0
    assert await store.queue_counts(["default", "reports", "empty"]) == {
        "default": {"pending": 3, "running": 1, "cancelled": 1},
        "reports": {"pending": 1},
        "empty": {},
    }
    assert await store.count_by_status() == {"pending": 4, "running": 1, "cancelled": 1}


async def test_owned_since_lists_what_an_owner_holds_since_before(store: Store) -> None:
    claimed = new_task(next_attempt_at=at(-10))
    await store.insert_task_now(claimed)
    await store.claim_tasks(instance="a", queues=["default"], limit=1, now=T0)
    running = await started(store, owner="a", now=at(1))
    await started(store, owner="b", now=at(1))
    await finished(store, start=at(1), end=at(1))
    await store.insert_task_now(new_task(next_attempt_at=at(-10)))  # nobody's

    assert await store.owned_since(owner="a", before=at(-10)) == []
    assert await store.owned_since(owner="a", before=at(0)) == [claimed.id]
    assert await store.owned_since(owner="a", before=at(1)) == [claimed.id]  # strictly before
    assert set(await store.owned_since(owner="a", before=at(2))) == {claimed.id, running}


# -- cancelling, copying, deleting, pruning ------------------------------------------------


async def test_cancel_ends_a_pending_task_and_flags_a_running_one(store: Store) -> None:
    pending = await store.insert_task_now(new_task())
    assert await store.cancel_task(pending.replace("-", ""), now=at(5)) == "pending"
    row = await store.get_task(pending)
    assert row is not None
    assert (row.status, row.finished_at, row.error) == (
        "cancelled",
        at(5),
        "cancelled before start",
    )
    assert await store.cancel_task(pending, now=at(9)) == "cancelled"
    row = await store.get_task(pending)
    assert row is not None and row.finished_at == at(5)

    explained = await store.insert_task_now(new_task())
    await store.cancel_task(explained, now=at(5), reason="no longer needed")
    row = await store.get_task(explained)
    assert row is not None and row.error == "no longer needed"

    running = await started(store, owner="a")
    assert await store.cancel_requests(owner="a") == []
    assert await store.cancel_task(running, now=at(5)) == "running"
    row = await store.get_task(running)
    assert row is not None
    assert (row.status, row.cancel_requested, row.finished_at) == ("running", True, None)
    assert await store.cancel_requests(owner="a") == [running]
    assert await store.cancel_requests(owner="b") == []
    assert await store.cancel_task(new_task_id(), now=at(5)) is None


async def test_copy_task_inserts_the_copy_while_the_source_exists(store: Store) -> None:
    source = await finished(store, "failed")
    copy = new_task(source="manual")
    assert await store.copy_task(source.replace("-", ""), task=copy) == copy.id
    assert await status_of(store, copy.id) == "pending"

    orphan = new_task()
    assert await store.copy_task(new_task_id(), task=orphan) is None
    assert await store.get_task(orphan.id) is None

    holder = await store.insert_task_now(new_task(idempotency_key="order-1"))
    assert await store.copy_task(source, task=new_task(idempotency_key="order-1")) == holder


async def test_delete_task_removes_only_final_tasks_with_logs_and_attempts(store: Store) -> None:
    task_id = await started(store)
    pending = await store.insert_task_now(new_task())
    await store.append_log(NewLogLine(task_id, at(1), "INFO", "working"))
    assert not await store.delete_task(task_id)
    assert not await store.delete_task(pending)

    await store.finish_task(Outcome(task_id, "a", 1, "success", at(2)))
    assert await store.delete_task(task_id.replace("-", ""))
    assert await store.get_task(task_id) is None
    assert await store.get_logs(task_id) == []
    assert await store.get_attempts(task_id) == []
    assert not await store.delete_task(task_id)
    assert await status_of(store, pending) == "pending"


async def test_prune_finished_deletes_old_final_tasks_in_batches(store: Store) -> None:
    old = [
        await finished(store, "success", end=at(2)),
        await finished(store, "failed", end=at(3)),
    ]
    rejected = new_task(created_at=at(4)).rejected("bad arguments")
    await store.insert_task_now(rejected)
    await store.append_log(NewLogLine(old[0], at(1), "INFO", "working"))
    recent = await finished(store, "success", end=at(100))
    pending = await store.insert_task_now(new_task(created_at=at(-100)))
    running = await started(store, now=at(-100))

    assert await store.prune_finished(before=at(50), batch_size=2) == 2
    assert await store.prune_finished(before=at(50), batch_size=2) == 1
    assert await store.prune_finished(before=at(50)) == 0
    assert await store.get_logs(old[0]) == []
    assert {row.id for row in await store.list_tasks()} == {recent, pending, running}
    assert await store.prune_finished(before=at(100)) == 0  # strictly before


# -- schedules -----------------------------------------------------------------------------


async def test_create_schedule_refuses_a_taken_name(store: Store) -> None:
    report = schedule("report", kind="dynamic")
    assert await store.create_schedule(report)
    assert not await store.create_schedule(schedule("report", kind="dynamic", every=5.0))
    assert await store.get_schedule("report") == report
    assert await store.get_schedule("missing") is None
    await store.create_schedule(schedule("b-report"))
    await store.create_schedule(schedule("a-report"))
    assert [row.name for row in await store.list_schedules()] == ["a-report", "b-report", "report"]


async def test_upsert_keeps_phase_and_pause_unless_the_trigger_changes(store: Store) -> None:
    declared = schedule("nightly", next_run_at=at(60))
    assert await store.upsert_static_schedule(declared) == declared
    await store.set_schedule_enabled("nightly", enabled=False, next_run_at=None, now=at(1))

    redeclared = replace(
        declared,
        id=new_hex_id(),
        next_run_at=at(90),
        description="adds, reworded",
        options={"queue": "other"},
        enabled=True,
        updated_at=at(2),
    )
    stored = await store.upsert_static_schedule(redeclared)
    assert (stored.id, stored.next_run_at, stored.enabled) == (declared.id, at(60), False)
    assert (stored.description, stored.options, stored.updated_at) == (
        "adds, reworded",
        {"queue": "other"},
        at(2),
    )

    retimed = replace(redeclared, every=120.0, next_run_at=at(120))
    stored = await store.upsert_static_schedule(retimed)
    assert (stored.every, stored.next_run_at, stored.enabled) == (120.0, at(120), False)
    assert await store.get_schedule("nightly") == stored


async def test_upsert_gives_a_schedule_without_a_next_run_the_declared_one(store: Store) -> None:
    await store.create_schedule(schedule("idle", next_run_at=None))
    stored = await store.upsert_static_schedule(schedule("idle", next_run_at=at(60)))
    assert stored.next_run_at == at(60)


async def test_a_slot_fires_once_whoever_asks(store: Store, open_store: OpenStore) -> None:
    other = await open_store()
    tick = schedule("tick", next_run_at=at(60))
    await store.create_schedule(tick)
    runs = [run_of(tick, at(60)), run_of(tick, at(60))]
    results = await asyncio.gather(
        *(
            view.fire_schedule(
                schedule_id=tick.id, slot=at(60), next_run_at=at(120), now=at(61), task=run
            )
            for view, run in zip((store, other), runs, strict=True)
        )
    )
    assert sorted(results) == [(False, False), (True, True)]
    row = await store.get_schedule("tick")
    assert row is not None
    assert (row.next_run_at, row.last_run_at, row.updated_at) == (at(120), at(61), at(61))
    (fired,) = await store.list_tasks()
    assert fired.id == row.last_task_id
    assert (fired.schedule_id, fired.schedule_slot, fired.source) == (tick.id, at(60), "scheduled")

    stale = await store.fire_schedule(
        schedule_id=tick.id, slot=at(60), next_run_at=at(120), now=at(62), task=run_of(tick, at(60))
    )
    assert stale == (False, False)
    unknown = await store.fire_schedule(
        schedule_id=new_hex_id(), slot=at(60), next_run_at=at(120), now=at(62), task=None
    )
    assert unknown == (False, False)
    assert len(await store.list_tasks()) == 1


async def test_fire_schedule_skips_a_slot_while_a_run_is_active(store: Store) -> None:
    tick = schedule("tick", next_run_at=at(60))
    await store.create_schedule(tick)

    async def fire(slot: float, *, skip: bool = True, run: bool = True) -> tuple[bool, bool]:
        return await store.fire_schedule(
            schedule_id=tick.id,
            slot=at(slot),
            next_run_at=at(slot + 60),
            now=at(slot),
            task=run_of(tick, at(slot)) if run else None,
            skip_if_active=skip,
        )

    assert await fire(60) == (True, True)
    first = await store.get_schedule("tick")
    assert first is not None and first.last_task_id is not None
    assert await fire(120) == (True, False)  # the first run is pending
    assert await store.start_task(first.last_task_id, instance="a", now=at(121)) == 1
    assert await fire(180) == (True, False)  # ... and now running
    row = await store.get_schedule("tick")
    assert row is not None
    assert (row.next_run_at, row.last_task_id, row.last_run_at) == (
        at(240),
        first.last_task_id,
        at(60),
    )

    await store.finish_task(Outcome(first.last_task_id, "a", 1, "success", at(200)))
    assert await fire(240) == (True, True)
    assert await fire(300, skip=False) == (True, True)  # not skipping: overlaps allowed
    assert await fire(360, run=False) == (True, False)  # no task: the slot is only advanced
    assert len(await store.list_tasks()) == 3


async def test_delete_schedule_deletes_dynamic_ones_only(store: Store) -> None:
    static = schedule("declared-in-code", kind="static")
    dynamic = schedule("added-at-runtime", kind="dynamic")
    await store.create_schedule(static)
    await store.create_schedule(dynamic)

    assert await store.delete_schedule("declared-in-code") == static
    assert await store.get_schedule("declared-in-code") == static
    assert await store.delete_schedule("added-at-runtime") == dynamic
    assert await store.get_schedule("added-at-runtime") is None
    assert await store.delete_schedule("added-at-runtime") is None


async def test_pausing_and_resuming_a_schedule(store: Store) -> None:
    await store.create_schedule(schedule("tick", next_run_at=at(60)))
    assert await store.set_schedule_enabled("tick", enabled=False, next_run_at=None, now=at(5))
    row = await store.get_schedule("tick")
    assert row is not None
    assert (row.enabled, row.next_run_at, row.updated_at) == (False, at(60), at(5))
    assert await store.due_schedules(now=at(100)) == []
    assert await store.next_schedule_due() is None

    assert await store.set_schedule_enabled("tick", enabled=True, next_run_at=at(200), now=at(6))
    row = await store.get_schedule("tick")
    assert row is not None and (row.enabled, row.next_run_at) == (True, at(200))
    assert await store.next_schedule_due() == at(200)
    assert not await store.set_schedule_enabled("gone", enabled=True, next_run_at=None, now=at(6))


async def test_due_schedules_earliest_first(store: Store) -> None:
    assert await store.next_schedule_due() is None
    for name, due in (("a", 30), ("b", 10), ("c", 20), ("later", 90)):
        await store.create_schedule(schedule(name, next_run_at=at(due)))
    await store.create_schedule(schedule("paused", next_run_at=at(5), enabled=False))
    await store.create_schedule(schedule("unplanned", next_run_at=None))

    assert [row.name for row in await store.due_schedules(now=at(60))] == ["b", "c", "a"]
    assert [row.name for row in await store.due_schedules(now=at(60), limit=2)] == ["b", "c"]
    assert [row.name for row in await store.due_schedules(now=at(10))] == ["b"]
    assert await store.next_schedule_due() == at(10)


async def test_runs_of_a_schedule(store: Store) -> None:
    tick = schedule("tick")
    other = schedule("other")
    for row in (tick, other):
        await store.create_schedule(row)

    def run(row: ScheduleRow, slot: float) -> dict[str, Any]:
        return {"source": "scheduled", "schedule_id": row.id, "schedule_slot": at(slot)}

    await finished(store, start=at(10), end=at(15), **run(tick, 1))
    await finished(store, "failed", start=at(20), end=at(30), **run(tick, 2))
    await finished(store, start=at(40), end=at(41), **run(tick, 3))
    never_started = await store.insert_task_now(new_task(**run(tick, 4)))
    await store.cancel_task(never_started, now=at(50))
    await started(store, now=at(60), **run(tick, 5))
    await finished(store, start=at(70), end=at(80), **run(other, 1))

    assert await store.running_schedule_ids() == {tick.id}
    assert await store.schedule_runs(tick.id, limit=2) == [
        RunTimes(at(20), at(30)),
        RunTimes(at(40), at(41)),
    ]
    assert await store.schedule_runs(tick.id, limit=10) == [
        RunTimes(at(10), at(15)),
        RunTimes(at(20), at(30)),
        RunTimes(at(40), at(41)),
    ]

    assert await store.clear_schedule_runs(tick.id) == 4
    assert await store.schedule_runs(tick.id, limit=10) == []
    assert await store.running_schedule_ids() == {tick.id}
    assert await store.schedule_runs(other.id, limit=10) == [RunTimes(at(70), at(80))]
    assert await store.count_by_status() == {"running": 1, "success": 1}


# -- one-off firings -----------------------------------------------------------------------


async def test_replace_once_leaves_one_pending_firing_per_key(store: Store) -> None:
    first = firing("remind:1", at(60))
    assert await store.replace_once(first, now=T0) == first.id
    second = firing("remind:1", at(90))
    assert await store.replace_once(second, now=T0) == second.id
    assert await store.get_task(first.id) is None
    sooner = firing("remind:2", at(30))
    await store.replace_once(sooner, now=T0)

    assert ids(await store.pending_once()) == [sooner.id, second.id]
    assert ids(await store.pending_once(before=at(30))) == [sooner.id]
    assert await store.pending_once(before=at(29)) == []
    with pytest.raises(DatabaseError):  # one pending firing per key, however inserted
        await store.insert_task_now(firing("remind:1", at(10)))
    assert ids(await store.pending_once()) == [sooner.id, second.id]


async def test_cancel_once_deletes_only_the_pending_firing(store: Store) -> None:
    fired = firing("remind:1", at(0))
    await store.replace_once(fired, now=T0)
    assert await store.start_task(fired.id, instance="a", now=at(1)) == 1
    assert await store.pending_once() == []  # started: a task like any other
    retry = Outcome(fired.id, "a", 1, "pending", at(2), error="boom", next_attempt_at=at(30))
    await store.finish_task(retry)
    assert await store.pending_once() == []  # pending again, but it has run

    again = firing("remind:1", at(60))
    assert await store.replace_once(again, now=at(1)) == again.id
    assert await status_of(store, fired.id) == "pending"
    assert await store.cancel_once("remind:1")
    assert await store.get_task(again.id) is None
    assert await status_of(store, fired.id) == "pending"
    assert not await store.cancel_once("remind:1")
    assert not await store.cancel_once("never-scheduled")


async def test_a_failing_write_changes_nothing(store: Store) -> None:
    taken = await store.insert_task_now(new_task())
    tick = schedule("tick", next_run_at=at(60))
    await store.create_schedule(tick)
    clash = replace(run_of(tick, at(60)), id=taken)
    with pytest.raises(DatabaseError):
        await store.fire_schedule(
            schedule_id=tick.id, slot=at(60), next_run_at=at(120), now=at(60), task=clash
        )
    assert await store.get_schedule("tick") == tick
    fired = await store.fire_schedule(
        schedule_id=tick.id, slot=at(60), next_run_at=at(120), now=at(60), task=run_of(tick, at(60))
    )
    assert fired == (True, True)

    pending = firing("remind:1", at(60))
    await store.replace_once(pending, now=T0)
    with pytest.raises(DatabaseError):
        await store.replace_once(firing("remind:1", at(90), id=taken), now=T0)
    assert ids(await store.pending_once()) == [pending.id]


# -- instances -----------------------------------------------------------------------------


async def test_instances_register_and_heartbeat(store: Store) -> None:
    first = instance(heartbeat_at=at(0))
    second = instance(heartbeat_at=at(10), queues=["default", "reports"])
    for row in (first, second):
        await store.register_instance(row)
    assert await store.list_instances() == [second, first]
    with pytest.raises(DatabaseError):
        await store.register_instance(replace(first, hostname="another"))

    assert await store.heartbeat(first.id, now=at(20), info={"running": 2})
    assert await store.list_instances() == [
        replace(first, heartbeat_at=at(20), info={"running": 2}),
        second,
    ]

    await store.settle_instance(first.id, now=at(30), reason="stopped")
    assert not await store.heartbeat(first.id, now=at(40), info={})
    assert await store.list_instances() == [second]


async def test_dead_instances_by_stale_heartbeat_or_dead_pid(store: Store) -> None:
    me = instance(hostname="host-a", pid=1, heartbeat_at=at(0))
    stale = instance(hostname="host-b", pid=2, heartbeat_at=at(10))
    dead_pid = instance(hostname="host-a", pid=4242, heartbeat_at=at(100))
    same_pid_elsewhere = instance(hostname="host-b", pid=4242, heartbeat_at=at(100))
    alive = instance(hostname="host-a", pid=7, heartbeat_at=at(100))
    for row in (me, stale, dead_pid, same_pid_elsewhere, alive):
        await store.register_instance(row)

    dead = await store.dead_instances(
        me=me.id, stale_before=at(50), hostname="host-a", dead_pids=[4242]
    )
    assert set(dead) == {stale.id, dead_pid.id}  # never me, however stale
    assert (
        await store.dead_instances(me=me.id, stale_before=at(10), hostname="host-a", dead_pids=[])
        == []
    )
    assert await store.host_pids(hostname="host-a", me=me.id) == {dead_pid.id: 4242, alive.id: 7}


async def test_settling_interrupts_running_tasks_or_requeues_them(store: Store) -> None:
    await store.register_instance(instance(id="a"))
    plain = await started(store, owner="a", now=at(1))
    requeue = await started(store, owner="a", now=at(1), requeue_on_interrupt=True)
    elsewhere = await started(store, owner="b", now=at(1))

    counts = await store.settle_instance("a", now=at(50), reason="instance a stopped")
    assert counts == {"interrupted": 1, "requeued": 1, "released": 0, "lost": 0}

    row = await store.get_task(plain)
    assert row is not None
    assert (row.status, row.finished_at, row.error, row.owner) == (
        "interrupted",
        at(50),
        "instance a stopped",
        None,
    )
    row = await store.get_task(requeue)
    assert row is not None
    assert (row.status, row.next_attempt_at, row.error, row.owner, row.finished_at) == (
        "pending",
        at(50),
        "instance a stopped",
        None,
        None,
    )
    for task_id in (plain, requeue):
        assert await store.get_attempts(task_id) == [
            AttemptRow(task_id, 1, "a", at(1), at(50), "interrupted", "instance a stopped", None)
        ]
    assert ids(await store.claim_tasks(instance="c", queues=["default"], limit=5, now=at(50))) == [
        requeue
    ]
    assert await store.start_task(requeue, instance="c", now=at(51)) == 2
    assert await status_of(store, elsewhere) == "running"
    assert await store.list_instances() == []


async def test_settling_releases_claimed_pending_tasks(store: Store) -> None:
    claimed = new_task()
    await store.insert_task_now(claimed)
    await store.claim_tasks(instance="a", queues=["default"], limit=1, now=T0)

    counts = await store.settle_instance("a", now=at(50), reason="instance a stopped")
    assert counts == {"interrupted": 0, "requeued": 0, "released": 1, "lost": 0}
    row = await store.get_task(claimed.id)
    assert row is not None
    assert (row.status, row.owner, row.error, row.attempts) == ("pending", None, None, 0)
    assert ids(await store.claim_tasks(instance="b", queues=["default"], limit=1, now=T0)) == [
        claimed.id
    ]


async def test_settling_loses_memory_only_tasks(store: Store) -> None:
    payload = MEMORY_ONLY + '{"args": ["<function <lambda>>"]}'
    running = await started(store, owner="a", now=at(1), payload=payload, requeue_on_interrupt=True)
    waiting = new_task(payload=payload, queue="memory")
    await store.insert_task_now(waiting)
    await store.claim_tasks(instance="a", queues=["memory"], limit=1, now=T0)

    counts = await store.settle_instance("a", now=at(50), reason="instance a stopped")
    assert counts == {"interrupted": 0, "requeued": 0, "released": 0, "lost": 2}
    why = f"instance a stopped; {MEMORY_ONLY_LOST}"
    for task_id in (running, waiting.id):
        row = await store.get_task(task_id)
        assert row is not None
        assert (row.status, row.finished_at, row.error, row.owner) == (
            "interrupted",
            at(50),
            why,
            None,
        )
    assert await store.get_attempts(running) == [
        AttemptRow(running, 1, "a", at(1), at(50), "interrupted", why, None)
    ]
    assert await store.get_attempts(waiting.id) == []


async def test_settling_only_some_tasks_keeps_the_instance(store: Store) -> None:
    await store.register_instance(instance(id="a"))
    stuck = await started(store, owner="a")
    healthy = await started(store, owner="a")

    counts = await store.settle_instance("a", now=at(50), reason="stuck", only=[stuck])
    assert counts == {"interrupted": 1, "requeued": 0, "released": 0, "lost": 0}
    assert await status_of(store, stuck) == "interrupted"
    assert await status_of(store, healthy) == "running"
    assert await store.heartbeat("a", now=at(51), info={})


# -- meta ----------------------------------------------------------------------------------


async def test_meta_values_are_set_and_replaced(store: Store) -> None:
    assert await store.get_meta("queues") is None
    await store.set_meta("queues", '{"default": 4}', now=T0)
    assert await store.get_meta("queues") == '{"default": 4}'
    await store.set_meta("queues", '{"default": 8}', now=at(1))
    assert await store.get_meta("queues") == '{"default": 8}'
    assert await store.get_meta("other") is None


# -- paused queues ---------------------------------------------------------------------------


async def test_a_paused_queue_keeps_its_first_pause_until_resumed(
    open_store: OpenStore,
) -> None:
    store, other = await open_store(), await open_store()  # two processes' views
    assert await store.paused_queues() == []
    first = await store.pause_queue("reports", by="alice", now=T0)
    assert (first.queue, first.paused_at, first.paused_by) == ("reports", T0, "alice")
    assert await other.pause_queue("reports", by="bob", now=at(5)) == first
    await other.pause_queue("email", by="bob", now=at(6))
    assert [p.queue for p in await store.paused_queues()] == ["email", "reports"]
    assert await other.resume_queue("reports") is True
    assert await store.resume_queue("reports") is False
    assert [(p.queue, p.paused_by) for p in await store.paused_queues()] == [("email", "bob")]
