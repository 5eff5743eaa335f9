"""A process with limited task functions, for ``tests/test_limits_cluster.py``.

``python -m tests.apps.limits_worker NAME PLAN`` starts a TaskManager on
``$TASKFLOW_DATABASE_URL``, says it is ready (a file ``NAME.ready`` in
``$LIMITS_DIR``), waits until every process of the test is ready, enqueues its ``PLAN``
and exits once all of its tasks ended. Every task appends ``start``/``end`` lines with
the system-wide monotonic clock to ``$LIMITS_DIR/runs.log``, so the test can check
that two tasks of one limit never ran at the same time, whichever process ran them.

Plans: ``serial:N`` (N tasks of ``serial``, concurrency 1), ``tenants:N`` (N tasks
each for tenants ``a`` and ``b`` of ``per_tenant``, concurrency 1 per tenant), ``hog``
(one ``serial`` task that never ends: the test kills the process).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from taskflow import TaskManager

DIR = Path(os.environ["LIMITS_DIR"])
RUN_SECONDS = 0.2  # how long a task runs: long enough for the processes to contend

task_manager = TaskManager(
    database_url=os.environ["TASKFLOW_DATABASE_URL"],
    poll_interval=0.05,
    heartbeat_interval=0.5,
    instance_timeout=2.0,
)


def record(event: str, limit: str, label: str) -> None:
    """One line ``event limit label process monotonic_ns``, appended in one write."""
    line = f"{event} {limit} {label} {os.getpid()} {time.monotonic_ns()}\n"
    with open(DIR / "runs.log", "a") as log:
        log.write(line)


@task_manager.task(concurrency=1)
def serial(label: str) -> None:
    record("start", "serial", label)
    if label == "hog":
        threading.Event().wait()  # until the test kills this process
    time.sleep(RUN_SECONDS)  # the work itself
    record("end", "serial", label)


@task_manager.task(concurrency=1, limit_key=lambda tenant, label: tenant)
def per_tenant(tenant: str, label: str) -> None:
    record("start", f"tenant-{tenant}", label)
    time.sleep(RUN_SECONDS)
    record("end", f"tenant-{tenant}", label)


async def main(name: str, plan: str, expected: int) -> None:
    await task_manager.startup()
    try:
        (DIR / f"{name}.ready").touch()
        await _poll(lambda: _all_ready(expected))
        ids = await _enqueue(name, plan)
        await _poll(lambda: _ended(ids))
    finally:
        await task_manager.shutdown()


async def _enqueue(name: str, plan: str) -> list[str]:
    kind, _, count = plan.partition(":")
    if kind == "serial":
        return [await task_manager.enqueue(serial, f"{name}-{n}") for n in range(int(count))]
    if kind == "tenants":
        return [
            await task_manager.enqueue(per_tenant, tenant, f"{name}-{n}")
            for n in range(int(count))
            for tenant in "ab"
        ]
    return [await task_manager.enqueue(serial, "hog")]


async def _all_ready(expected: int) -> bool:
    return len(list(DIR.glob("*.ready"))) >= expected


async def _ended(ids: list[str]) -> bool:
    records = [await task_manager.get_task(task_id) for task_id in ids]
    return all(record is not None and record.status.is_final for record in records)


async def _poll(condition: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; exit with an error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s")
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
