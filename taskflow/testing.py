"""Testing an app that uses taskflow: hold tasks (or run them at once), assert what was
enqueued, drain everything enqueued, and move the clock to fire schedules.

::

    from taskflow.testing import TaskTesting

    @pytest.fixture
    def tasks():
        with TaskTesting(task_manager) as tasks:  # before the app starts
            yield tasks

    def test_signup_sends_a_welcome(tasks):
        with TestClient(app) as client:
            client.post("/signup", json={"email": "a@example.com"})
            tasks.assert_enqueued(send_welcome, args=("a@example.com",))
            [record] = tasks.drain()
            assert record.status == "success"

Everything runs for real: tasks are rows in the manager's database and run in its
executors, with retries, timeouts and logs. See docs/testing.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar

from taskflow._engine import job as job_clock
from taskflow._engine.bridge import SYNC_TIMEOUT, running_loop
from taskflow._engine.job import Job, utcnow
from taskflow.errors import ConfigurationError, NotStarted
from taskflow.manager import TaskManager
from taskflow.records import TaskRecord

__all__ = ["Mode", "TaskTesting"]

Mode = Literal["held", "inline"]
T = TypeVar("T")
DRAIN_ROUNDS = 1_000  # a task that enqueues itself forever stops the drain here


class TaskTesting:
    """Test mode of one :class:`~taskflow.TaskManager`.

    Create it before the manager starts (before ``TestClient(app)`` is entered or
    ``startup()`` is awaited) and close it after the manager stops; as a context
    manager it does both ends.

    Args:
        manager: the application's TaskManager.
        mode: ``"held"`` (the default): tasks are stored but none starts until
            :meth:`drain`. ``"inline"``: every task starts as soon as its row is
            committed, a request's tasks too (not after the response), and
            :meth:`drain` waits for them.

    While it is open, schedules fire only when :meth:`advance` moves the clock past
    their slots, and retries do not wait out their delay when drained.

    Raises:
        ConfigurationError: ``mode`` is unknown, the manager is already started, or
            another TaskTesting is open on it.
    """

    def __init__(self, manager: TaskManager, *, mode: Mode = "held") -> None:
        if mode not in ("held", "inline"):
            raise ConfigurationError(f"mode must be 'held' or 'inline', got {mode!r}")
        if manager.started:
            raise ConfigurationError(
                "create TaskTesting before the manager starts (before entering "
                "TestClient(app) or awaiting startup())"
            )
        engine = manager._engine
        if engine.runtime.interceptor is not None:
            raise ConfigurationError("this TaskManager already has a TaskTesting open")
        self.manager = manager
        self.mode: Mode = mode
        self._engine = engine
        # Ids of the jobs about to start (held or started) since drain() last returned, in
        # order: drain() reports them and empties it. The held jobs are the runtime's.
        self._unreported: dict[str, None] = {}
        self._fired: dict[str, None] | None = None  # the same, while advance() fires slots
        self._since = utcnow()
        engine.runtime.interceptor = self._intercept
        engine.intake.start_at_once = mode == "inline"
        manager._run_scheduler = False

    # -- opening and closing -----------------------------------------------------------

    def close(self) -> None:
        """Leave test mode: tasks start normally again and the clock is real."""
        self._engine.runtime.interceptor = None
        self._engine.runtime.forget_kept()
        self._unreported.clear()
        self._engine.intake.start_at_once = False
        self.manager._run_scheduler = True
        job_clock.set_clock_offset(timedelta(0))

    def __enter__(self) -> TaskTesting:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> TaskTesting:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _intercept(self, job: Job) -> bool:
        """Called for every job about to start; True has the runtime keep it until
        :meth:`drain` (held mode)."""
        self._unreported[job.task_id] = None
        if self._fired is not None:
            self._fired[job.task_id] = None
        return self.mode == "held"

    # -- what was enqueued -------------------------------------------------------------

    def enqueued(self, func: Callable[..., Any] | str | None = None) -> list[TaskRecord]:
        """Tasks created since this TaskTesting opened, oldest first, whatever their
        status (``func``: only those of this function or task name).

        Raises:
            NotStarted: the manager is not running.
        """
        name = None if func is None else self._name_of(func)
        rows = self._engine.runtime.read(
            lambda store: store.list_tasks(func_name=name, limit=None, created_since=self._since)
        )
        decode = self._engine.reader.record
        return sorted((decode(row) for row in rows), key=lambda record: record.created_at)

    def assert_enqueued(
        self,
        func: Callable[..., Any] | str,
        *,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
    ) -> TaskRecord:
        """The task of ``func`` enqueued since this TaskTesting opened that matches
        the given ``args`` and ``kwargs`` exactly and carries the given ``tags`` (and
        queue); the newest one when several match.

        Raises:
            AssertionError: no such task; the message lists what was enqueued.
        """
        found = self._matching(func, args=args, kwargs=kwargs, tags=tags, queue=queue)
        if not found:
            wanted = _describe_call(self._name_of(func), args, kwargs, tags, queue)
            raise AssertionError(f"no task {wanted} was enqueued; {self._summary()}")
        return found[-1]

    def assert_not_enqueued(
        self,
        func: Callable[..., Any] | str,
        *,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
    ) -> None:
        """Raises AssertionError when a task of ``func`` matching the filters (as for
        :meth:`assert_enqueued`) was enqueued since this TaskTesting opened."""
        found = self._matching(func, args=args, kwargs=kwargs, tags=tags, queue=queue)
        if found:
            wanted = _describe_call(self._name_of(func), args, kwargs, tags, queue)
            ids = ", ".join(record.task_id for record in found)
            raise AssertionError(f"task {wanted} was enqueued: {ids}")

    def _matching(
        self,
        func: Callable[..., Any] | str,
        *,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: Mapping[str, Any] | None,
        tags: Mapping[str, str] | None,
        queue: str | None,
    ) -> list[TaskRecord]:
        return [
            record
            for record in self.enqueued(func)
            if (args is None or list(record.args or ()) == list(args))
            and (kwargs is None or dict(record.kwargs or {}) == dict(kwargs))
            and (tags is None or all(record.tags.get(k) == v for k, v in tags.items()))
            and (queue is None or record.queue == queue)
        ]

    def _summary(self) -> str:
        records = self.enqueued()
        if not records:
            return "nothing was enqueued"
        calls = [
            _describe_call(r.func_name, r.args, r.kwargs, r.tags or None, None) for r in records
        ]
        return "enqueued: " + "; ".join(calls)

    def _name_of(self, func: Callable[..., Any] | str) -> str:
        if isinstance(func, str):
            return func
        config = self.manager.registry.config_for_callable(func)
        if config is None or config.name is None:
            raise ConfigurationError(f"{func!r} is not a task function of this manager")
        return config.name

    # -- running -------------------------------------------------------------------------

    def drain(self) -> list[TaskRecord]:
        """Run everything enqueued, and what that enqueues, retries included (without
        their delay), until nothing is left; the records of the tasks that ran, in the
        order they started, as they ended. From sync code (a test using
        ``TestClient``); async tests await :meth:`drain_async`.

        Raises:
            NotStarted: the manager is not running.
            RuntimeError: called on the manager's event loop, or tasks kept enqueuing
                more tasks for 1,000 rounds.
        """
        return self._blocking(self.drain_async())

    async def drain_async(self) -> list[TaskRecord]:
        """:meth:`drain` for async tests."""
        runtime = self._engine.runtime
        runtime.require_loop()
        dispatcher = runtime.dispatcher
        assert dispatcher is not None
        for _ in range(DRAIN_ROUNDS):
            fired = self._engine.intake.fire_retries_now()
            claimed = await self._engine.coordinator.claim_now()
            released = runtime.release_kept()
            await dispatcher.wait_idle(None)
            if not (released or fired or claimed or runtime.kept or dispatcher.waiting()):
                ran = list(self._unreported)
                self._unreported.clear()
                return await self._records(ran)
        raise RuntimeError(f"tasks kept enqueuing tasks for {DRAIN_ROUNDS} rounds of drain()")

    async def _records(self, task_ids: list[str]) -> list[TaskRecord]:
        records = []
        for task_id in task_ids:
            record = await self.manager.get_task(task_id)
            if record is not None:
                records.append(record)
        return records

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> list[str]:
        """Move the clock forward and fire every schedule slot that falls in the
        window, exactly once each, in time order; returns the ids of the tasks the
        slots stored (held or started as the mode says). Deferred tasks and retries
        due within the window become due too (:meth:`drain` runs them). From sync
        code; async tests await :meth:`advance_async`.

        Raises:
            NotStarted: the manager is not running.
            ValueError: the window is negative.
        """
        window = _window(delta, seconds=seconds, minutes=minutes, hours=hours, days=days)
        return self._blocking(self.advance_async(window))

    async def advance_async(
        self,
        delta: timedelta | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> list[str]:
        """:meth:`advance` for async tests."""
        window = _window(delta, seconds=seconds, minutes=minutes, hours=hours, days=days)
        self._engine.runtime.require_loop()
        fired: dict[str, None] = {}
        self._fired = fired
        try:
            await self._fire_until(utcnow() + window)
        finally:
            self._fired = None
        return list(fired)

    async def _fire_until(self, target: datetime) -> None:
        """Fire every schedule slot due by ``target`` in time order, moving the clock to
        each, then to ``target``."""
        while True:
            due = await self._engine.runtime.db.next_schedule_due()
            if due is None or due > target:
                break
            if due > utcnow():
                job_clock.set_clock_offset(job_clock.clock_offset() + (due - utcnow()))
            await self.manager.scheduler.tick()
        if target > utcnow():
            job_clock.set_clock_offset(job_clock.clock_offset() + (target - utcnow()))

    @property
    def now(self) -> datetime:
        """The manager's clock (moved by :meth:`advance`)."""
        return utcnow()

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._engine.runtime.loop
        if not self.manager.started or loop is None:
            coro.close()
            raise NotStarted("the TaskManager is not started: enter TestClient(app) first")
        if running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "drain() and advance() wait for the manager's event loop; in async tests "
                "use `await tasks.drain_async()` and `await tasks.advance_async(...)`"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result(SYNC_TIMEOUT * 10)


def _window(
    delta: timedelta | None, *, seconds: float, minutes: float, hours: float, days: float
) -> timedelta:
    window = (delta or timedelta(0)) + timedelta(
        seconds=seconds, minutes=minutes, hours=hours, days=days
    )
    if window < timedelta(0):
        raise ValueError(f"advance() moves the clock forward only, got {window}")
    return window


def _describe_call(
    name: str,
    args: Any,
    kwargs: Any,
    tags: Mapping[str, str] | None,
    queue: str | None,
) -> str:
    parts = [] if args is None else [repr(a) for a in args]
    parts += [] if kwargs is None else [f"{k}={v!r}" for k, v in dict(kwargs).items()]
    text = f"{name}({', '.join(parts)})"
    if tags:
        text += f" tags={dict(tags)!r}"
    if queue is not None:
        text += f" queue={queue!r}"
    return text
