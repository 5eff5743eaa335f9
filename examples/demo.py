"""The demo app served by ``scripts/demo``: routes that enqueue durable tasks, a
schedule, and the TaskAdmin dashboard.

Try ``POST /signup?email=a@example.com``, ``POST /thumbnail/7``, ``POST /report/3``,
``POST /flaky``, then ``GET /tasks/{task_id}`` with the id each one returns, or watch
them at ``/tasks/dashboard``. The dashboard has no login here (it says so on every
page); pass ``auth=("user", "password")`` to ``TaskAdmin`` in a real app.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Depends, FastAPI

from taskflow import ManagedBackgroundTasks, TaskAdmin, TaskManager, get_task_context, task_log

task_manager = TaskManager(
    database_url=os.environ.get("TASKFLOW_DATABASE_URL", "sqlite+aiosqlite:///taskflow-demo.db"),
    max_process_workers=2,
)
app = FastAPI(title="taskflow demo")
TaskAdmin(app, task_manager, title="taskflow demo")  # JSON API at /tasks, pages at /tasks/dashboard


@task_manager.task(retries=2, delay=0.5)
async def send_welcome_email(email: str) -> str:
    """An async task: runs on the event loop."""
    task_log("rendering welcome email", email=email)
    await asyncio.sleep(0.2)
    return f"sent to {email}"


@task_manager.task()
def make_thumbnail(image_id: int, size: int = 128) -> dict[str, int]:
    """A sync task: runs in taskflow's own thread pool."""
    task_log("resizing", image_id=image_id, size=size)
    time.sleep(0.1)
    return {"image_id": image_id, "size": size}


@task_manager.task(executor="process")
def build_report(report_id: int) -> int:
    """A CPU-bound task: runs in a worker process."""
    task_log("crunching numbers", report_id=report_id)
    return sum(i * i for i in range(200_000 + report_id))


@task_manager.schedule(every=60)
async def heartbeat() -> None:
    """A static schedule: runs every minute, once across all processes."""
    task_log("still alive")


@task_manager.task(retries=3, delay=0.2, backoff=2.0)
def flaky_import() -> str:
    """Fails on its first two attempts, then succeeds: watch the retries."""
    context = get_task_context()
    attempt = context.attempt if context else 0  # 0 on the first run
    task_log(f"attempt {attempt}")
    if attempt < 2:
        raise ConnectionError(f"upstream not ready (attempt {attempt})")
    return "imported"


@app.post("/signup")
async def signup(email: str, tasks: ManagedBackgroundTasks = Depends(task_manager.get_tasks)):
    return {"task_id": tasks.add_task(send_welcome_email, email, tags={"source": "signup"})}


@app.post("/thumbnail/{image_id}")
def thumbnail(image_id: int, tasks: ManagedBackgroundTasks = Depends(task_manager.get_tasks)):
    return {"task_id": tasks.add_task(make_thumbnail, image_id, size=256)}


@app.post("/report/{report_id}")
async def report(report_id: int, tasks: ManagedBackgroundTasks = Depends(task_manager.get_tasks)):
    return {
        "task_id": tasks.add_task(build_report, report_id, idempotency_key=f"report-{report_id}")
    }


@app.post("/flaky")
async def flaky(tasks: ManagedBackgroundTasks = Depends(task_manager.get_tasks)):
    return {"task_id": tasks.add_task(flaky_import)}
