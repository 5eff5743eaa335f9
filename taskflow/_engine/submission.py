"""Turning an ``add_task`` call into a task row and a job."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskflow._engine.job import Job
from taskflow._engine.registry import TaskConfig
from taskflow._store.ids import new_task_id as new_task_id  # re-exported: callers import it here
from taskflow._store.rows import NewTask, TaskRow
from taskflow.errors import TaskArgumentError

SOURCES = ("manual", "scheduled", "api", "retry", "requeue")


def clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as ``str -> str``; numbers and booleans are converted, anything else refused.

    Raises:
        TaskArgumentError: a key is not a string or a value is not a scalar.
    """
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise TaskArgumentError(f"tags must be a dict of strings, got {type(tags).__name__}")
    cleaned: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str):
            raise TaskArgumentError(f"tag keys must be strings, got {type(key).__name__}")
        if not isinstance(value, str | int | float | bool):
            raise TaskArgumentError(
                f"tag {key!r} has type {type(value).__name__}; tag values must be strings"
            )
        cleaned[key] = str(value)
    return cleaned


def build_row(
    config: TaskConfig,
    *,
    task_id: str,
    payload: str,
    encrypted: bool,
    tags: dict[str, str],
    priority: int | None,
    idempotency_key: str | None,
    source: str,
    now: datetime,
    max_retries: int,
    owner: str | None,
    schedule_id: str | None = None,
    schedule_slot: datetime | None = None,
    retry_delay: float | None = None,
    retry_max_delay: float | None = None,
) -> NewTask:
    """A new task of ``config``, pending from ``now``."""
    if idempotency_key is not None and not isinstance(idempotency_key, str):
        raise TaskArgumentError("idempotency_key must be a string")
    return NewTask(
        id=task_id,
        func_name=config.name or "",
        func_path=config.path,
        payload=payload,
        encrypted=encrypted,
        max_retries=max_retries,
        priority=_priority(priority if priority is not None else config.priority),
        queue=config.queue,
        tags=tags,
        idempotency_key=idempotency_key,
        source=source,
        owner=owner,
        requeue_on_interrupt=config.requeue_on_interrupt,
        created_at=now,
        next_attempt_at=now,
        schedule_id=schedule_id,
        schedule_slot=schedule_slot,
        retry_delay=retry_delay,
        retry_max_delay=retry_max_delay,
    )


def _priority(value: int | None) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskArgumentError(f"priority must be an integer, got {type(value).__name__}")
    return value


def job_from_row(task: NewTask | TaskRow, config: TaskConfig | None) -> Job:
    """A runnable job from a task (``config`` None: the function is unknown here)."""
    return Job(
        task_id=task.id,
        func_name=task.func_name,
        func_path=task.func_path,
        payload=task.payload,
        encrypted=bool(task.encrypted),
        priority=task.priority,
        executor=(config.executor or "async") if config is not None else "async",
        tags=dict(task.tags or {}),
        source=task.source,
        max_retries=task.max_retries,
        queue=task.queue,
        retry_delay=task.retry_delay,
        retry_max_delay=task.retry_max_delay,
        trace_context=task.trace_context,
        has_dependencies=task.on_dependency_failure is not None,
        limit_key=task.limit_key,
    )
