"""The FastAPI integration over HTTP: the fastapi-taskflow examples, the durability
barrier, eager tasks in sync routes, injection patterns."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from tests.apps.web import build_app, events


def wait_final(client: TestClient, task_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/report/{task_id}").json()
        if body["status"] in ("success", "failed", "cancelled", "interrupted"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def row_count(url: str, task_id: str) -> int:
    async def count() -> int:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.scalar(
                    sa.text("SELECT count(*) FROM taskflow_tasks WHERE id = :id"), {"id": task_id}
                )
        finally:
            await engine.dispose()

    return asyncio.run(count())


def test_spec_example_sync_route_and_store_get(db_url):
    app, _ = build_app(db_url)
    with TestClient(app) as client:
        task_id = client.post("/signup", params={"email": "a@b.c"}).json()["task_id"]
        body = wait_final(client, task_id)
        assert body["status"] == "success"
        assert body["result"] == "sent a@b.c"
        assert body["args"] == ["a@b.c"]
        assert client.get("/report/nope").status_code == 404
        assert client.get(f"/async-report/{task_id}").json()["status"] == "success"


@pytest.mark.parametrize("route", ["/signup", "/async-signup"])
def test_task_row_is_committed_before_the_response(db_url, route):
    app, _ = build_app(db_url)
    with TestClient(app) as client:
        for i in range(5):
            task_id = client.post(route, params={"email": f"{i}@x"}).json()["task_id"]
            assert row_count(db_url, task_id) == 1


@pytest.mark.parametrize("route", ["/invoice/7/send", "/async-invoice/7"])
def test_idempotency_key_in_routes(db_url, route):
    app, _ = build_app(db_url)
    with TestClient(app) as client:
        ids = {client.post(route).json()["task_id"] for _ in range(3)}
        assert len(ids) == 1
        assert wait_final(client, ids.pop())["status"] == "success"


def test_a_repeated_key_is_answered_only_once_its_task_is_committed(db_url):
    """A request whose idempotency key belongs to a task this process is still writing
    (an async route queues its write for the group commit) waits for that commit: when
    the write fails, both requests get 503, and no client holds an id that was never
    stored. (A sync route's write is committed before ``add_task`` returns.)"""
    route = "/async-invoice/7"
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from taskflow import DatabaseError

    app, manager = build_app(db_url)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        committer = manager.db._committer
        real_write = committer._write_batch
        release = client.portal.call(asyncio.Event)

        async def held_then_failing_inserts(groups):
            if any(kind == "insert" for kind, _ops in groups):
                await release.wait()
                raise DatabaseError("injected: disk I/O error")
            return await real_write(groups)

        intake = manager._intake
        real_holder = intake._live_key_holder
        found_queued = threading.Event()

        def holder(key):
            found = real_holder(key)
            if found is not None:
                found_queued.set()  # the second request met the first's pending write
            return found

        committer._write_batch = held_then_failing_inserts
        intake._live_key_holder = holder
        try:
            first = pool.submit(client.post, route)
            deadline = time.monotonic() + 10
            while not intake._queued_keys:  # the first request's write is in flight
                assert time.monotonic() < deadline and not first.done(), first
                time.sleep(0.01)
            second = pool.submit(client.post, route)
            assert found_queued.wait(10), "the second request never looked the key up"
        finally:
            client.portal.call(release.set)
        answers = [first.result(30), second.result(30)]
        assert [answer.status_code for answer in answers] == [503, 503], [
            answer.text for answer in answers
        ]
        assert client.portal.call(manager.list_tasks) == []
        committer._write_batch = real_write
        intake._live_key_holder = real_holder
        ids = {client.post(route).json()["task_id"] for _ in range(2)}
        assert len(ids) == 1
        assert [task.task_id for task in client.portal.call(manager.list_tasks)] == list(ids)


def test_eager_task_in_sync_route(db_url):
    import threading

    app, _ = build_app(db_url)
    events["sync-eager"] = threading.Event()
    with TestClient(app) as client:
        response = client.post("/eager/sync-eager")
        assert response.status_code == 200
        assert events["sync-eager"].wait(10)
        assert wait_final(client, response.json()["task_id"])["status"] == "success"


def test_install_makes_bare_background_tasks_managed(db_url):
    app, _ = build_app(db_url, install=True)
    with TestClient(app) as client:
        body = client.post("/bare", params={"email": "z@z"}).json()
        assert body["managed"] is True
        assert wait_final(client, body["task_id"])["result"] == "sent z@z"


def test_many_tasks_in_one_request(db_url):
    app, _ = build_app(db_url)
    with TestClient(app) as client:
        ids = client.post("/batch", params={"count": 100}).json()["task_ids"]
        assert len(set(ids)) == 100
        assert all(wait_final(client, task_id)["status"] == "success" for task_id in ids[::10])


def test_task_enqueued_before_an_error_still_runs(db_url):
    app, manager = build_app(db_url)
    with TestClient(app) as client:
        assert client.post("/fails-after-enqueue").status_code == 409
        deadline = time.monotonic() + 10
        while True:
            records = client.portal.call(manager.list_tasks)
            if records and records[0].status == "success":
                break
            assert time.monotonic() < deadline, records
            time.sleep(0.02)
        assert records[0].result == 42


def test_spec_example_adding_tasks_outside_a_route(db_url):
    """fastapi-taskflow's "Adding tasks outside a route" example, as written."""
    import asyncio as aio
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from taskflow import ManagedBackgroundTasks, TaskManager
    from taskflow.executor import make_background_func
    from tests.apps import tasks as app_tasks

    task_manager = TaskManager(database_url=db_url)
    task_manager.task()(app_tasks.add)
    started: dict[str, str] = {}

    async def on_startup():
        tasks = ManagedBackgroundTasks(task_manager)
        started["id"] = tasks.add_task(app_tasks.add, 20, 22)
        aio.ensure_future(tasks.tasks[-1]())
        started["other"] = await make_background_func(task_manager, app_tasks.add, 1, 1)()

    @asynccontextmanager
    async def lifespan(app):
        await on_startup()
        yield

    app = FastAPI(lifespan=lifespan)
    task_manager.init_app(app)

    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while True:
            record = client.portal.call(task_manager.get_task, started["id"])
            if record.status == "success":
                break
            assert time.monotonic() < deadline, record
            time.sleep(0.02)
        assert record.result == 42
        other = client.portal.call(task_manager.get_task, started["other"])
        assert other is not None


@pytest.mark.parametrize("route", ["/signup", "/async-signup"])
def test_database_failure_is_a_503_and_nothing_claims_success(db_url, route):
    from taskflow import DatabaseError

    app, manager = build_app(db_url)
    with TestClient(app) as client:
        committer = manager.db._committer
        real_write = committer._write_batch

        async def failing_inserts(groups):
            if any(kind == "insert" for kind, _ops in groups):
                raise DatabaseError("injected: disk I/O error")
            return await real_write(groups)

        committer._write_batch = failing_inserts
        response = client.post(route, params={"email": "x@y.z"})
        assert response.status_code == 503
        assert "task could not be stored" in response.json()["detail"]
        assert client.portal.call(manager.list_tasks) == []
        committer._write_batch = real_write
        recovered = client.post(route, params={"email": "x@y.z"})
        assert recovered.status_code == 200
        assert wait_final(client, recovered.json()["task_id"])["status"] == "success"
