"""fastapi-task-manager apps switch by changing the import (spec 000): ``Config``,
``TaskManager(app=, config=)``, the TaskGroup attributes and every management route, on
both databases."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from taskflow import Config, TaskGroup, TaskManager
from taskflow.errors import TaskArgumentError

REDIS_WARNING = "ignores Config(redis_host=...)"


@pytest.fixture
def env_db(db_url, monkeypatch):
    """Point ``TaskManager(config=...)`` at the test database the documented way."""
    monkeypatch.setenv("TASKFLOW_DATABASE_URL", db_url)
    return db_url


def seed_app() -> tuple[FastAPI, TaskManager, TaskGroup, list]:
    """Spec 000's complete Python API example, with only the import changed."""
    calls: list = []
    logger = logging.getLogger(__name__)

    app = FastAPI()
    router = APIRouter()

    task_manager = TaskManager(
        app=app,
        config=Config(redis_host="localhost"),
    )
    reports_group = TaskGroup(name="Reports", tags=["reports"])
    task_manager.add_task_group(reports_group)

    @reports_group.register_function()
    async def send_report(recipient: str = "[email protected]", report_type: str = "daily"):
        logger.info("Sending %s report to %s", report_type, recipient)
        calls.append((recipient, report_type))

    @reports_group.register_function(name="generate_export")
    async def export_data(file_format: str = "csv"):
        logger.info("Exporting data as %s", file_format)

    @reports_group.add_task("0 9 * * *", name="daily_cleanup")
    async def daily_cleanup():
        logger.info("Running daily cleanup")

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

    manager_router = task_manager.get_manager_router()
    router.include_router(manager_router, prefix="/task-manager", tags=["task-manager"])
    app.include_router(router)
    return app, task_manager, reports_group, calls


WEEKLY = {
    "task_group_name": "Reports",
    "function_name": "send_report",
    "cron_expression": "0 9 * * MON",
    "kwargs": {"recipient": "[email protected]", "report_type": "weekly"},
    "name": "weekly_team_report",
    "description": "Send weekly report to team every Monday at 9am",
    "tags": ["reports", "weekly"],
}


def wait_for(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


# -- the seed, import changed -------------------------------------------------------------


def test_seed_rest_example_runs_with_the_import_changed(env_db, caplog):
    with caplog.at_level(logging.WARNING, logger="taskflow"):
        app, manager, _, _ = seed_app()
    warnings = [r for r in caplog.records if REDIS_WARNING in r.getMessage()]
    assert len(warnings) == 1
    assert "TASKFLOW_DATABASE_URL" in warnings[0].getMessage()
    assert "database_url" in warnings[0].getMessage()
    with TestClient(app) as client:
        created = client.post("/task-manager/tasks", json=WEEKLY)
        assert created.status_code == 200, created.text
        documented = {
            "task_group_name": "Reports",
            "task_name": "weekly_team_report",
            "function_name": "send_report",
            "cron_expression": "0 9 * * MON",
            "kwargs": {"recipient": "[email protected]", "report_type": "weekly"},
            "dynamic": True,
        }
        assert {key: created.json()[key] for key in documented} == documented
        assert client.get("/task-manager/functions").json() == {
            "functions": [
                {"task_group_name": "Reports", "function_name": "send_report"},
                {"task_group_name": "Reports", "function_name": "generate_export"},
                {"task_group_name": "Reports", "function_name": "daily_cleanup"},
            ],
            "count": 3,
        }
        only = client.get("/task-manager/functions", params={"task_group_name": "Reports"})
        assert only.json()["count"] == 3
        static = client.delete(
            "/task-manager/tasks",
            params={"task_group_name": "Reports", "task_name": "daily_cleanup"},
        )
        assert static.status_code == 400 and "static" in static.json()["detail"]
        deleted = client.delete(
            "/task-manager/tasks",
            params={"task_group_name": "Reports", "task_name": "weekly_team_report"},
        )
        assert deleted.status_code == 200
        assert deleted.json()["cron_expression"] == "0 9 * * MON"
        assert [t["name"] for t in client.get("/task-manager/tasks").json()] == ["daily_cleanup"]
    assert manager.database_url.startswith(env_db.split("://")[0])


def test_seed_python_api_example_and_create_errors(env_db):
    app, _, group, _ = seed_app()
    with TestClient(app) as client:
        made = client.post("/custom/create-report-task", params={"recipient": "a@b.c"})
        assert made.status_code == 200, made.text
        name = made.json()["created"]
        wait_for(lambda: name in {t.name for t in group.tasks}, "the new schedule")
        removed = client.delete("/custom/delete-report-task", params={"task_name": name})
        assert removed.json() == {"removed": name}
        wait_for(lambda: name not in {t.name for t in group.tasks}, "the removal")
        # fastapi-task-manager's status codes for POST /tasks
        assert client.post("/task-manager/tasks", json=WEEKLY).status_code == 200
        assert client.post("/task-manager/tasks", json=WEEKLY).status_code == 409
        for change, status in (
            ({"task_group_name": "Nope"}, 404),
            ({"function_name": "missing"}, 400),
            ({"cron_expression": "61 * * * *"}, 400),
        ):
            response = client.post("/task-manager/tasks", json={**WEEKLY, **change, "name": "x"})
            assert response.status_code == status, response.text
        assert (
            "Available"
            in client.post(
                "/task-manager/tasks", json={**WEEKLY, "function_name": "missing"}
            ).json()["detail"]
        )


# -- Config and the constructor ------------------------------------------------------------


def test_config_fields_map_onto_the_manager(env_db, caplog):
    config = Config(
        concurrent_tasks=3,
        poll_interval=0.2,
        running_heartbeat_interval=4.0,
        retry_backoff=2.0,
        retry_backoff_max=30.0,
        retry_backoff_multiplier=3.0,
        allow_parallel=False,
        statistics_history_runs=7,
        worker_service_name="svc",
    )
    app = FastAPI()
    with caplog.at_level(logging.WARNING, logger="taskflow"):
        manager = TaskManager(app=app, config=config)
    assert REDIS_WARNING not in caplog.text
    assert (manager.max_concurrent_tasks, manager.poll_interval) == (3, 0.2)
    assert manager.heartbeat_interval == 4.0 and manager.statistics_history_runs == 7
    group = TaskGroup(name="G")
    manager.add_task_group(group)

    @group.add_task("0 9 * * *")
    async def job():
        pass

    registered = manager.registry.get("G.job")
    assert (registered.delay, registered.backoff, registered.max_delay) == (2.0, 3.0, 30.0)
    assert manager.scheduler.specs["job"].options.overlap is False
    app.include_router(manager.get_manager_router())
    with TestClient(app) as client:
        shown = client.get("/config").json()
        assert shown["concurrent_tasks"] == 3 and shown["worker_service_name"] == "svc"
        assert shown["allow_parallel"] is False and "redis_host" not in shown
        listed = client.get("/tasks").json()
        assert listed[0]["allow_parallel"] is False


def test_app_lifecycle_health_start_and_stop(db_url):
    app = FastAPI()
    manager = TaskManager(app=app, config=Config(database_url=db_url))
    app.include_router(manager.get_manager_router())
    assert manager.is_running is False
    assert manager.config.database_url == db_url
    assert manager.config.poll_interval == manager.poll_interval == 1.0  # not given: taskflow's
    with TestClient(app) as client:
        assert manager.is_running is True
        assert client.portal.call(manager.is_healthy) is True
        health = client.get("/health").json()
        assert health["status"] == "healthy" and health["redis_connected"] is True
        assert health["worker_id"] == manager.instance_id and health["worker_started_at"]
        assert client.portal.call(manager.health_check).status == "healthy"
    assert manager.is_running is False

    other = TaskManager(database_url=db_url)
    bare = FastAPI()
    other.append_to_app_lifecycle(bare)
    with TestClient(bare) as client:
        assert other.is_running
        client.portal.call(other.stop)
        assert not other.is_running
        client.portal.call(other.start)
        assert other.is_running and [g for g in other.task_groups] == []


# -- TaskGroup -------------------------------------------------------------------------------


def test_group_attributes_tasks_registry_and_tag_copies(db_url):
    group = TaskGroup(name="G", tags=["a"])
    group.tags.append("mutated")
    assert group.tags == ["a"]

    @group.add_task(["0 9 * * *", "0 18 * * *"], kwargs=[{"n": 1}, {"n": 2}], high_priority=True)
    async def job(n: int):
        pass

    registry = group.function_registry
    registry.clear()
    assert list(group.function_registry) == ["job"]
    before = group.tasks
    assert [(t.expression, t.kwargs, t.dynamic, t.high_priority) for t in before] == [
        ("0 9 * * *", {"n": 1}, False, True),
        ("0 18 * * *", {"n": 2}, False, True),
    ]
    assert all(t.function_name == "job" for t in before)
    assert len({t.name for t in before}) == 2

    app = FastAPI()
    manager = TaskManager(database_url=db_url, app=app)
    manager.add_task_group(group)
    assert list(manager.task_groups) == [group] and manager.task_groups[0] is group
    with TestClient(app):
        group.add_dynamic_task(
            "job",
            "0 7 * * *",
            kwargs={"n": 3},
            name="dyn",
            retry_backoff=5.0,
            retry_backoff_max=60.0,
            description="d",
        )
        tasks = wait_for(lambda: {t.name: t for t in group.tasks if len(group.tasks) == 3}, "dyn")
        dyn = tasks["dyn"]
        assert (dyn.dynamic, dyn.kwargs, dyn.expression, dyn.description) == (
            True,
            {"n": 3},
            "0 7 * * *",
            "d",
        )
        assert (dyn.retry_backoff, dyn.retry_backoff_max, dyn.function_name) == (5.0, 60.0, "job")


def test_add_task_lists_run_each_with_its_kwargs(db_url):
    app = FastAPI()
    manager = TaskManager(database_url=db_url, app=app, poll_interval=0.05)
    group = TaskGroup(name="G")
    manager.add_task_group(group)
    seen: list[int] = []

    with pytest.raises(TypeError, match="same length"):
        group.add_task(["0 9 * * *", "0 10 * * *"], kwargs=[{"n": 1}])
    with pytest.raises(TaskArgumentError):
        group.add_task(["0 9 * * *"], kwargs=[{"wrong": 1}])(lambda n: None)

    @group.add_task(["0 9 * * *", "30 9 * * *"], kwargs=[{"n": 1}, {"n": 2}])
    async def job(n: int):
        seen.append(n)

    app.include_router(manager.get_manager_router())
    with TestClient(app) as client:
        triggered = client.post("/tasks/trigger", params={"task_group_name": "G"}).json()
        assert triggered["count"] == 2
        wait_for(lambda: sorted(seen) == [1, 2], "both runs")


def test_dynamic_tasks_defined_before_the_group_is_added(db_url):
    group = TaskGroup(name="Reports")

    @group.register_function()
    async def send_report(recipient: str = "x"):
        pass

    @group.add_task("0 9 * * *", name="daily_cleanup")
    async def daily_cleanup():
        pass

    early = group.add_dynamic_task("send_report", "0 8 * * *", kwargs={"recipient": "a"}, name="e")
    assert early.dynamic and [t.name for t in group.tasks] == ["daily_cleanup", "e"]
    cases = [
        (lambda: group.add_dynamic_task("nope", "0 8 * * *"), "Function 'nope' is not registered"),
        (lambda: group.add_dynamic_task("send_report", "0 8 * * *", name="e"), "already exists"),
        (lambda: group.remove_dynamic_task("missing"), "Task 'missing' not found in group"),
        (lambda: group.remove_dynamic_task("daily_cleanup"), "is static and cannot be removed"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()
    temp = group.add_dynamic_task("send_report", "0 6 * * *", name="temp")
    assert group.remove_dynamic_task("temp").name == temp.name

    for _ in range(2):  # a restart stores the definition again without a clash
        app = FastAPI()
        manager = TaskManager(database_url=db_url, app=app)
        manager.add_task_group(group)
        app.include_router(manager.get_manager_router())
        with TestClient(app) as client:
            listed = {t["name"]: t for t in client.get("/tasks").json()}
            assert set(listed) == {"daily_cleanup", "e"}
            assert listed["e"]["dynamic"] and listed["e"]["kwargs"] == {"recipient": "a"}
        group.add_dynamic_task("send_report", "0 8 * * *", kwargs={"recipient": "a"}, name="e")


# -- the rest of the management router -----------------------------------------------------


def test_groups_enable_disable_statistics_reset_and_clear(env_db):
    app, manager, group, calls = seed_app()
    with TestClient(app) as client:
        api = "/task-manager"
        assert client.get(f"{api}/task-groups").json() == [
            {"name": "Reports", "tags": ["reports"], "allow_parallel": None, "task_count": 1}
        ]
        assert client.get(f"{api}/task-groups", params={"tag": "nope"}).json() == []
        client.post(f"{api}/tasks", json=WEEKLY)
        disabled = client.post(f"{api}/tasks/disable", params={"task_name": "weekly_team_report"})
        assert disabled.json() == {
            "affected_tasks": [
                {"task_group": "Reports", "task": "weekly_team_report", "task_id": None}
            ],
            "count": 1,
        }
        shown = client.get(f"{api}/tasks", params={"name": "weekly_team_report"}).json()
        assert [t["is_active"] for t in shown] == [False]
        assert client.post(f"{api}/tasks/enable", params={"tag": "weekly"}).json()["count"] == 1
        detailed = client.get(f"{api}/tasks", params={"tag": "weekly"}).json()[0]
        assert detailed["is_active"] and detailed["next_run"] and not detailed["is_running"]
        assert detailed["expression"] == "0 9 * * MON" and detailed["retry_after"] is None
        assert client.post(f"{api}/tasks/disable", params={"task_name": "no"}).status_code == 404

        triggered = client.post(f"{api}/tasks/trigger", params={"task_name": "weekly_team_report"})
        task_id = triggered.json()["affected_tasks"][0]["task_id"]
        wait_for(lambda: client.portal.call(manager.get_task, task_id).status == "success", "run")
        stats_url = f"{api}/tasks/Reports/weekly_team_report/statistics"
        stats = wait_for(lambda: client.get(stats_url).json()["runs"], "statistics")
        assert len(stats) == 1 and stats[0]["durations_second"] >= 0
        assert client.get(f"{api}/tasks/Reports/nope/statistics").status_code == 404
        reset = client.post(f"{api}/tasks/reset-retry", params={"task_group_name": "Reports"})
        assert reset.json()["count"] == 2
        cleared = client.delete(
            f"{api}/tasks/statistics", params={"task_name": "weekly_team_report"}
        )
        assert cleared.json()["count"] == 1
        assert client.get(stats_url).json()["runs"] == []
        assert calls == [("[email protected]", "weekly")]


def test_schema_modules_import_under_taskflow():
    from taskflow.schema import TaskDetailed as Detailed
    from taskflow.schema.health import ConfigResponse, HealthResponse
    from taskflow.schema.task import (
        AffectedTask,
        CreateDynamicTaskRequest,
        DynamicTaskResponse,
        RegisteredFunctionInfo,
        RegisteredFunctionsResponse,
        Task,
        TaskActionResponse,
        TaskBase,
        TaskDetailed,
        TaskRun,
        TaskStatistics,
    )
    from taskflow.schema.task_group import TaskGroup as GroupSchema

    assert Detailed is TaskDetailed and issubclass(TaskDetailed, TaskBase)
    request = CreateDynamicTaskRequest(
        task_group_name="g", function_name="f", cron_expression="* * * * *"
    )
    assert request.kwargs is None and request.high_priority is False
    assert GroupSchema(name="g").task_count == 0
    assert {"status", "redis_connected", "worker_id", "is_leader"} <= set(
        HealthResponse.model_fields
    )
    assert "retry_backoff_multiplier" in ConfigResponse.model_fields
    for model in (
        AffectedTask,
        DynamicTaskResponse,
        RegisteredFunctionInfo,
        RegisteredFunctionsResponse,
        TaskActionResponse,
        TaskRun,
        TaskStatistics,
    ):
        assert model.model_fields
    assert Task.__name__ == "ScheduledTask"
