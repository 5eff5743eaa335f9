"""``taskflow worker``: run tasks without a web server.

A standalone worker imports the application's TaskManager, serves the queues it is told
to, and runs until SIGTERM or SIGINT, then shuts down like an app would (running tasks
get ``shutdown_timeout`` seconds). Web processes can enqueue to queues they do not run
themselves (``@task(queue="heavy")``); the worker claims those tasks.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import sys
from typing import TYPE_CHECKING

from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow._worker")


def load_manager(target: str) -> TaskManager:
    """Import ``module:attribute`` and return the TaskManager it names.

    Raises:
        ConfigurationError: the target is malformed, missing or not a TaskManager.
    """
    from taskflow.manager import TaskManager

    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:attribute, got {target!r}")
    try:
        value: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {target!r}: {exc}") from exc
    if not isinstance(value, TaskManager):
        raise ConfigurationError(f"{target!r} is a {type(value).__name__}, not a TaskManager")
    return value


def configure(manager: TaskManager, *, queues: list[str] | None, concurrency: int | None) -> None:
    """Apply the command line's queues and concurrency to ``manager``."""
    if queues:
        manager.queues = tuple(queues)
    if concurrency is not None:
        if concurrency < 1:
            raise ConfigurationError(f"--concurrency must be >= 1, got {concurrency}")
        manager.max_concurrent_tasks = concurrency


async def serve(manager: TaskManager, stop: asyncio.Event) -> None:
    """Run ``manager`` until ``stop`` is set, then shut it down."""
    await manager.startup()
    # Everything imported and built so far lives as long as the process: move it out of
    # the collector's way, so full collections scan only what the tasks allocate (this
    # process is the worker's own, so the policy is taskflow's to set).
    gc.collect()
    gc.freeze()
    logger.info(
        "taskflow worker %s serving queues %s", manager.instance_id, ", ".join(manager.queues)
    )
    print(f"taskflow worker ready: queues {', '.join(manager.queues)}", flush=True)
    try:
        await stop.wait()
    finally:
        await manager.shutdown()


async def run(manager: TaskManager) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(manager, stop)


def main(target: str, *, queues: list[str] | None, concurrency: int | None) -> int:
    """Entry point of ``taskflow worker``; returns the exit code."""
    if "" not in sys.path:
        sys.path.insert(0, "")  # like uvicorn: import the app from the working directory
    manager = load_manager(target)
    configure(manager, queues=queues, concurrency=concurrency)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(manager))
    return 0
