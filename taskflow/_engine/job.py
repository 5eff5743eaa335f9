"""A task as this process runs it: the :class:`Job` (made from its row) and the
in-process hooks of tasks started through the ``Tasks`` API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskflow._engine.context import LocalFlag
from taskflow._engine.registry import ExecutorKind, TaskConfig

_offset = timedelta(0)  # moved only by taskflow.testing's advance()
# How far the database's clock is ahead of this host's, measured by dbclock.follow()
# (zero on SQLite, whose clock is this host's).
_database_offset = timedelta(0)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC: the engine's clock, which is the database's
    (this host's clock corrected by the measured offset), so that every process on the
    database agrees on it whatever its own clock says."""
    return datetime.now(UTC) + _database_offset + _offset


def database_offset() -> timedelta:
    """How far the database's clock is ahead of this host's (last measurement)."""
    return _database_offset


def set_database_offset(offset: timedelta) -> None:
    """Follow the database's clock (``dbclock.follow``)."""
    global _database_offset
    _database_offset = offset


def clock_offset() -> timedelta:
    """How far the engine's clock is ahead of the real one."""
    return _offset


def set_clock_offset(offset: timedelta) -> None:
    """Move the engine's clock (``taskflow.testing``; zero is the real time)."""
    global _offset
    _offset = offset


@dataclass(slots=True)
class JobHooks:
    """In-process extras of a task started through the ``Tasks`` API (not persisted:
    they only apply while this process runs the task)."""

    started: Any = None  # an event with set(), set when the attempt starts
    on_error: Callable[[Any, BaseException], Any] | None = None
    handle: Any = None  # what on_error receives as the task
    done: asyncio.Future[str] | None = None  # resolves to the final status
    shield: bool = True  # False: cancelled as soon as shutdown begins


@dataclass(slots=True, eq=False)
class Job:
    """A task this process is about to run (or is running)."""

    task_id: str
    func_name: str
    func_path: str
    payload: str
    encrypted: bool
    priority: int
    executor: ExecutorKind
    tags: dict[str, str]
    source: str
    max_retries: int
    queue: str = "default"
    cancel: LocalFlag = field(default_factory=LocalFlag)
    cancel_reason: str | None = None
    retry_delay: float | None = None  # overrides of the function's retry delays
    retry_max_delay: float | None = None
    config: TaskConfig | None = None  # for callables that cannot be imported by name
    # The call itself when it could not be stored (payload is memory-only): only this
    # process can run it.
    memory: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    hooks: JobHooks | None = None
    log_lines: int = 0
    attempt: int = 0  # the attempt running (1 for the first), 0 before it starts
    trace_context: str | None = None  # the stored W3C trace context (see tracing.py)
    has_dependencies: bool = False  # its dependencies' results are read before it runs
    limit_key: str | None = None  # the concurrency or rate limit its starts count against
