"""What taskflow's features cost when they are used, measured in this process (no HTTP)
on one database: each workload enqueues no-op tasks through the public API and waits
until all of them ran.

Workloads (``tasks`` no-op tasks each unless said otherwise):

- ``plain``: ``await enqueue(noop, i)`` from 32 concurrent callers;
- ``unique``: the same with ``unique_for=60`` (every call distinct: each one is stored);
- ``group``: ``group([step(noop, i) ...], then=step(noop, -1))``, one workflow;
- ``session``: each task enqueued in its own application transaction (``session=``), 32
  callers at a time;
- ``limited``: a function registered with ``concurrency=4`` (all processes together);
- ``chain``: a chain of ``steps`` steps, ms from one step's end to the next one's start,
  against ``sequential``: enqueue a task once the previous one has ended;
- ``wait``: ``await wait(id)`` right after ``enqueue``, ms to return, against an event
  the task sets itself;
- ``progress``: µs per ``task_progress()`` call in a loop of 100,000 (thread task).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

CALLERS = 32
PROGRESS_CALLS = 100_000

_done: dict[str, int] = {}
_all_done: dict[str, asyncio.Event] = {}
_expected: dict[str, int] = {}
_ended_at: dict[int, float] = {}


def _count(kind: str) -> None:
    _done[kind] = _done.get(kind, 0) + 1
    if _done[kind] >= _expected.get(kind, 1 << 60):
        _all_done[kind].set()


async def noop(token: int, kind: str = "plain") -> int:
    """The measured task: counts itself, notes when it ended."""
    _ended_at[token] = time.perf_counter()
    _count(kind)
    return token


async def limited_noop(token: int) -> int:
    """A no-op whose function allows 4 attempts at once across processes."""
    _count("limited")
    return token


async def unique_noop(token: int) -> int:
    """A no-op enqueued with ``unique_for``."""
    _count("unique")
    return token


def reporter(calls: int) -> int:
    """A thread task reporting its progress ``calls`` times."""
    from taskflow import task_progress

    for done in range(calls):
        task_progress(done, calls)
    return calls


def _expect(kind: str, count: int) -> asyncio.Event:
    _done[kind] = 0
    _expected[kind] = count
    event = _all_done[kind] = asyncio.Event()
    return event


async def _callers(count: int, enqueue_one: Any) -> None:
    """``enqueue_one(i)`` for ``i`` in ``range(count)``, from :data:`CALLERS` callers."""
    numbers = iter(range(count))

    async def caller() -> None:
        for number in numbers:
            await enqueue_one(number)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def _rate(kind: str, count: int, enqueue_all: Any) -> float:
    """Tasks/s from the first enqueue until the ``count``-th ``kind`` task ran."""
    finished = _expect(kind, count)
    began = time.perf_counter()
    await enqueue_all()
    await asyncio.wait_for(finished.wait(), 300)
    return count / (time.perf_counter() - began)


async def measure(url: str, tasks: int, steps: int, samples: int) -> dict[str, float]:
    """Every workload once on ``url``; the figures by name."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from taskflow import TaskManager, step
    from taskflow._store.engine import normalize_url

    manager = TaskManager(database_url=url, auto_upgrade=True, poll_interval=0.05)
    manager.task()(noop)
    manager.task(concurrency=4)(limited_noop)
    manager.task()(unique_noop)
    manager.task()(reporter)
    app_engine = create_async_engine(normalize_url(url))  # the application's own engine
    sessions = async_sessionmaker(app_engine)
    figures: dict[str, float] = {}
    await manager.startup()
    try:
        await _rate("plain", 200, lambda: _callers(200, lambda i: manager.enqueue(noop, i)))

        figures["plain"] = await _rate(
            "plain", tasks, lambda: _callers(tasks, lambda i: manager.enqueue(noop, i))
        )
        figures["unique"] = await _rate(
            "unique",
            tasks,
            lambda: _callers(tasks, lambda i: manager.enqueue(unique_noop, i, unique_for=60)),
        )
        figures["group"] = await _rate(
            "group",
            tasks + 1,
            lambda: manager.group(
                [step(noop, i, "group") for i in range(tasks)], then=step(noop, -1, "group")
            ),
        )

        async def in_transaction(number: int) -> None:
            async with sessions() as session, session.begin():
                await manager.enqueue(noop, number, "session", session=session)

        figures["session"] = await _rate("session", tasks, lambda: _callers(tasks, in_transaction))
        figures["limited"] = await _rate(
            "limited", tasks, lambda: _callers(tasks, lambda i: manager.enqueue(limited_noop, i))
        )
        figures.update(await _handoffs(manager, steps))
        figures.update(await _waits(manager, samples))
        began = time.perf_counter()
        task_id = await manager.enqueue(reporter, PROGRESS_CALLS)
        record = await manager.wait(task_id, timeout=300)
        assert record.status.value == "success", record.error
        figures["progress_us"] = (time.perf_counter() - began) / PROGRESS_CALLS * 1e6
    finally:
        await manager.shutdown()
        await app_engine.dispose()
    return figures


async def _handoffs(manager: Any, steps: int) -> dict[str, float]:
    """ms from a step's end to the next one's start: a chain, then one task after another."""
    from taskflow import step

    _ended_at.clear()
    base = 10_000_000
    flow = await manager.chain(*[step(noop, base + i, "chain") for i in range(steps)])
    finished = _expect("chain", steps)
    await asyncio.wait_for(finished.wait(), 300)
    records = [await manager.get_task(task_id) for task_id in flow.task_ids]
    chain = [
        (after.start_time - before.end_time).total_seconds() * 1000
        for before, after in zip(records, records[1:], strict=False)
    ]
    sequential = []
    for number in range(steps):
        ended = _expect("sequential", 1)
        began = time.perf_counter()
        await manager.enqueue(noop, base * 2 + number, "sequential")
        await asyncio.wait_for(ended.wait(), 60)
        sequential.append((time.perf_counter() - began) * 1000)
    return {
        "chain_ms": statistics.median(chain),
        "sequential_ms": statistics.median(sequential),
    }


async def _waits(manager: Any, samples: int) -> dict[str, float]:
    """ms until ``wait()`` returns after ``enqueue``, against the task's own event."""
    waited, evented = [], []
    for number in range(samples):
        began = time.perf_counter()
        task_id = await manager.enqueue(noop, number, "wait")
        await manager.wait(task_id, timeout=60)
        waited.append((time.perf_counter() - began) * 1000)
        ended = _expect("event", 1)
        began = time.perf_counter()
        await manager.enqueue(noop, number, "event")
        await asyncio.wait_for(ended.wait(), 60)
        evented.append((time.perf_counter() - began) * 1000)
    return {"wait_ms": statistics.median(waited), "event_ms": statistics.median(evented)}


def run(url: str, tasks: int, steps: int, samples: int) -> dict[str, float]:
    """:func:`measure` on a fresh event loop."""
    return asyncio.run(measure(url, tasks, steps, samples))
