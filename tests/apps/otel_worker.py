"""A TaskManager for ``taskflow worker`` that traces: the app configures an OpenTelemetry
SDK whose exporter appends each finished span as one JSON line to the file named by
``TASKFLOW_TEST_SPANS``, so a test can read the worker's spans. Runs the ``traced``
queue."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from taskflow import TaskManager
from tests.apps import tasks


class JSONLinesExporter(SpanExporter):
    """Appends spans to a file, one JSON object a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            for span in spans:
                context, parent = span.get_span_context(), span.parent
                assert context is not None
                line = {
                    "name": span.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(JSONLinesExporter(Path(os.environ["TASKFLOW_TEST_SPANS"])))
)
trace.set_tracer_provider(provider)

task_manager = TaskManager(database_url=os.environ["TASKFLOW_DATABASE_URL"], poll_interval=0.2)
task_manager.task(queue="traced", name="crunch")(tasks.crunch)
