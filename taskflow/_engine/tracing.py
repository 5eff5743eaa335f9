"""OpenTelemetry traces of tasks.

With ``opentelemetry-api`` installed (the ``otel`` extra; recent FastAPI releases depend
on it too), the trace context of the code that enqueues a task is stored with the task
(:func:`capture`), and each attempt runs inside a span of that trace, in whichever
process runs it (:func:`start_run`, :func:`end_run`). taskflow never configures an SDK:
the application does. Without the API, without a current span at enqueue time, or
without a configured tracer provider at run time, each costs one check.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode

    AVAILABLE = True
except ImportError:  # pragma: no cover - the otel extra (or a FastAPI that brings it) is absent
    AVAILABLE = False

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from taskflow._engine.job import Job

TRACER_NAME = "taskflow"

_tracer_of: tuple[object, Tracer | None] = (None, None)  # (provider, its tracer)


def capture() -> str | None:
    """The trace context of the current span as compact JSON (the propagators' carrier:
    ``traceparent``, and ``tracestate`` when there is one), or None when there is no
    valid current span."""
    if not AVAILABLE or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def start_run(job: Job, attempt: int) -> Span | None:
    """A started span for attempt ``attempt`` (from 1) of ``job``, a child of the
    context stored at enqueue time (a root span without one); None when no tracer
    provider is configured."""
    tracer = _tracer()
    if tracer is None:
        return None
    return tracer.start_span(
        f"taskflow.run {job.func_name}",
        context=_parent(job.trace_context),
        kind=SpanKind.CONSUMER,
        attributes={
            "taskflow.task_id": job.task_id,
            "taskflow.function": job.func_name,
            "taskflow.queue": job.queue,
            "taskflow.attempt": attempt,
            "taskflow.source": job.source,
        },
    )


@contextlib.contextmanager
def current(span: Span) -> Iterator[None]:
    """Make ``span`` the current span (spans the task opens become its children)."""
    with trace.use_span(span, record_exception=False, set_status_on_exception=False):
        yield


def end_run(span: Span, *, status: str, error: BaseException | None, message: str | None) -> None:
    """End an attempt's span: its ``taskflow.status`` and, for a failed attempt, the
    exception and an ``ERROR`` status with ``message``."""
    span.set_attribute("taskflow.status", status)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, message))
    span.end()


def _tracer() -> Tracer | None:
    """taskflow's tracer from the global provider, or None while none is configured."""
    global _tracer_of
    if not AVAILABLE:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    if _tracer_of[0] is not provider:  # a provider set (or replaced) since the last call
        _tracer_of = (provider, provider.get_tracer(TRACER_NAME))
    return _tracer_of[1]


def _parent(stored: str | None) -> Context:
    """The context a stored trace context describes; an empty one (a root span) for
    none or for text that is not a carrier."""
    if stored is None:
        return Context()
    try:
        carrier = json.loads(stored)
    except ValueError:
        return Context()
    if not isinstance(carrier, dict):
        return Context()
    return propagate.extract({str(k): str(v) for k, v in carrier.items()}, context=Context())
