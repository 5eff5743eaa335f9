"""A FastAPI app built the way the fastapi-taskflow docs show, for HTTP tests.

``build_app(url)`` returns ``(app, task_manager)``; ``app`` is also served by uvicorn in
the process tests (``TASKFLOW_DATABASE_URL`` selects the database there).

Served by uvicorn, more environment variables shape the app (all optional, so the other
tests are unaffected):

- ``TASKFLOW_TEST_SCHEDULE_EVERY``: declare the static schedule ``every_slot`` firing
  every that many seconds;
- ``TASKFLOW_TEST_RUN_LOG``: the ``counted_*`` tasks and ``every_slot`` append
  ``"<task id> <pid>"`` to this file each time they start running (one short ``O_APPEND``
  write: atomic), so a test can count executions per task independently of the database;
- ``TASKFLOW_POOL_SIZE``: the manager's ``pool_size`` (PostgreSQL connections);
- ``TASKFLOW_TEST_RETENTION_SECONDS``: retention on, keeping finished tasks that many
  seconds, with a pass every second;
- ``TASKFLOW_TEST_SPAN_LOG``: the ``spanned`` task appends ``"start|end <task id> <pid>
  <time>"`` (``time.monotonic()``, one clock for every process of the machine) when a run
  starts and when it stops, however it stops (a cancellation included), so a test can
  check that no two runs of a task overlapped;
- ``TASKFLOW_TEST_ORPHAN_AGE``: seconds before an instance settles a task the database
  says it owns but it does not know (``coordination.ORPHAN_AGE``, 120 by default).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException

from taskflow import ManagedBackgroundTasks, TaskManager, get_task_context, step, task_log
from tests.apps import tasks as app_tasks

events: dict[str, threading.Event] = {}

RUN_LOG_ENV = "TASKFLOW_TEST_RUN_LOG"
SPAN_LOG_ENV = "TASKFLOW_TEST_SPAN_LOG"
SCHEDULE_EVERY_ENV = "TASKFLOW_TEST_SCHEDULE_EVERY"
SCHEDULE_NAME = "every_slot"
RETENTION_ENV = "TASKFLOW_TEST_RETENTION_SECONDS"


def record_run() -> None:
    """Append this task's id and the process id to ``$TASKFLOW_TEST_RUN_LOG`` (if set)."""
    path = os.environ.get(RUN_LOG_ENV)
    context = get_task_context()
    if not path or context is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{context.task_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def record_span(edge: str) -> None:
    """Append ``"<edge> <task id> <pid> <monotonic time>"`` to ``$TASKFLOW_TEST_SPAN_LOG``."""
    path = os.environ.get(SPAN_LOG_ENV)
    context = get_task_context()
    if not path or context is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{edge} {context.task_id} {os.getpid()} {time.monotonic()!r}\n".encode())
    finally:
        os.close(fd)


def build_app(
    url: str, *, install: bool = False, schedule_every: float | None = None, **options
) -> tuple[FastAPI, TaskManager]:
    task_manager = TaskManager(database_url=url, **options)
    app = FastAPI()

    if schedule_every is not None:

        @task_manager.schedule(every=schedule_every, name=SCHEDULE_NAME)
        async def every_slot() -> str:
            record_run()
            return "fired"

    @task_manager.task(requeue_on_interrupt=True)
    async def counted_rerunnable(seconds: float) -> str:
        record_run()
        await asyncio.sleep(seconds)
        return "counted"

    @task_manager.task()
    async def counted_once(seconds: float) -> str:
        record_run()
        await asyncio.sleep(seconds)
        return "counted"

    @task_manager.task(retries=1, delay=0.01)
    def send_email(address: str) -> str:
        task_log("sending", address=address)
        return f"sent {address}"

    @task_manager.task(requeue_on_interrupt=True)
    async def spanned(seconds: float) -> str:
        record_span("start")
        try:
            await asyncio.sleep(seconds)
        finally:
            record_span("end")
        return "spanned"

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

    @task_manager.task()
    def sync_slow(seconds: float) -> str:
        time.sleep(seconds)  # holds one of the sync threads
        return "done"

    task_manager.task()(app_tasks.add)
    task_manager.task(executor="process")(app_tasks.process_info)
    task_manager.task(executor="process", requeue_on_interrupt=True)(app_tasks.pid_then_sleep)

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

    @app.post("/workflow")
    async def enqueue_workflow(steps: int, seconds: float, rerun: bool = True):
        """A chain of ``steps`` counted tasks, each running ``seconds``."""
        func = counted_rerunnable if rerun else counted_once
        flow = await task_manager.chain(*[step(func, seconds) for _ in range(steps)])
        return {"workflow_id": flow.id, "task_ids": list(flow.task_ids)}

    @app.post("/process")
    async def enqueue_process(value: int, tasks=Depends(task_manager.get_tasks)):
        """A task that runs in taskflow's process pool (``tests.apps.tasks.process_info``)."""
        return {"task_id": tasks.add_task(app_tasks.process_info, value)}

    @app.post("/sync-slow")
    async def enqueue_sync_slow(seconds: float, tasks=Depends(task_manager.get_tasks)):
        """A sync task that holds a thread of the pool for ``seconds``."""
        return {"task_id": tasks.add_task(sync_slow, seconds)}

    @app.post("/batch")
    async def batch(count: int, tasks=Depends(task_manager.get_tasks)):
        return {"task_ids": [tasks.add_task(app_tasks.add, i, 1) for i in range(count)]}

    @app.post("/counted")
    async def enqueue_counted(
        count: int, seconds: float = 0.0, tasks=Depends(task_manager.get_tasks)
    ):
        """``count`` counted tasks: even positions re-runnable, odd ones not."""
        funcs = (counted_rerunnable, counted_once)
        return {"task_ids": [tasks.add_task(funcs[i % 2], seconds) for i in range(count)]}

    @app.post("/process-sleep")
    async def enqueue_process_sleep(
        path: str, seconds: float, tasks=Depends(task_manager.get_tasks)
    ):
        """A process task that writes its worker's pid to ``path`` and sleeps."""
        return {"task_id": tasks.add_task(app_tasks.pid_then_sleep, path, seconds)}

    @app.post("/spanned")
    async def enqueue_spanned(count: int, seconds: float, tasks=Depends(task_manager.get_tasks)):
        """``count`` re-runnable ``spanned`` tasks of ``seconds`` each."""
        return {"task_ids": [tasks.add_task(spanned, seconds) for _ in range(count)]}

    @app.post("/counted-sync")
    def enqueue_counted_sync(
        count: int, seconds: float = 0.0, tasks=Depends(task_manager.get_tasks)
    ):
        """``/counted`` from a sync route: each ``add_task`` commits before it returns."""
        funcs = (counted_rerunnable, counted_once)
        return {"task_ids": [tasks.add_task(funcs[i % 2], seconds) for i in range(count)]}

    @app.post("/schedules/{name}/pause")
    async def pause_schedule(name: str):
        return {"enabled": (await task_manager.pause_schedule(name)).enabled}

    @app.get("/whoami")
    async def whoami():
        return {"pid": os.getpid(), "instance": task_manager.instance_id}

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


if os.environ.get("TASKFLOW_TEST_ORPHAN_AGE"):
    from taskflow._engine import coordination

    coordination.ORPHAN_AGE = float(os.environ["TASKFLOW_TEST_ORPHAN_AGE"])

app, task_manager = (
    build_app(
        os.environ.get("TASKFLOW_DATABASE_URL", "sqlite+aiosqlite:///taskflow-test.db"),
        poll_interval=0.1,
        heartbeat_interval=float(os.environ.get("TASKFLOW_HEARTBEAT", "1")),
        instance_timeout=float(os.environ.get("TASKFLOW_INSTANCE_TIMEOUT", "5")),
        pool_size=int(os.environ.get("TASKFLOW_POOL_SIZE", "10")),
        max_sync_threads=int(os.environ.get("TASKFLOW_TEST_SYNC_THREADS", "0")) or None,
        **(
            {
                "retention_days": float(os.environ[RETENTION_ENV]) / 86400,
                "retention_interval": 1.0,
            }
            if os.environ.get(RETENTION_ENV)
            else {}
        ),
        schedule_every=(
            float(os.environ[SCHEDULE_EVERY_ENV]) if os.environ.get(SCHEDULE_EVERY_ENV) else None
        ),
    )
    if os.environ.get("TASKFLOW_SERVE_TEST_APP")
    else (None, None)
)
