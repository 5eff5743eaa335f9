"""A FastAPI app built the way the fastapi-taskflow docs show, for HTTP tests.

``build_app(url)`` returns ``(app, task_manager)``; ``app`` is also served by uvicorn in
the process tests (``TASKFLOW_DATABASE_URL`` selects the database there).
"""

from __future__ import annotations

import asyncio
import os
import threading

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException

from taskflow import ManagedBackgroundTasks, TaskManager, task_log
from tests.apps import tasks as app_tasks

events: dict[str, threading.Event] = {}


def build_app(url: str, *, install: bool = False, **options) -> tuple[FastAPI, TaskManager]:
    task_manager = TaskManager(database_url=url, **options)
    app = FastAPI()

    @task_manager.task(retries=1, delay=0.01)
    def send_email(address: str) -> str:
        task_log("sending", address=address)
        return f"sent {address}"

    @task_manager.task(eager=True)
    async def eager_job(label: str) -> str:
        events.setdefault(label, threading.Event()).set()
        return label

    @task_manager.task(requeue_on_interrupt=True)
    async def slow_rerunnable(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @task_manager.task()
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    task_manager.task()(app_tasks.add)

    @app.post("/signup")
    def signup(email: str, tasks=Depends(task_manager.get_tasks)):
        task_id = tasks.add_task(send_email, email)
        return {"task_id": task_id}

    @app.post("/async-signup")
    async def async_signup(email: str, tasks=Depends(task_manager.get_tasks)):
        return {"task_id": tasks.add_task(send_email, email)}

    @app.post("/invoice/{invoice_id}/send")
    def send_invoice(invoice_id: int, tasks=Depends(task_manager.get_tasks)):
        task_id = tasks.add_task(
            send_email, f"{invoice_id}@x", idempotency_key=f"invoice-{invoice_id}"
        )
        return {"task_id": task_id}

    @app.post("/async-invoice/{invoice_id}")
    async def async_invoice(invoice_id: int, tasks=Depends(task_manager.get_tasks)):
        task_id = tasks.add_task(
            send_email, f"{invoice_id}@x", idempotency_key=f"invoice-{invoice_id}"
        )
        return {"task_id": task_id}

    @app.post("/eager/{label}")
    def eager_sync(label: str, tasks=Depends(task_manager.get_tasks)):
        return {"task_id": tasks.add_task(eager_job, label)}

    @app.post("/slow")
    async def enqueue_slow(
        seconds: float, rerun: bool = False, tasks=Depends(task_manager.get_tasks)
    ):
        func = slow_rerunnable if rerun else slow
        return {"task_id": tasks.add_task(func, seconds)}

    @app.post("/batch")
    async def batch(count: int, tasks=Depends(task_manager.get_tasks)):
        return {"task_ids": [tasks.add_task(app_tasks.add, i, 1) for i in range(count)]}

    @app.post("/fails-after-enqueue")
    async def fails_after_enqueue(tasks=Depends(task_manager.get_tasks)):
        tasks.add_task(app_tasks.add, 40, 2)
        raise HTTPException(409, detail="conflict after enqueue")

    @app.get("/report/{task_id}")
    def report_status(task_id: str):
        record = task_manager.store.get(task_id)
        if record is None:
            raise HTTPException(status_code=404)
        return record.to_dict()

    @app.get("/async-report/{task_id}")
    async def async_report_status(task_id: str):
        record = task_manager.store.get(task_id)
        if record is None:
            raise HTTPException(status_code=404)
        return record.to_dict()

    if install:
        task_manager.install(app)

        @app.post("/bare")
        def bare(email: str, background_tasks: BackgroundTasks):
            task_id = background_tasks.add_task(send_email, email)
            return {
                "task_id": task_id,
                "managed": isinstance(background_tasks, ManagedBackgroundTasks),
            }
    else:
        task_manager.init_app(app)
    return app, task_manager


app, task_manager = (
    build_app(
        os.environ.get("TASKFLOW_DATABASE_URL", "sqlite+aiosqlite:///taskflow-test.db"),
        poll_interval=0.1,
        heartbeat_interval=float(os.environ.get("TASKFLOW_HEARTBEAT", "1")),
        instance_timeout=float(os.environ.get("TASKFLOW_INSTANCE_TIMEOUT", "5")),
    )
    if os.environ.get("TASKFLOW_SERVE_TEST_APP")
    else (None, None)
)
