"""fastapi-tasks compatibility: its error when ``add_tasks(app)`` is missing, and tasks
whose function or arguments can only live in memory (closures, locks, events).

Task functions live at module level so that only their arguments decide whether a task
can be stored.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.dependencies import utils as fastapi_utils
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow import TaskAdmin, TaskflowError, Tasks, add_tasks
from taskflow._fastapi.tasks_api import UnwiredBackgroundTasks
from taskflow.errors import (
    FastAPITasksError,
    FastAPITasksUninitializedAppError,
    NotStarted,
    TaskNotRerunnable,
)
from tests.apps import tasks as app_tasks
from tests.conftest import abandon, wait_for_status

pytestmark = pytest.mark.anyio


def set_flag(flag: threading.Event) -> str:
    """Sets an event passed by the caller (an argument no codec can store)."""
    flag.set()
    return "set"


async def hold(started: threading.Event, forever: asyncio.Event) -> None:
    """Runs until cancelled."""
    started.set()
    await forever.wait()


def fail_first(lock: threading.Lock) -> None:
    """Fails; with a long retry delay it stays pending, waiting for its second attempt."""
    raise RuntimeError("first attempt fails")


# -- the named error ------------------------------------------------------------------


def test_the_errors_import_from_taskflow_errors_as_from_fastapi_tasks():
    assert issubclass(FastAPITasksUninitializedAppError, FastAPITasksError)
    assert issubclass(FastAPITasksError, TaskflowError)
    assert issubclass(FastAPITasksUninitializedAppError, NotStarted)


def _app_without_add_tasks() -> FastAPI:
    app = FastAPI()

    @app.post("/schedule")
    async def schedule(tasks: Tasks) -> dict:
        tasks.schedule(app_tasks.add, 1, 2)
        return {}

    @app.post("/after-response")
    async def after_response(tasks: Tasks) -> dict:
        try:
            tasks.after_response.schedule(app_tasks.add, 1, 2)
        except FastAPITasksUninitializedAppError as exc:  # as fastapi-tasks' docs do
            return {"error": str(exc)}
        return {}

    @app.post("/depends")
    async def depends(tasks: Tasks = Depends()) -> dict:
        return {}

    @app.post("/plain")
    async def plain(background_tasks: BackgroundTasks) -> dict:
        background_tasks.add_task(ran.set)
        return {}

    ran = threading.Event()
    app.state.ran = ran
    return app


@pytest.fixture(params=["fresh process", "another app has taskflow"])
def unwired_process(request, monkeypatch, tmp_path):
    """FastAPI's injection as in a process where no app called add_tasks, or where
    another app did (taskflow's injection is process-wide)."""
    monkeypatch.setattr(fastapi_utils, "BackgroundTasks", UnwiredBackgroundTasks)
    if request.param == "another app has taskflow":
        add_tasks(FastAPI())  # patches FastAPI; the manager is never started
    return request.param


def test_tasks_without_add_tasks_raise_the_named_error_over_http(unwired_process):
    app = _app_without_add_tasks()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/schedule").status_code == 500
        body = client.post("/after-response").json()
        assert "call add_tasks(app)" in body["error"]
        assert client.post("/depends").status_code == 500
        # FastAPI's own BackgroundTasks keep working in that app.
        assert client.post("/plain").status_code == 200
        assert app.state.ran.is_set()
    with TestClient(app) as client, pytest.raises(FastAPITasksUninitializedAppError) as info:
        client.post("/schedule")
    assert "add_tasks(app)" in str(info.value)


# -- tasks that live in memory ----------------------------------------------------------


def _app(manager) -> FastAPI:
    app = FastAPI()
    add_tasks(app, task_manager=manager)
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_unstorable_arguments_and_closures_run_from_a_route(manager_factory):
    manager = manager_factory()
    app = _app(manager)
    event, added, closure_ran = threading.Event(), threading.Event(), []

    @app.post("/go")
    async def go(tasks: Tasks) -> dict:
        local = "from the closure"

        def closure() -> str:
            closure_ran.append(local)
            return local

        first = tasks.schedule(set_flag, event)
        second = tasks.after_response.schedule(closure)
        third = tasks.add_task(set_flag, added)  # fastapi-taskflow's API: the same
        return {"ids": [first.task_id, second.task_id, third]}

    await manager.startup()
    async with _client(app) as client:
        response = await client.post("/go")
    assert response.status_code == 200, response.text
    first, second, third = response.json()["ids"]
    records = [await wait_for_status(manager, task_id) for task_id in (first, second, third)]
    assert [r.status for r in records] == ["success"] * 3, [r.error for r in records]
    assert event.is_set() and added.is_set() and closure_ran == ["from the closure"]
    assert records[0].func_name.endswith("set_flag") and records[0].result == "set"
    assert "Event" in records[0].args[0]  # a readable description, not the object
    assert records[1].func_name.endswith("closure") and records[1].result == "from the closure"


async def test_memory_only_tasks_of_a_killed_process_end_with_the_reason(manager_factory, db_url):
    crashed = manager_factory()
    crashed.task(retries=1, delay=3600)(fail_first)
    app = _app(crashed)
    started = threading.Event()

    @app.post("/start")
    async def start(tasks: Tasks) -> dict:
        running = tasks.schedule(hold, started, asyncio.Event())
        waiting = tasks.schedule(fail_first, threading.Lock())
        return {"running": running.task_id, "waiting": waiting.task_id}

    await crashed.startup()
    async with _client(app) as client:
        ids = (await client.post("/start")).json()
    await wait_for_status(crashed, ids["running"], "running")
    await _wait_for_attempts(crashed, ids["waiting"], 1)  # pending, retry in an hour
    await _kill_minus_9(crashed, db_url)

    survivor = manager_factory()
    survivor.task(retries=1, delay=3600)(fail_first)
    survivor.task(requeue_on_interrupt=True)(hold)  # even "safe to re-run" cannot help
    await survivor.startup()
    for task_id in (ids["running"], ids["waiting"]):
        record = await wait_for_status(survivor, task_id)
        assert record.status == "interrupted"
        assert "lived only in the memory" in record.error
        assert "cannot be re-run" in record.error
    with pytest.raises(TaskNotRerunnable, match="cannot be retried"):
        await survivor.retry(ids["running"])
    await _refused_by_the_dashboard(survivor, ids)


async def _wait_for_attempts(manager, task_id: str, attempts: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        record = await manager.get_task(task_id)
        if record is not None and record.attempts == attempts and record.status == "pending":
            return
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)


async def _kill_minus_9(manager, db_url: str) -> None:
    """Stop ``manager`` as kill -9 would: its instance row stays, with a dead pid."""
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE taskflow_instances SET pid = 999999999"))
    await engine.dispose()
    await abandon(manager)


async def _refused_by_the_dashboard(manager, ids: dict[str, Any]) -> None:
    app = FastAPI()
    TaskAdmin(app, manager)
    async with _client(app) as client:
        token = (await client.get("/tasks/auth/session")).json()["csrf_token"]
        headers = {"X-CSRF-Token": token}
        refused = await client.post(f"/tasks/{ids['running']}/retry", headers=headers)
        assert refused.status_code == 409, refused.text
        assert "lived only in the memory" in refused.json()["detail"]
        bulk = await client.post("/tasks/bulk-retry", json=list(ids.values()), headers=headers)
        assert bulk.status_code == 200, bulk.text
        assert (bulk.json()["dispatched"], bulk.json()["skipped"]) == (0, 2)


# -- fastapi-tasks' own examples, with only the import changed --------------------------

EXAMPLE_EVENTS: list[tuple[Any, ...]] = []


async def send_welcome_email(email: str) -> None:
    EXAMPLE_EVENTS.append(("email", email))


async def log_analytics(event: str, user_id: int) -> None:
    EXAMPLE_EVENTS.append(("analytics", event, user_id))


async def my_task(x: int) -> int:
    return x * 2


def _example_app() -> FastAPI:
    """fastapi-tasks' README quick start and its ``TaskConfig`` page's example, with
    ``from fastapi_tasks import Tasks, add_tasks`` changed to ``from taskflow import ...``
    (imported at the top of this module: the route annotations resolve there)."""
    app = FastAPI()
    add_tasks(app)  # important! add tasks support to your app

    @app.post("/users")
    async def create_user(email: str, tasks: Tasks) -> dict:
        user_id = 1  # create user in database
        tasks.schedule(send_welcome_email, email)  # starts immediately
        tasks.after_route.schedule(log_analytics, "user_created", user_id)  # after endpoint
        tasks.after_response.schedule(log_analytics, "response_sent", user_id)
        return {"user_id": user_id}

    @app.post("/task-details")
    async def task_details(tasks: Tasks) -> dict:
        task = tasks.task(name="double_task", shield=True).schedule(my_task, 21)
        return {
            "task_name": task.config.name,
            "function": task.func.__name__,
            "args": task.args,
            "kwargs": task.kwargs,
            "is_shielded": task.config.shielded,
        }

    return app


def test_the_readme_and_task_config_examples_run_with_only_the_import_changed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKFLOW_DATABASE_URL", db_url)  # add_tasks(app)'s manager uses it
    EXAMPLE_EVENTS.clear()
    with TestClient(_example_app()) as client:
        assert client.post("/users", params={"email": "ada@example.com"}).json() == {"user_id": 1}
        details = client.post("/task-details").json()
        deadline = time.monotonic() + 10
        while len(EXAMPLE_EVENTS) < 3:
            assert time.monotonic() < deadline, EXAMPLE_EVENTS
            time.sleep(0.02)
    assert details == {
        "task_name": "double_task",
        "function": "my_task",
        "args": [21],
        "kwargs": {},
        "is_shielded": True,
    }
    assert sorted(EXAMPLE_EVENTS) == [
        ("analytics", "response_sent", 1),
        ("analytics", "user_created", 1),
        ("email", "ada@example.com"),
    ]
