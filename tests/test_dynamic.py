"""Dynamic schedules (spec 000): the TaskGroup API and the management router, on both
databases."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from taskflow import DatabaseError, TaskGroup, TaskManager
from taskflow.errors import ScheduleError, StaticScheduleError


def spec_app(db_url: str) -> tuple[FastAPI, TaskManager, TaskGroup, list]:
    """The app of spec 000, on taskflow."""
    calls: list = []
    app = FastAPI()
    router = APIRouter()
    task_manager = TaskManager(database_url=db_url, poll_interval=0.05)
    task_manager.init_app(app)
    reports_group = TaskGroup(name="Reports", tags=["reports"])
    task_manager.add_task_group(reports_group)

    @reports_group.register_function()
    async def send_report(recipient: str = "team@example.com", report_type: str = "daily"):
        calls.append((recipient, report_type))

    @reports_group.register_function(name="generate_export")
    async def export_data(file_format: str = "csv"):
        calls.append(("export", file_format))

    @reports_group.add_task("0 9 * * *", name="daily_cleanup")
    async def daily_cleanup():
        calls.append("cleanup")

    @app.post("/custom/create-report-task")
    async def create_custom_report_task(recipient: str, cron: str = "0 8 * * MON"):
        task = reports_group.add_dynamic_task(
            function_name="send_report",
            cron_expression=cron,
            kwargs={"recipient": recipient, "report_type": "weekly"},
            description=f"Weekly report for {recipient}",
            tags=["reports", "weekly"],
        )
        return {"created": task.name}

    @app.delete("/custom/delete-report-task")
    async def delete_custom_report_task(task_name: str):
        removed = reports_group.remove_dynamic_task(task_name)
        return {"removed": removed.name}

    @app.post("/sync/create")
    def sync_create(name: str):
        return {
            "created": reports_group.add_dynamic_task("send_report", "0 7 * * *", name=name).name
        }

    manager_router = task_manager.get_manager_router()
    router.include_router(manager_router, prefix="/task-manager", tags=["task-manager"])
    app.include_router(router)
    return app, task_manager, reports_group, calls


WEEKLY = {
    "task_group_name": "Reports",
    "function_name": "send_report",
    "cron_expression": "0 9 * * MON",
    "kwargs": {"recipient": "team@example.com", "report_type": "weekly"},
    "name": "weekly_team_report",
    "description": "Send weekly report to team every Monday at 9am",
    "tags": ["reports", "weekly"],
}


def test_create_list_and_delete_over_rest(db_url):
    app, _, _, _ = spec_app(db_url)
    with TestClient(app) as client:
        created = client.post("/task-manager/tasks", json=WEEKLY)
        assert created.status_code == 200, created.text
        body = created.json()
        assert {
            key: body[key]
            for key in (
                "task_group_name",
                "task_name",
                "function_name",
                "cron_expression",
                "kwargs",
                "dynamic",
            )
        } == {
            "task_group_name": "Reports",
            "task_name": "weekly_team_report",
            "function_name": "send_report",
            "cron_expression": "0 9 * * MON",
            "kwargs": {"recipient": "team@example.com", "report_type": "weekly"},
            "dynamic": True,
        }
        functions = client.get("/task-manager/functions").json()
        assert functions["count"] == 3
        assert {"task_group_name": "Reports", "function_name": "generate_export"} in functions[
            "functions"
        ]
        assert (
            client.get("/task-manager/functions", params={"task_group_name": "Nope"}).json()[
                "count"
            ]
            == 0
        )
        listed = client.get("/task-manager/tasks").json()
        assert {t["name"] for t in listed} == {"weekly_team_report", "daily_cleanup"}
        gone = client.delete(
            "/task-manager/tasks",
            params={"task_group_name": "Reports", "task_name": "weekly_team_report"},
        )
        assert gone.status_code == 200
        assert len(client.get("/task-manager/tasks").json()) == 1


@pytest.mark.parametrize(
    "change, status, fragment",
    [
        ({"task_group_name": "Nope"}, 404, "Nope"),
        ({"function_name": "missing"}, 400, "missing"),
        ({"cron_expression": "0 25 * * *"}, 400, "0 25 * * *"),
        ({"timezone": "Moon/Base"}, 422, "timezone"),
        ({"kwargs": {"nonexistent": 1}}, 422, "kwargs"),
        ({"cron_expression": None}, 422, "cron_expression"),
    ],
)
def test_bad_input_gets_a_clear_error(db_url, change, status, fragment):
    app, _, _, _ = spec_app(db_url)
    with TestClient(app) as client:
        response = client.post("/task-manager/tasks", json={**WEEKLY, **change})
        assert response.status_code == status, response.text
        assert fragment in response.text
        assert len(client.get("/task-manager/tasks").json()) == 1  # only the static one


def test_duplicates_static_and_unknown_deletes(db_url):
    app, _, _, _ = spec_app(db_url)
    with TestClient(app) as client:
        assert client.post("/task-manager/tasks", json=WEEKLY).status_code == 200
        assert client.post("/task-manager/tasks", json=WEEKLY).status_code == 409
        static = client.delete(
            "/task-manager/tasks",
            params={"task_group_name": "Reports", "task_name": "daily_cleanup"},
        )
        assert static.status_code == 400 and "static" in static.json()["detail"]
        unknown = client.delete(
            "/task-manager/tasks", params={"task_group_name": "Reports", "task_name": "nope"}
        )
        assert unknown.status_code == 404


def test_auto_generated_name_is_function_plus_hash(db_url):
    app, _, _, _ = spec_app(db_url)
    body = {key: value for key, value in WEEKLY.items() if key != "name"}
    with TestClient(app) as client:
        first = client.post("/task-manager/tasks", json=body).json()["task_name"]
        assert first.startswith("send_report_") and len(first) == len("send_report_") + 8
        other = client.post(
            "/task-manager/tasks", json={**body, "cron_expression": "0 10 * * MON"}
        ).json()
        assert other["task_name"] != first


def test_python_api_from_async_and_sync_routes(db_url):
    app, manager, group, _ = spec_app(db_url)
    with TestClient(app) as client:
        made = client.post("/custom/create-report-task", params={"recipient": "a@b.c"}).json()
        assert made["created"].startswith("send_report_")
        sync_made = client.post("/sync/create", params={"name": "seven"}).json()
        assert sync_made == {"created": "seven"}
        names = _eventually(client, manager, lambda names: {made["created"], "seven"} <= names)
        assert names >= {made["created"], "seven"}
        removed = client.delete(
            "/custom/delete-report-task", params={"task_name": made["created"]}
        ).json()
        assert removed == {"removed": made["created"]}
        _eventually(client, manager, lambda names: made["created"] not in names)
        with pytest.raises(StaticScheduleError):
            client.portal.call(group.remove_dynamic_task_async, "daily_cleanup")
        with pytest.raises(ScheduleError):
            client.portal.call(group.remove_dynamic_task_async, "never-made")


def _eventually(client, manager, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        names = {s.name for s in client.portal.call(manager.list_schedules)}
        if condition(names):
            return names
        assert time.monotonic() < deadline, names
        time.sleep(0.02)


def test_dynamic_schedule_fires_is_shared_and_survives_restart(db_url, caplog):
    app, manager, _, calls = spec_app(db_url)
    with TestClient(app) as client:
        body = {**WEEKLY, "cron_expression": None, "every": 0.2, "name": "fast"}
        assert client.post("/task-manager/tasks", json=body).status_code == 200
        deadline = time.monotonic() + 10
        while len(calls) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # A second app on the same database fires the schedule created by the first.
    app2, _, _, calls2 = spec_app(db_url)
    with TestClient(app2) as client:
        deadline = time.monotonic() + 10
        while len(calls2) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert calls2[0] == ("team@example.com", "weekly")
        listed = client.get("/task-manager/tasks").json()
        assert any(t["name"] == "fast" and t["every"] == 0.2 for t in listed)
    # An app without the Reports group keeps the definition and says why it skips it.
    bare_app = FastAPI()
    bare = TaskManager(database_url=db_url)
    bare.init_app(bare_app)
    with (
        caplog.at_level(logging.WARNING, logger="taskflow._schedules.scheduler"),
        TestClient(bare_app) as client,
    ):
        names = {s.name for s in client.portal.call(bare.list_schedules)}
        assert "fast" in names
    assert "not registered here" in caplog.text


def test_pause_resume_and_trigger(db_url):
    app, manager, _, calls = spec_app(db_url)
    with TestClient(app) as client:
        body = {**WEEKLY, "cron_expression": None, "every": 3600, "name": "hourly"}
        client.post("/task-manager/tasks", json=body)
        paused = client.post("/task-manager/tasks/pause", params={"task_name": "hourly"})
        assert paused.json()["enabled"] is False
        resumed = client.post("/task-manager/tasks/resume", params={"task_name": "hourly"})
        assert resumed.json()["enabled"] is True
        triggered = client.post("/task-manager/tasks/trigger", params={"task_name": "hourly"})
        task_id = triggered.json()["affected_tasks"][0]["task_id"]
        deadline = time.monotonic() + 10
        while True:
            record = client.portal.call(manager.get_task, task_id)
            if record.status == "success":
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert record.source == "manual" and calls == [("team@example.com", "weekly")]
        assert (
            client.post("/task-manager/tasks/pause", params={"task_name": "nope"}).status_code
            == 404
        )


@pytest.mark.anyio
async def test_overlap_false_skips_slots_while_a_run_is_active(manager_factory):
    manager = manager_factory()
    gate = asyncio.Event()

    @manager.schedule(every=0.1, overlap=False)
    async def exclusive() -> None:
        await gate.wait()

    await manager.startup()
    deadline = time.monotonic() + 10
    while not await manager.list_tasks(status="running"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    fired_at = (await manager.get_schedule("exclusive")).next_run_at
    while (await manager.get_schedule("exclusive")).next_run_at <= fired_at:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert len(await manager.list_tasks(func_name="exclusive")) == 1
    gate.set()


@pytest.mark.anyio
async def test_database_failures_do_not_stop_the_scheduler(manager_factory):
    manager = manager_factory()
    manager.schedule(every=0.05, name="a")(_noop)
    manager.schedule(every=0.05, name="b")(_noop)
    await manager.startup()
    real_fire = manager.db.fire_schedule
    calls = {"failed": 0, "fired": 0}
    failing: dict[str, bool] = {}

    async def flaky_fire(**kwargs):
        # Every other call of each schedule fails, its first one too. (One counter shared by
        # both would let the failures fall on the same schedule every tick.)
        schedule_id = kwargs["schedule_id"]
        failing[schedule_id] = not failing.get(schedule_id, False)
        if failing[schedule_id]:
            calls["failed"] += 1
            raise DatabaseError("injected failure")
        calls["fired"] += 1
        return await real_fire(**kwargs)

    # Slots may fire before the patch (the scheduler starts with the manager): count
    # only the runs after it.
    before = [r.func_name for r in await manager.list_tasks(limit=500)]
    manager.db.fire_schedule = flaky_fire
    deadline = time.monotonic() + 15
    while True:
        names = [r.func_name for r in await manager.list_tasks(limit=500)]
        runs = all(names.count(n) >= before.count(n) + 3 for n in ("a", "b"))
        if runs and calls["fired"] >= 6:
            break
        assert time.monotonic() < deadline, names
        await asyncio.sleep(0.02)
    assert calls["fired"] >= 6 and calls["failed"] >= 6


async def _noop() -> None:
    return None
