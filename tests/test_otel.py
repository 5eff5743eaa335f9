"""OpenTelemetry traces on both databases: the trace context of the code that enqueues a
task is stored with it, and each attempt is a span of that trace, in whichever manager
runs it. Spans are read back with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from taskflow import TaskManager
from taskflow._store.schema import tasks as tasks_table
from tests.apps import tasks as app_tasks
from tests.conftest import wait_for_status

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A global SDK tracer provider that keeps finished spans in memory, as an app would
    configure it; the API's globals are reset afterwards (as OpenTelemetry's own tests
    do), so no other test runs with tracing on."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


async def finished_spans(
    exporter: InMemorySpanExporter, name: str, count: int, *, timeout: float = 10.0
) -> list[ReadableSpan]:
    """The finished spans called ``name``, once there are ``count`` of them (a run's span
    ends just after its outcome is committed)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [span for span in exporter.get_finished_spans() if span.name == name]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} spans named {name!r}, wanted {count}")
        await asyncio.sleep(0.02)


async def stored_trace_context(manager: TaskManager, task_id: str) -> str | None:
    row = await manager.db.get_task(task_id)
    assert row is not None
    return row.trace_context


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def deliver(to: str) -> str:
    return f"sent to {to}"


async def flaky() -> None:
    raise ValueError("no route to host")


async def test_a_request_trace_continues_in_the_run_of_its_task(manager_factory, spans):
    manager = manager_factory()
    manager.task()(deliver)
    app = FastAPI()
    manager.init_app(app)
    tracer = trace.get_tracer("tests")

    @app.post("/signup")
    def signup(email: str, tasks=Depends(manager.get_tasks)) -> dict[str, str]:
        with tracer.start_as_current_span("signup"):
            return {"task_id": tasks.add_task(deliver, email)}

    await manager.startup()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/signup", params={"email": "ada@example.com"})
    task_id = response.json()["task_id"]
    record = await wait_for_status(manager, task_id)
    assert record.status == "success"

    [request] = await finished_spans(spans, "signup", 1)
    [run] = await finished_spans(spans, "taskflow.run deliver", 1)
    assert json.loads(await stored_trace_context(manager, task_id)) == {
        "traceparent": traceparent(request)
    }
    assert run.context.trace_id == request.context.trace_id
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert run.kind is SpanKind.CONSUMER
    assert dict(run.attributes or {}) == {
        "taskflow.task_id": task_id,
        "taskflow.function": "deliver",
        "taskflow.queue": "default",
        "taskflow.attempt": 1,
        "taskflow.source": "manual",
        "taskflow.status": "success",
    }
    assert run.status.status_code is StatusCode.UNSET
    assert run.start_time is not None and request.end_time is not None
    assert run.start_time >= request.end_time  # the task starts after the response


async def test_each_failed_attempt_is_an_error_span_with_its_exception(manager_factory, spans):
    manager = manager_factory()
    manager.task(retries=1, delay=0.01)(flaky)
    await manager.startup()
    with trace.get_tracer("tests").start_as_current_span("checkout") as checkout:
        task_id = await manager.enqueue(flaky)
    record = await wait_for_status(manager, task_id)
    assert record.status == "failed"

    runs = await finished_spans(spans, "taskflow.run flaky", 2)
    assert [run.attributes["taskflow.attempt"] for run in runs] == [1, 2]
    assert [run.attributes["taskflow.status"] for run in runs] == ["retrying", "failed"]
    for run in runs:
        assert run.parent is not None and run.parent.span_id == checkout.get_span_context().span_id
        assert run.context.trace_id == checkout.get_span_context().trace_id
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "ValueError: no route to host"
        [event] = run.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "no route to host"
    assert len(runs) == 2


async def test_another_manager_runs_the_task_in_the_enqueuing_trace(manager_factory, spans):
    web = manager_factory(queues=["default"])
    worker = manager_factory(queues=["mail"])
    web.task()(deliver)
    worker.task()(deliver)
    await web.startup()
    with trace.get_tracer("tests").start_as_current_span("invite") as invite:
        task_id = await web.enqueue(deliver, "grace@example.com", queue="mail")
    stored = await stored_trace_context(web, task_id)
    assert stored is not None and json.loads(stored)["traceparent"].split("-")[1] == (
        f"{invite.get_span_context().trace_id:032x}"
    )

    await worker.startup()
    record = await wait_for_status(worker, task_id)
    assert record.status == "success"
    [run] = await finished_spans(spans, "taskflow.run deliver", 1)
    assert run.parent is not None and run.parent.span_id == invite.get_span_context().span_id
    assert run.attributes["taskflow.queue"] == "mail"


async def test_a_stored_context_that_is_not_a_carrier_gives_a_root_span(manager_factory, spans):
    web = manager_factory(queues=["default"])
    worker = manager_factory(queues=["mail"])
    web.task()(deliver)
    worker.task()(deliver)
    await web.startup()
    ids = {}
    for junk in ("not json", '["traceparent"]'):
        ids[junk] = await web.enqueue(deliver, "x@example.com", queue="mail")
        async with web.db.write() as conn:
            await conn.execute(
                tasks_table.update().where(tasks_table.c.id == ids[junk]).values(trace_context=junk)
            )
    await worker.startup()
    for task_id in ids.values():
        assert (await wait_for_status(worker, task_id)).status == "success"
    runs = await finished_spans(spans, "taskflow.run deliver", 2)
    assert {run.attributes["taskflow.task_id"] for run in runs} == set(ids.values())
    assert [run.parent for run in runs] == [None, None]


@pytest.mark.slow
async def test_a_standalone_worker_process_traces_the_run_in_the_request_trace(
    manager_factory, spans, db_url, tmp_path
):
    # The worker process configures its own SDK (tests/apps/otel_worker.py), whose
    # exporter writes its spans to a file this test reads.
    web = manager_factory()
    web.task(queue="traced", name="crunch")(app_tasks.crunch)
    await web.startup()
    with trace.get_tracer("tests").start_as_current_span("report") as report:
        task_id = await web.enqueue(app_tasks.crunch, 10)
    span_file, log_path = tmp_path / "spans.jsonl", tmp_path / "worker.log"
    env = {
        **os.environ,
        "TASKFLOW_DATABASE_URL": db_url,
        "TASKFLOW_TEST_SPANS": str(span_file),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "taskflow.cli",
        "worker",
        "tests.apps.otel_worker:task_manager",
    ]
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [*command, "--queues", "traced"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            record = await wait_for_status(web, task_id, timeout=60)
            assert record.status == "success", log_path.read_text()
            assert record.owner != web.instance_id
            run = await _span_in_file(span_file, "taskflow.run crunch")
        finally:
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, log_path.read_text()
    context = report.get_span_context()
    assert (run["trace_id"], run["parent_id"]) == (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert run["attributes"]["taskflow.task_id"] == task_id
    assert run["attributes"]["taskflow.status"] == "success"
    assert run["status"] == "UNSET"
    # The web process started no span for it: it does not run the "traced" queue.
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("taskflow.run")]


async def _span_in_file(path: Path, name: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            text = path.read_text()
            complete = text[: text.rfind("\n") + 1]  # a line being written is not read yet
            lines = [json.loads(line) for line in complete.splitlines()]
            found = [line for line in lines if line["name"] == name]
            if found:
                [span] = found
                return span
        if time.monotonic() > deadline:
            raise AssertionError(f"no span named {name!r} in {path}")
        await asyncio.sleep(0.05)


async def test_without_a_current_span_nothing_is_stored_and_the_run_is_a_root(
    manager_factory, spans
):
    manager = manager_factory()
    manager.task()(deliver)
    await manager.startup()
    task_id = await manager.enqueue(deliver, "linus@example.com")
    await wait_for_status(manager, task_id)
    assert await stored_trace_context(manager, task_id) is None
    [run] = await finished_spans(spans, "taskflow.run deliver", 1)
    assert run.parent is None
    assert run.attributes["taskflow.status"] == "success"


async def test_a_one_off_firing_does_not_join_the_trace_that_declared_it(manager_factory, spans):
    manager = manager_factory()
    manager.task()(deliver)
    await manager.startup()
    later = datetime.now(UTC) + timedelta(days=1)
    with trace.get_tracer("tests").start_as_current_span("declare"):
        await manager.schedule_once(deliver, "x@example.com", run_at=later, run_key="k1")
    [pending] = await manager.db.pending_once()
    assert pending.trace_context is None


async def test_without_a_tracer_provider_nothing_is_stored_or_traced(manager_factory):
    manager = manager_factory()
    manager.task()(deliver)
    await manager.startup()
    # A span context from a tracer with no SDK behind it is not valid: nothing to carry.
    with trace.get_tracer("tests").start_as_current_span("unconfigured"):
        task_id = await manager.enqueue(deliver, "margaret@example.com")
    record = await wait_for_status(manager, task_id)
    assert record.status == "success"
    assert await stored_trace_context(manager, task_id) is None
