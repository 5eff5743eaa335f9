"""Request timing modes (spec 004) over real HTTP: immediate, after the route, after the
response; error handlers; shielding; Tasks in dependencies and WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, WebSocket
from fastapi.testclient import TestClient

from taskflow import Task, TaskManager, TaskOptions, Tasks, add_tasks
from tests.apps import tasks as app_tasks


class Recorder:
    """A thread-safe event log shared by the app, its tasks and the test."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def add(self, event: str) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, *events: str, timeout: float = 10.0) -> list[str]:
        with self.changed:
            ok = self.changed.wait_for(lambda: set(events) <= set(self.events), timeout)
            assert ok, f"missing {set(events) - set(self.events)} in {self.events}"
            return list(self.events)


class ResponseStartMarker:
    """ASGI middleware that records the moment a response starts."""

    def __init__(self, app: Any, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope, receive, send):
        async def marking_send(message):
            if message["type"] == "http.response.start":
                self.recorder.add("response-start")
            await send(message)

        await self.app(scope, receive, marking_send if scope["type"] == "http" else send)


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread, on a loopback port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def timing_app(db_url: str, recorder: Recorder, **manager_options) -> tuple[FastAPI, TaskManager]:
    app = FastAPI()
    manager = TaskManager(database_url=db_url, poll_interval=0.05, **manager_options)
    app.add_middleware(ResponseStartMarker, recorder=recorder)
    add_tasks(app, task_manager=manager)

    async def mark(label: str) -> str:
        recorder.add(label)
        return label

    def mark_sync(label: str) -> str:
        recorder.add(label)
        return label

    @app.post("/combined")
    async def combined(tasks: Tasks) -> dict:
        first = tasks.schedule(mark, "A")
        await first.started.wait()
        tasks.after_route.schedule(mark, "B")
        tasks.after_response.schedule(mark_sync, "C")
        recorder.add("endpoint-return")
        return {"task_id": first.task_id}

    @app.post("/fails")
    async def fails(tasks: Tasks) -> dict:
        tasks.after_route.schedule(mark, "after-route-of-failed")
        tasks.after_response.schedule(mark, "after-response-of-failed")
        raise HTTPException(409, "conflict")

    return app, manager


def test_three_modes_run_in_order_and_are_durable(db_url):
    recorder = Recorder()
    app, manager = timing_app(db_url, recorder)
    with serve(app) as url:
        response = httpx.post(f"{url}/combined")
        assert response.status_code == 200
        events = recorder.wait_for("A", "B", "C")
        assert events.index("A") < events.index("endpoint-return") < events.index("B")
        assert events.index("B") < events.index("response-start") < events.index("C")
        records = asyncio.run_coroutine_threadsafe(
            manager.list_tasks(), manager._engine.runtime.loop
        ).result()
        deadline = time.monotonic() + 10
        while any(not r.status.is_final for r in records):
            assert time.monotonic() < deadline
            records = asyncio.run_coroutine_threadsafe(
                manager.list_tasks(), manager._engine.runtime.loop
            ).result()
        assert sorted(r.result for r in records) == ["A", "B", "C"]
        assert all(r.status == "success" for r in records)


@pytest.mark.parametrize("policy, expected", [("run", "success"), ("cancel", "cancelled")])
def test_tasks_of_a_failing_endpoint_follow_the_policy(db_url, policy, expected):
    recorder = Recorder()
    app, manager = timing_app(db_url, recorder, endpoint_error=policy)
    with serve(app) as url:
        assert httpx.post(f"{url}/fails").status_code == 409
        deadline = time.monotonic() + 10
        while True:
            records = asyncio.run_coroutine_threadsafe(
                manager.list_tasks(), manager._engine.runtime.loop
            ).result()
            if len(records) == 2 and all(r.status.is_final for r in records):
                break
            assert time.monotonic() < deadline, records
            time.sleep(0.02)
        assert {r.status.value for r in records} == {expected}
        if policy == "cancel":
            assert all("HTTPException" in r.error for r in records)
            assert "after-route-of-failed" not in recorder.events


def test_task_object_handlers_and_contained_errors(db_url):
    failures: list[tuple[Any, str]] = []

    async def boom() -> None:
        raise ValueError("task failed")

    class Fatal(BaseException):
        pass

    async def fatal() -> None:
        raise Fatal("not an Exception")

    def broken_handler(task: Task, exc: BaseException) -> None:
        raise RuntimeError("handler bug")

    app = FastAPI()
    manager = add_tasks(app, task_manager=TaskManager(database_url=db_url))

    @app.post("/handled")
    async def handled(tasks: Tasks) -> dict:
        task = tasks.task(on_error=lambda t, e: failures.append((t, str(e)))).schedule(boom)
        assert (task.func, task.args, task.kwargs) == (boom, (), {})
        record = await task.wait(timeout=10)
        return {"status": record.status.value, "started": task.started.is_set()}

    @app.post("/broken")
    async def broken(tasks: Tasks) -> dict:
        first = tasks.task(on_error=broken_handler).schedule(boom)
        second = tasks.schedule(fatal)
        return {
            "first": (await first.wait(10)).status.value,
            "second": (await second.wait(10)).error,
        }

    with TestClient(app) as client:
        assert client.post("/handled").json() == {"status": "failed", "started": True}
        assert len(failures) == 1 and failures[0][1] == "task failed"
        assert isinstance(failures[0][0], Task)
        for _ in range(3):  # a raising handler or a BaseException harms no later request
            body = client.post("/broken").json()
            assert body["first"] == "failed" and body["second"].startswith("Fatal")
        assert client.post("/handled").status_code == 200
    assert manager.started is False


def test_tasks_in_dependencies_and_depends_default(db_url):
    recorder = Recorder()
    app = FastAPI()
    add_tasks(app, task_manager=TaskManager(database_url=db_url))

    async def log_auth_attempt(user_id: int) -> None:
        recorder.add(f"auth-{user_id}")

    async def track_profile_view(user_id: int) -> None:
        recorder.add(f"view-{user_id}")

    async def get_current_user(tasks: Tasks) -> dict:
        user = {"id": 123, "name": "Alice"}
        tasks.after_route.schedule(log_auth_attempt, user["id"])
        return user

    @app.get("/profile")
    async def get_profile(user: dict = Depends(get_current_user), tasks: Tasks = Depends()) -> dict:
        tasks.schedule(track_profile_view, user["id"])
        return user

    with TestClient(app) as client:
        assert client.get("/profile").json() == {"id": 123, "name": "Alice"}
        recorder.wait_for("auth-123", "view-123")


def test_sync_task_burst_does_not_block_sync_endpoints(db_url):
    release = threading.Event()
    blocked = threading.Semaphore(0)

    def blocking_job() -> None:
        blocked.release()
        release.wait(30)

    app = FastAPI()
    manager = add_tasks(app, task_manager=TaskManager(database_url=db_url, max_sync_threads=4))

    @app.post("/burst")
    def burst(tasks: Tasks) -> dict:
        return {"ids": [tasks.schedule(blocking_job).task_id for _ in range(8)]}

    @app.get("/ping")
    def ping() -> dict:
        return {"pong": True}

    with serve(app) as url:
        httpx.post(f"{url}/burst", timeout=10)
        for _ in range(4):  # every taskflow thread is now busy
            assert blocked.acquire(timeout=10)
        answers = [httpx.get(f"{url}/ping", timeout=5).json() for _ in range(20)]
        assert answers == [{"pong": True}] * 20
        release.set()
    assert manager.started is False


def test_websocket_immediate_and_after_route(db_url):
    recorder = Recorder()
    app = FastAPI()
    add_tasks(app, task_manager=TaskManager(database_url=db_url))

    async def note(label: str) -> None:
        recorder.add(label)

    @app.websocket("/ws")
    async def socket(websocket: WebSocket, tasks: Tasks) -> None:
        await websocket.accept()
        task = tasks.schedule(note, "ws-now")
        await task.started.wait()
        tasks.after_route.schedule(note, "ws-after")
        await websocket.send_text("scheduled")
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "scheduled"
        recorder.wait_for("ws-now", "ws-after")


def test_shielded_tasks_finish_before_the_app_teardown(db_url):
    recorder = Recorder()
    gate = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        recorder.add("app-teardown")

    app = FastAPI(lifespan=lifespan)
    manager = add_tasks(app, task_manager=TaskManager(database_url=db_url, shutdown_timeout=10))

    async def shielded_job() -> str:
        await asyncio.to_thread(gate.wait, 10)
        recorder.add("shielded-done")
        return "done"

    async def plain_job() -> str:
        await asyncio.Event().wait()
        return "never"

    ids: dict[str, str] = {}

    @app.post("/start")
    async def start(tasks: Tasks) -> dict:
        ids["shielded"] = tasks.task(shield=True).schedule(shielded_job).task_id
        ids["plain"] = tasks.schedule(plain_job).task_id
        return {}

    with TestClient(app) as client:
        client.post("/start")
        threading.Timer(0.2, gate.set).start()
    events = recorder.wait_for("shielded-done", "app-teardown")
    assert events.index("shielded-done") < events.index("app-teardown")

    check = TaskManager(database_url=db_url)

    async def statuses() -> dict[str, str]:
        await check.startup()
        try:
            return {k: (await check.get_task(v)).status.value for k, v in ids.items()}
        finally:
            await check.shutdown()

    assert asyncio.run(statuses()) == {"shielded": "success", "plain": "interrupted"}
    assert manager.started is False


def test_add_tasks_without_a_manager_and_with_default_config(monkeypatch):
    monkeypatch.delenv("TASKFLOW_DATABASE_URL", raising=False)
    seen: list[str] = []
    app = FastAPI()
    manager = add_tasks(
        app, config=TaskOptions(name="from-config", on_error=lambda t, e: seen.append(str(e)))
    )

    async def fails() -> None:
        raise RuntimeError("default handler")

    @app.post("/go")
    async def go(tasks: Tasks) -> dict:
        record = await tasks.schedule(fails).wait(10)
        return {"tags": record.tags}

    with TestClient(app) as client:
        assert client.post("/go").json() == {"tags": {"name": "from-config"}}
    assert seen == ["default handler"]
    assert manager.started is False


def test_managed_background_tasks_serves_both_styles(db_url):
    recorder = Recorder()
    app = FastAPI()
    manager = TaskManager(database_url=db_url)
    manager.init_app(app)

    async def note(label: str) -> str:
        recorder.add(label)
        return label

    @app.post("/mixed")
    async def mixed(tasks=Depends(manager.get_tasks)) -> dict:
        now = tasks.schedule(note, "now")
        tasks.after_route.schedule(note, "after-route")
        later = tasks.add_task(app_tasks.add, 1, 2)
        return {"now": now.task_id, "later": later}

    with TestClient(app) as client:
        ids = client.post("/mixed").json()
        recorder.wait_for("now", "after-route")
        deadline = time.monotonic() + 10
        while (record := client.portal.call(manager.get_task, ids["later"])).result != 3:
            assert time.monotonic() < deadline, record
            time.sleep(0.02)
