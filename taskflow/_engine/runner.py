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
from taskflow._engine import throttle, tracing
from taskflow._engine.executors import Call, ExecutorPool
from taskflow._engine.job import Job, JobHooks, utcnow
from taskflow._engine.metrics import PROCESS_METRICS
from taskflow._engine.progress import ProgressWriter
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
MIN_LIMIT_WAIT = 0.05  # a held job never asks again sooner: no spinning on a full limit


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
        progress: keeps and writes the ``task_progress`` reports of jobs.
        retry_later: start a job again after a delay in seconds.
        on_final: told of each job whose task ended here (its dependents may start).
        ended: told the id of a task once its final status is committed.
        poll_interval: how long a job held by its function's concurrency limit waits
            before it asks again (a slot freed in another process is seen then).
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
        progress: ProgressWriter,
        retry_later: Callable[[Job, float], None],
        ended: Callable[[str], None],
        on_final: Callable[[Job], None] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._runtime = runtime
        self._executors = executors
        self._payloads = payloads
        self._limits = limits
        self._registry = registry
        self._observers = observers
        self._log_sink = log_sink
        self._progress = progress
        self._retry_later = retry_later
        self._on_final = on_final
        self._ended = ended
        self._poll_interval = poll_interval

    async def run(self, job: Job) -> None:
        """Run one attempt of ``job`` and persist its outcome; nothing while this
        instance is fenced (its claims are settled when it is back)."""
        if self._runtime.fenced:
            return
        if job.limit_key is None:
            attempt = await self._start(job)
        else:
            limited = await self._start_limited(job, job.limit_key)
            if isinstance(limited, rows.LimitHold):
                return  # it waits in the dispatcher, still pending
            attempt = limited
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
        now = utcnow()  # one start time: a retried start is recognised as the same one
        return await self._durably(lambda: db.start_task(job.task_id, instance=instance, now=now))

    async def _start_limited(self, job: Job, limit_key: str) -> int | rows.LimitHold | None:
        """Start ``job`` if its function's limit allows (counted by the store across
        processes); when it does not, the dispatcher holds the job until a job of the
        key ends here or the wait the limit implies is over."""
        config = job.config or self._registry.config_or_none(job.func_name, job.func_path)
        limit = throttle.limit_for(config, limit_key) if config is not None else None
        db, instance = self._runtime.db, self._runtime.instance_id
        started: int | rows.LimitHold | None
        if limit is None:  # no limit known here: it starts as any task does
            started = await self._start(job)
        else:
            now = utcnow()  # one start time, as in _start
            started = await self._durably(
                lambda: db.start_limited(job.task_id, instance=instance, limit=limit, now=now)
            )
        dispatcher = self._runtime.dispatcher
        assert dispatcher is not None
        if isinstance(started, rows.LimitHold):
            dispatcher.limit_held(job, self._limit_wait(started))
        elif started is not None:
            dispatcher.limit_started(job)
        return started

    def _limit_wait(self, hold: rows.LimitHold) -> float:
        """Seconds until a held job asks again: the poll interval for a full
        concurrency limit (slots freed in other processes), the moment the rate window
        allows the next start for a rate limit."""
        if hold.retry_at is None:
            return self._poll_interval
        return max((hold.retry_at - utcnow()).total_seconds(), MIN_LIMIT_WAIT)

    # -- execute -----------------------------------------------------------------------

    async def _execute(self, job: Job, attempt: int) -> Outcome:
        try:
            upstream = await self._dependency_results(job) if job.has_dependencies else {}
            call, config = self._prepare(job, attempt, upstream)
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

    async def _dependency_results(self, job: Job) -> dict[str, Any]:
        """The decoded results of ``job``'s dependencies, by id in ``depends_on`` order."""
        stored = await self._runtime.db.dependency_results(job.task_id)
        return {
            dep: None if text is None else self._payloads.decode_result(text, encrypted=encrypted)
            for dep, text, encrypted in stored
        }

    def _prepare(self, job: Job, attempt: int, upstream: dict[str, Any]) -> tuple[Call, TaskConfig]:
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
            _progress=self._progress.sink(job),
            dependency_results=upstream,
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
        self._progress.flush(job.task_id)  # the last report commits before the end
        await self._durably(lambda: db.finish_task(end))
        if retry_in is None:
            self._ended(job.task_id)
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
        if self._on_final is not None:
            self._on_final(job)
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
