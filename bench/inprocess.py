"""taskflow's enqueue → start latency without HTTP: ``await task_manager.enqueue()``
and the task body, both in this process."""

from __future__ import annotations

import asyncio
import time

START_TIMEOUT = 10.0  # seconds a task may take to start before the sample fails

_enqueued_at: dict[int, float] = {}
_started: dict[int, asyncio.Event] = {}
_latencies: list[float] = []


async def mark_start(token: int) -> None:
    """The measured task: note how long after its enqueue call it started."""
    _latencies.append((time.perf_counter() - _enqueued_at.pop(token)) * 1000)
    _started.pop(token).set()


async def measure(url: str, samples: int, pause: float) -> list[float]:
    """Enqueue ``samples`` tasks one at a time (``pause`` seconds apart, each after the
    previous one started); their enqueue → start times in ms."""
    from taskflow import TaskManager

    manager = TaskManager(database_url=url, auto_upgrade=True)
    manager.task()(mark_start)
    _latencies.clear()
    await manager.startup()
    try:
        for token in range(samples):
            started = _started[token] = asyncio.Event()
            _enqueued_at[token] = time.perf_counter()
            await manager.enqueue(mark_start, token)
            async with asyncio.timeout(START_TIMEOUT):
                await started.wait()
            await asyncio.sleep(pause)
    finally:
        await manager.shutdown()
    return list(_latencies)


def run(url: str, samples: int, pause: float) -> list[float]:
    """:func:`measure` on a fresh event loop."""
    return asyncio.run(measure(url, samples, pause))
