"""One attempt of one task, as a short pipeline:
start (claim) → execute with timeout → settle the outcome (finish, or schedule a retry).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from taskflow._engine import context as task_context
from taskflow._engine import tracing
from taskflow._engine.executors import Call, ExecutorPool
from taskflow._engine.job import Job, JobHooks, utcnow
from taskflow._engine.metrics import PROCESS_METRICS
from taskflow._engine.registry import TaskConfig, TaskRegistry
from taskflow._engine.retry import RetryPolicy
from taskflow._engine.runtime import Runtime
from taskflow._payloads.limits import Limits
from taskflow._payloads.payloads import MEMORY_ONLY_LOST, Payloads, is_memory_only
from taskflow._store import rows
from taskflow.errors import (
    DatabaseError,
    TaskArgumentError,
    TaskNotRerunnable,
    UnknownTaskFunction,
)
from taskflow.observers import (
    LifecycleEvent,
    LoggerChain,
    lifecycle_logging_enabled,
    log_lifecycle_event,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

logger = logging.getLogger("taskflow")
T = TypeVar("T")


@dataclass(slots=True)
class Outcome:
    """How an attempt ended."""

    result: str | None = None
    error: BaseException | None = None
    traceback: str | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


class Runner:
    """Runs attempts of jobs.

    Args:
        runtime: the manager's running state (the store, this instance's id).
        executors: where task functions run.
        payloads: decodes arguments, encodes results.
        limits: the largest stored result.
        registry: the config of a job's function.
        observers: who hears lifecycle transitions (None: nobody).
        log_sink: the ``task_log`` target of a job.
        retry_later: start a job again after a delay in seconds.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        executors: ExecutorPool,
        payloads: Payloads,
        limits: Limits,
        registry: TaskRegistry,
        observers: LoggerChain | None,
        log_sink: Callable[[Job], Callable[[str, str, dict[str, Any]], None]],
        retry_later: Callable[[Job, float], None],
    ) -> None:
        self._runtime = runtime
        self._executors = executors
        self._payloads = payloads
        self._limits = limits
        self._registry = registry
        self._observers = observers
        self._log_sink = log_sink
        self._retry_later = retry_later

    async def run(self, job: Job) -> None:
        """Run one attempt of ``job`` and persist its outcome."""
        attempt = await self._start(job)
        if attempt is None:  # cancelled, or taken by another process
            if job.hooks is not None and job.hooks.done is not None and not job.hooks.done.done():
                job.hooks.done.set_result("not started")
            return
        started = utcnow()
        if job.hooks is not None and job.hooks.started is not None:
            job.hooks.started.set()
        job.attempt = attempt
        self._lifecycle(job, "running", attempt)
        span = tracing.start_run(job, attempt)  # None unless the app configured tracing
        if span is None:
            await self._settle(job, attempt, await self._execute(job, attempt), started)
        else:
            await self._traced(span, job, attempt, started)

    async def _traced(self, span: Span, job: Job, attempt: int, started: datetime) -> None:
        """Execute and settle with ``span`` current (spans the task opens are its
        children), then end it with how the attempt ended."""
        status, outcome = "interrupted", Outcome()  # unless settled: shutdown stopped it
        try:
            with tracing.current(span):
                outcome = await self._execute(job, attempt)
                status = await self._settle(job, attempt, outcome, started)
        finally:
            error = outcome.error
            message = _describe(error) if error is not None else None
            tracing.end_run(span, status=status, error=error, message=message)

    # -- start -----------------------------------------------------------------------

    async def _start(self, job: Job) -> int | None:
        db, instance = self._runtime.db, self._runtime.instance_id
        return await self._durably(
            lambda: db.start_task(job.task_id, instance=instance, now=utcnow())
        )

    # -- execute -----------------------------------------------------------------------

    async def _execute(self, job: Job, attempt: int) -> Outcome:
        try:
            call, config = self._prepare(job, attempt)
            value = await self._executors.run(job.executor, call)
            encoded = self._payloads.encode_result(value)
            if encoded is not None:
                self._limits.check_payload(encoded, what="result")
            return Outcome(result=encoded)
        except asyncio.CancelledError:
            if job.cancel_reason != "cancelled":
                raise  # shutdown: the instance settles this task
            return Outcome(cancelled=True)
        except BaseException as exc:  # noqa: BLE001 - a task's failure is its outcome
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                logger.warning("task %s raised %s", job.task_id, type(exc).__name__)
            return Outcome(error=exc, traceback=_format(exc))

    def _prepare(self, job: Job, attempt: int) -> tuple[Call, TaskConfig]:
        config = self._config(job)
        if job.memory is not None:
            args, kwargs = job.memory
        elif is_memory_only(job.payload):
            raise TaskNotRerunnable(MEMORY_ONLY_LOST)
        else:
            args, kwargs = self._payloads.decode_call(job.payload, encrypted=job.encrypted)
        context = task_context.TaskContext(
            task_id=job.task_id,
            func_name=job.func_name,
            attempt=attempt - 1,  # fastapi-taskflow's numbering: 0 is the first run
            max_retries=job.max_retries,
            tags=job.tags,
            source=job.source,
            _sink=self._log_sink(job),
            _cancelled=job.cancel,
        )
        if config.func is None:
            raise UnknownTaskFunction(f"task function {job.func_name!r} has no callable")
        call = Call(
            func=config.func,
            path=config.path,
            args=args,
            kwargs=kwargs,
            context=context,
            timeout=config.timeout,
        )
        return call, config

    # -- settle ------------------------------------------------------------------------

    async def _settle(self, job: Job, attempt: int, outcome: Outcome, started: datetime) -> str:
        """Persist how the attempt ended and act on it; the status it ended with
        (``retrying`` when another attempt follows)."""
        now = utcnow()
        retry_in = self._retry_delay(job, attempt, outcome)
        error = _describe(outcome.error) if outcome.error is not None else None
        end = rows.Outcome(
            id=job.task_id,
            owner=self._runtime.instance_id,
            attempt=attempt,
            status="pending" if retry_in is not None else _final_status(job, outcome),
            finished_at=now,
            result=outcome.result,
            error=error,
            traceback=outcome.traceback if error is not None else None,
            next_attempt_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
        )
        db = self._runtime.db
        await self._durably(lambda: db.finish_task(end))
        self._lifecycle(
            job,
            "retrying" if retry_in is not None else end.status,
            attempt,
            error=end.error,
            stacktrace=end.traceback,
            duration=(now - started).total_seconds(),
        )
        if retry_in is not None:
            self._retry_later(job, retry_in)
            return "retrying"
        await self._after_final(job, end.status, outcome)
        return end.status

    async def _after_final(self, job: Job, status: str, outcome: Outcome) -> None:
        hooks = job.hooks
        if hooks is None:
            return
        if hooks.done is not None and not hooks.done.done():
            hooks.done.set_result(status)
        if status == "failed" and hooks.on_error is not None and outcome.error is not None:
            await _call_error_handler(hooks, outcome.error)

    def _retry_delay(self, job: Job, attempt: int, outcome: Outcome) -> float | None:
        if outcome.ok or outcome.cancelled or job.cancel_reason is not None:
            return None
        policy = self._policy(job)
        assert outcome.error is not None
        if not policy.should_retry(attempt, outcome.error):
            return None
        return policy.delay_before(attempt)

    def _config(self, job: Job) -> TaskConfig:
        if job.config is not None:
            return job.config
        return self._registry.config_for(job.func_name, job.func_path)

    def _policy(self, job: Job) -> RetryPolicy:
        try:
            config = self._config(job)
        except Exception:  # noqa: BLE001 - an unknown function is not retried
            return RetryPolicy()
        return RetryPolicy(
            retries=job.max_retries,
            delay=_first(job.retry_delay, config.delay),
            backoff=config.backoff,
            max_delay=_first(job.retry_max_delay, config.max_delay),
            jitter=config.jitter,
            retry_on=config.retry_on,
        )

    # -- helpers -----------------------------------------------------------------------

    def _lifecycle(
        self,
        job: Job,
        status: str,
        attempt: int,
        *,
        error: str | None = None,
        stacktrace: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Count a transition (:data:`PROCESS_METRICS`), log it (``taskflow.events``) and
        tell observers; ``attempt`` counts from 1 here and is reported zero-based, as
        fastapi-taskflow does. The event itself is built only when someone reads it."""
        PROCESS_METRICS.record(job.func_name, job.queue, status, duration)
        logged = lifecycle_logging_enabled(status)
        if self._observers is None and not logged:
            return
        event = LifecycleEvent(
            task_id=job.task_id,
            func_name=job.func_name,
            status=status,
            timestamp=utcnow(),
            attempt=max(attempt - 1, 0),
            duration=duration,
            error=error,
            stacktrace=stacktrace,
            tags=job.tags,
            queue=job.queue,
        )
        if logged:
            log_lifecycle_event(event)
        if self._observers is not None:
            self._observers.emit(event)

    async def _durably(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write, retrying database errors with backoff: the outcome of a task
        that ran must not be lost to a short outage."""
        pause = 0.05
        while True:
            try:
                return await write()
            except DatabaseError as exc:
                if self._runtime.giving_up_writes:
                    raise
                logger.warning("task database write failed, retrying in %.2fs: %s", pause, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)


async def _call_error_handler(hooks: JobHooks, error: BaseException) -> None:
    """Run an ``on_error`` handler; whatever it raises is logged and contained."""
    assert hooks.on_error is not None
    try:
        result = hooks.on_error(hooks.handle, error)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except BaseException:  # noqa: BLE001 - a broken handler must not break the runner
        logger.exception("the on_error handler of a task raised")


def _first(override: float | None, default: Any) -> Any:
    return default if override is None else override


def _final_status(job: Job, outcome: Outcome) -> str:
    if outcome.cancelled or job.cancel_reason == "cancelled":
        return "cancelled"
    return "success" if outcome.error is None else "failed"


def _describe(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, TaskArgumentError) and "result" in text:
        return f"result cannot be stored: {text}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _format(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))
