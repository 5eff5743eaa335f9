"""Enqueueing in the application's own transaction (a transactional outbox): the task
runs once the application commits, never when it rolls back, and no other connection
sees it before the commit. On SQLite and PostgreSQL, with the application's own engine
and table on the same database."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from taskflow import QueueConfig, TaskManager
from taskflow.errors import ConfigurationError, QueueFullError
from tests.conftest import wait_for_status
from tests.test_timing import serve

pytestmark = pytest.mark.anyio

ran: dict[str, threading.Event] = {}


class Base(DeclarativeBase):
    pass


class Order(Base):
    """The application's own table."""

    __tablename__ = "outbox_test_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


async def ship(order_id: int, token: str) -> str:
    """The task: marks ``token`` as run."""
    ran.setdefault(token, threading.Event()).set()
    return f"shipped {order_id}"


def expect(token: str) -> threading.Event:
    return ran.setdefault(token, threading.Event())


async def has_run(token: str, timeout: float = 10.0) -> bool:
    """Wait (off the event loop, where the task runs) until ``token``'s task ran."""
    return await asyncio.to_thread(expect(token).wait, timeout)


@pytest.fixture(autouse=True)
def fresh_tokens() -> None:
    ran.clear()


@pytest.fixture
async def app_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """The application's engine on taskflow's database, with its own table, empty."""
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


async def task_rows(engine: AsyncEngine) -> int:
    """Task rows another connection sees (committed ones)."""
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM taskflow_tasks")) or 0)


async def order_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(Order)) or 0)


async def assert_nothing_runs(manager: TaskManager, task_id: str, token: str) -> None:
    """No row for ``task_id``; and a task committed afterwards on the same queue runs
    while ``token``'s never did."""
    assert await manager.get_task(task_id) is None
    marker = await manager.enqueue(ship, 0, f"{token}-marker")
    assert (await wait_for_status(manager, marker)).status.value == "success"
    assert not expect(token).is_set()


# -- AsyncSession and AsyncConnection --------------------------------------------------------


async def test_commit_runs_the_task_promptly(manager_factory, app_engine):
    # A 30 s poll: the task can only start this soon if the commit woke a claim loop.
    manager = manager_factory(poll_interval=30.0)
    await manager.startup()
    sessions = async_sessionmaker(app_engine)
    async with sessions() as session, session.begin():
        session.add(Order(id=1, item="book"))
        task_id = await manager.enqueue(ship, 1, "commit", session=session, tags={"order": "1"})
    assert await has_run("commit")
    record = await wait_for_status(manager, task_id)
    assert record.status.value == "success"
    assert record.result == "shipped 1"
    assert record.tags == {"order": "1"}
    assert await order_rows(app_engine) == 1


async def test_rollback_leaves_no_row_and_nothing_runs(manager_factory, app_engine):
    manager = manager_factory()
    await manager.startup()
    async with async_sessionmaker(app_engine)() as session:
        await session.begin()
        session.add(Order(id=2, item="lamp"))
        task_id = await manager.enqueue(ship, 2, "rollback", session=session)
        await session.rollback()
    assert await order_rows(app_engine) == 0
    await assert_nothing_runs(manager, task_id, "rollback")


async def test_an_exception_in_the_transaction_rolls_the_task_back(manager_factory, app_engine):
    manager = manager_factory()
    await manager.startup()
    task_id = ""
    with pytest.raises(RuntimeError, match="payment declined"):
        async with async_sessionmaker(app_engine)() as session, session.begin():
            session.add(Order(id=3, item="desk"))
            task_id = await manager.enqueue(ship, 3, "raised", session=session)
            raise RuntimeError("payment declined")
    assert task_id
    assert await order_rows(app_engine) == 0
    await assert_nothing_runs(manager, task_id, "raised")


async def test_no_other_connection_sees_the_task_before_the_commit(
    manager_factory, app_engine, db_url
):
    manager = manager_factory()
    await manager.startup()
    other = create_async_engine(db_url)
    try:
        async with app_engine.connect() as conn:
            await conn.begin()
            await conn.execute(sa.insert(Order).values(id=4, item="chair"))
            task_id = await manager.enqueue(ship, 4, "visible", session=conn, queue="default")
            assert await task_rows(other) == 0
            assert await manager.get_task(task_id) is None
            if db_url.startswith("postgresql"):
                # A claim now finds nothing (SQLite's claim would wait for our lock).
                assert await manager.coordinator.claim_now() == 0
            assert not expect("visible").is_set()
            await conn.commit()
        assert await task_rows(other) == 1
    finally:
        await other.dispose()
    assert (await wait_for_status(manager, task_id)).status.value == "success"
    assert expect("visible").is_set()


async def test_a_connection_without_a_transaction_gets_one(manager_factory, app_engine):
    manager = manager_factory(poll_interval=30.0)  # the commit must wake the claim loop
    await manager.startup()
    async with app_engine.connect() as conn:
        assert not conn.in_transaction()
        task_id = await manager.enqueue(ship, 5, "autobegun", session=conn)
        assert conn.in_transaction()
        await conn.commit()
    assert (await wait_for_status(manager, task_id)).status.value == "success"


async def test_options_apply_in_the_transaction(manager_factory, app_engine):
    manager = manager_factory(queues=["default", "mail"])
    await manager.startup()
    async with async_sessionmaker(app_engine)() as session, session.begin():
        deferred = await manager.enqueue(ship, 6, "deferred", session=session, defer=3600)
        routed = await manager.enqueue(ship, 7, "routed", session=session, queue="mail", priority=5)
    record = await wait_for_status(manager, routed)
    assert (record.status.value, record.queue, record.priority) == ("success", "mail", 5)
    later = await manager.get_task(deferred)
    assert later is not None and later.status.value == "pending"
    assert not expect("deferred").is_set()


async def test_idempotency_key_in_a_transaction(manager_factory, app_engine):
    manager = manager_factory()
    await manager.startup()
    sessions = async_sessionmaker(app_engine)
    async with sessions() as session, session.begin():
        first = await manager.enqueue(ship, 8, "keyed", session=session, idempotency_key="o-8")
        again = await manager.enqueue(ship, 8, "keyed", session=session, idempotency_key="o-8")
    assert again == first
    async with sessions() as session, session.begin():
        later = await manager.enqueue(ship, 8, "keyed", session=session, idempotency_key="o-8")
    assert later == first
    assert (await wait_for_status(manager, first)).status.value == "success"
    assert await task_rows(app_engine) == 1


async def test_a_session_on_another_database_is_refused(
    manager_factory, app_engine, db_url, tmp_path
):
    manager = manager_factory()
    await manager.startup()
    if db_url.startswith("sqlite"):
        elsewhere = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    else:
        elsewhere = make_url(db_url).set(database="not_taskflows").render_as_string(False)
    other = create_async_engine(elsewhere)
    try:
        async with async_sessionmaker(other)() as session:
            with pytest.raises(ConfigurationError, match="another|taskflow stores its tasks"):
                await manager.enqueue(ship, 9, "elsewhere", session=session)
            assert not session.in_transaction()  # refused before anything began
    finally:
        await other.dispose()
    assert await task_rows(app_engine) == 0


async def test_the_same_database_spelled_differently_is_accepted(
    manager_factory, app_engine, db_url
):
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        spelled = f"sqlite+aiosqlite:///{path.parent}/./{path.name}"
    elif url.port in (None, 5432):  # the default port, said or not
        spelled = url.set(port=None if url.port else 5432).render_as_string(False)
    else:
        pytest.skip("the test database is not on PostgreSQL's default port")
    manager = manager_factory()
    await manager.startup()
    engine = create_async_engine(spelled)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            task_id = await manager.enqueue(ship, 10, "spelled", session=session)
    finally:
        await engine.dispose()
    assert (await wait_for_status(manager, task_id)).status.value == "success"


async def test_a_private_temporary_database_never_matches(app_engine):
    manager = TaskManager()  # a private temporary SQLite database
    await manager.startup()
    try:
        async with async_sessionmaker(app_engine)() as session:
            with pytest.raises(ConfigurationError, match="private temporary database"):
                await manager.enqueue(ship, 11, "private", session=session)
    finally:
        await manager.shutdown()


async def test_a_wrong_session_type_is_a_type_error(manager_factory, app_engine, db_url):
    manager = manager_factory()
    await manager.startup()
    with pytest.raises(TypeError, match="AsyncSession or AsyncConnection"):
        await manager.enqueue(ship, 12, "wrong", session=app_engine)
    with pytest.raises(TypeError, match="use enqueue_sync"):
        await manager.enqueue(ship, 12, "wrong", session=Session())
    async with async_sessionmaker(app_engine)() as session:
        with pytest.raises(TypeError, match="Session .*or Connection"):
            manager.enqueue_sync(ship, 12, "wrong", session=session)
    with pytest.raises(TypeError, match="Session .*or Connection"):
        manager.enqueue_sync(ship, 12, "wrong", session="postgresql://db")
    assert await task_rows(app_engine) == 0


async def test_a_full_queue_refuses_and_writes_nothing(manager_factory, app_engine):
    manager = manager_factory(queues={"small": QueueConfig(max_size=1)})
    await manager.startup()
    await manager.pause_queue("small")  # its one task keeps waiting
    sessions = async_sessionmaker(app_engine)
    async with sessions() as session, session.begin():
        await manager.enqueue(ship, 16, "full", session=session, queue="small")
    async with sessions() as session, session.begin():
        session.add(Order(id=16, item="vase"))
        with pytest.raises(QueueFullError):
            await manager.enqueue(ship, 17, "full", session=session, queue="small")
    assert await task_rows(app_engine) == 1
    assert await order_rows(app_engine) == 1  # the application's own write went on


async def test_options_the_transaction_cannot_honour_are_refused(manager_factory, app_engine):
    manager = manager_factory()
    manager.task(unique_for=60)(unique_ship)
    await manager.startup()
    async with async_sessionmaker(app_engine)() as session:
        with pytest.raises(ConfigurationError, match="depends_on"):
            await manager.enqueue(ship, 18, "x", session=session, depends_on=["a"])
        with pytest.raises(ConfigurationError, match="unique_for"):
            await manager.enqueue(unique_ship, 18, session=session)  # the decorator's window
    assert await task_rows(app_engine) == 0


def unique_ship(order: int) -> str:
    return f"shipped {order}"


# -- sync Session and Connection -------------------------------------------------------------


def sync_url(db_url: str) -> str:
    """``db_url`` with a sync driver; skips when none is installed."""
    if db_url.startswith("sqlite"):
        return db_url.replace("sqlite+aiosqlite", "sqlite", 1)
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("no sync PostgreSQL driver (psycopg) is installed")
    return db_url.replace("postgresql+asyncpg", "postgresql+psycopg", 1)


@pytest.fixture
def sync_engine(db_url: str, app_engine: AsyncEngine) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sync_url(db_url))
    yield engine
    engine.dispose()


async def test_sync_session_commit_and_rollback(manager_factory, sync_engine, app_engine):
    manager = manager_factory(poll_interval=30.0)
    await manager.startup()

    def committed() -> str:
        with Session(sync_engine) as session, session.begin():
            session.add(Order(id=13, item="mug"))
            return manager.enqueue_sync(ship, 13, "sync-commit", session=session)

    def rolled_back() -> str:
        with Session(sync_engine) as session:
            session.add(Order(id=14, item="pen"))
            task_id = manager.enqueue_sync(ship, 14, "sync-rollback", session=session)
            session.rollback()
            return task_id

    lost = await asyncio.to_thread(rolled_back)
    task_id = await asyncio.to_thread(committed)
    assert await has_run("sync-commit")  # woken by the commit despite the 30 s poll
    assert (await wait_for_status(manager, task_id)).status.value == "success"
    assert await manager.get_task(lost) is None
    assert not expect("sync-rollback").is_set()
    assert await order_rows(app_engine) == 1


async def test_sync_connection(manager_factory, sync_engine):
    manager = manager_factory(poll_interval=30.0)  # the commit must wake the claim loop
    await manager.startup()

    def enqueue() -> str:
        with sync_engine.begin() as conn:
            conn.execute(sa.insert(Order).values(id=15, item="cup"))
            return manager.enqueue_sync(ship, 15, "sync-conn", session=conn, priority=3)

    task_id = await asyncio.to_thread(enqueue)
    record = await wait_for_status(manager, task_id)
    assert (record.status.value, record.priority) == ("success", 3)


# -- a FastAPI endpoint, over HTTP -------------------------------------------------------------


def order_app(db_url: str) -> FastAPI:
    task_manager = TaskManager(database_url=db_url, poll_interval=0.05)
    # No pool: no connection outlives the server's event loop.
    sessions = async_sessionmaker(create_async_engine(db_url, poolclass=NullPool))
    app = FastAPI()
    task_manager.init_app(app)

    @app.post("/orders/{order_id}")
    async def place_order(order_id: int, item: str, fail: bool = False) -> dict[str, str]:
        async with sessions() as session, session.begin():
            session.add(Order(id=order_id, item=item))
            task_id = await task_manager.enqueue(
                ship, order_id, f"http-{order_id}", session=session
            )
            if fail:
                raise HTTPException(409, "out of stock")
        return {"task_id": task_id}

    @app.get("/tasks/{task_id}")
    async def task_status(task_id: str) -> dict[str, str | None]:
        record = await task_manager.get_task(task_id)
        return {"status": None if record is None else record.status.value}

    return app


def wait_status(client: httpx.Client, task_id: str, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/tasks/{task_id}").json()["status"]
        if status in ("success", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


async def test_fastapi_endpoint_over_http(app_engine, db_url):
    def scenario() -> None:
        with serve(order_app(db_url)) as base, httpx.Client(base_url=base, timeout=30) as client:
            response = client.post("/orders/21", params={"item": "sofa"})
            assert response.status_code == 200
            assert expect("http-21").wait(10)
            assert wait_status(client, response.json()["task_id"]) == "success"
            refused = client.post("/orders/22", params={"item": "bed", "fail": True})
            assert refused.status_code == 409
            marker = client.post("/orders/23", params={"item": "rug"}).json()["task_id"]
            assert wait_status(client, marker) == "success"
            assert not expect("http-22").is_set()

    await asyncio.to_thread(scenario)
    async with app_engine.connect() as conn:
        items = (await conn.scalars(sa.select(Order.item).order_by(Order.id))).all()
    assert items == ["sofa", "rug"]
    assert await task_rows(app_engine) == 2
