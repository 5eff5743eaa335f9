"""Shared pieces of the TaskAdmin tests: an app with tasks, schedules and a task group,
rows written straight into the task tables, and polling helpers.

Task functions live at module level so that they can be stored and run by name.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskflow import TaskAdmin, TaskGroup, TaskManager, task_log
from taskflow._store.schema import task_logs, tasks

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


def admin_ok(x: int = 0, password: str = "hunter2") -> dict[str, Any]:
    """Succeeds, logs a line and returns a dict with a secret-looking key."""
    task_log("working", level="info", step=x)
    return {"x": x, "api_token": "tok-123"}


def admin_fail(x: int = 0) -> None:
    """Fails every time."""
    task_log("about to fail", level="error", x=x)
    raise RuntimeError(f"admin_fail broke on {x}")


def admin_parked() -> str:
    """Registered on a queue the test manager does not run: it stays pending."""
    return "ran"


async def admin_slow(seconds: float = 30.0) -> None:
    """Runs until cancelled (or ``seconds`` pass), logging as it goes."""
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        task_log(f"tick {step}")
        step += 1
        await asyncio.sleep(0.1)


def admin_report(team: str, weeks: int = 1) -> str:
    """A task group function for dynamic schedules."""
    return f"{team}:{weeks}"


def admin_hourly() -> None:
    """Target of the static schedule."""


@dataclass
class AdminApp:
    """An app with a manager and a dashboard."""

    app: FastAPI
    manager: TaskManager
    admin: TaskAdmin


def build(db_url: str, **admin_options: Any) -> AdminApp:
    """A FastAPI app whose TaskManager has tasks, a static schedule and a task group,
    with ``TaskAdmin(**admin_options)`` on ``/tasks``."""
    manager = TaskManager(
        database_url=db_url, poll_interval=0.05, shutdown_timeout=2.0, heartbeat_interval=0.5
    )
    manager.task()(admin_ok)
    manager.task(retries=1)(admin_fail)
    manager.task(queue="parked")(admin_parked)
    manager.task()(admin_slow)
    manager.schedule(every=3600, name="hourly_report")(admin_hourly)
    group = TaskGroup("reports")
    group.register_function()(admin_report)
    manager.add_task_group(group)
    app = FastAPI()
    admin = TaskAdmin(app, manager, **admin_options)
    return AdminApp(app=app, manager=manager, admin=admin)


def call(client: TestClient, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an async function on the app's event loop (where the manager runs)."""

    async def run() -> Any:
        return await function(*args, **kwargs)

    return client.portal.call(run)


def wait_status(
    client: TestClient, manager: TaskManager, task_id: str, *statuses: str, timeout: float = 10.0
) -> Any:
    """Poll until the task has one of ``statuses`` (default: any final status)."""
    deadline = time.monotonic() + timeout
    while True:
        record = call(client, manager.get_task, task_id)
        done = record is not None and (
            record.status.value in statuses if statuses else record.status.is_final
        )
        if done:
            return record
        if time.monotonic() > deadline:
            state = record.status.value if record else "missing"
            raise AssertionError(f"task {task_id} is {state}, wanted {statuses or 'final'}")
        time.sleep(0.02)


def task_row(
    *,
    func_name: str = "admin_ok",
    status: str = "success",
    created_at: datetime | None = None,
    duration: float = 0.5,
    error: str | None = None,
    queue: str | None = None,
    source: str = "manual",
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A task row as the store writes it (final tasks get start and finish times).

    Pending rows go on the ``parked`` queue, which the test managers do not run, so
    that no manager claims and runs them while a test looks at them."""
    created = created_at or datetime.now(UTC)
    final = status in ("success", "failed", "cancelled", "interrupted")
    started = created + timedelta(seconds=0.01) if status != "pending" else None
    return {
        "id": secrets.token_hex(16),
        "func_name": func_name,
        "func_path": f"tests.admin_support:{func_name}",
        "status": status,
        "payload": '{"args": [], "kwargs": {}}',
        "encrypted": False,
        "result": None,
        "error": error,
        "traceback": None,
        "attempts": 1 if started else 0,
        "max_retries": 0,
        "priority": 0,
        "queue": queue or ("parked" if status == "pending" else "default"),
        "tags": tags or {},
        "idempotency_key": None,
        "source": source,
        "owner": None,
        "requeue_on_interrupt": False,
        "cancel_requested": False,
        "created_at": created,
        "started_at": started,
        "finished_at": started + timedelta(seconds=duration) if final and started else None,
        "next_attempt_at": created,
    }


async def insert_rows(manager: TaskManager, rows: list[dict[str, Any]]) -> None:
    """Write task rows directly (fast set-up of big or unusual histories)."""
    async with manager.db.write() as conn:
        await conn.execute(tasks.insert(), rows)


async def insert_log(manager: TaskManager, task_id: str, message: str, level: str = "info") -> None:
    """Write one log line directly."""
    async with manager.db.write() as conn:
        await conn.execute(
            task_logs.insert(),
            [
                {
                    "task_id": task_id,
                    "at": datetime.now(UTC),
                    "level": level,
                    "message": message,
                    "extra": {"payload": message},
                }
            ],
        )


def csrf(client: TestClient) -> dict[str, str]:
    """The CSRF header of the client's current session."""
    token = client.get("/tasks/auth/session").json()["csrf_token"]
    return {"X-CSRF-Token": token}


def login(client: TestClient, username: str = "admin", password: str = "pw") -> Any:
    """Log in through the form (reading the form's CSRF token first)."""
    token = client.get("/tasks/auth/session").json()["csrf_token"]
    return client.post(
        "/tasks/auth/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
