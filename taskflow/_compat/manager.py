"""fastapi-task-manager's settings and health check on taskflow's TaskManager: applying
a ``Config``, reporting the ``Config`` in use, and ``health_check()``."""

from __future__ import annotations

import logging

from taskflow._compat.config import MANAGER_FIELDS, REDIS_FIELDS, RETRY_FIELDS, Config
from taskflow._engine.runtime import Runtime
from taskflow._engine.settings import Settings
from taskflow.errors import DatabaseError
from taskflow.schema.health import HealthResponse

logger = logging.getLogger("taskflow")


def apply_config(settings: Settings, config: Config, *, database: str) -> None:
    """Set ``settings`` from the fields given in ``config``; log once when Redis fields
    are given (``database``: the masked URL in use, named in that message)."""
    given = config.model_fields_set
    for field_name, attribute in MANAGER_FIELDS.items():
        if field_name in given:
            setattr(settings, attribute, getattr(config, field_name))
    for field_name, key in RETRY_FIELDS.items():
        if field_name in given:
            settings.retry[key] = getattr(config, field_name)  # type: ignore[literal-required]
    redis_given = [name for name in REDIS_FIELDS if name in given]
    if redis_given:
        _warn_redis(redis_given, database)


def _warn_redis(fields: list[str], database: str) -> None:
    logger.warning(
        "taskflow ignores Config(%s): it keeps schedules and runs in its SQL database, "
        "not Redis. This manager uses %s; point it elsewhere with "
        "Config(database_url=...), TaskManager(database_url=...) or the "
        "TASKFLOW_DATABASE_URL environment variable (SQLite or PostgreSQL).",
        ", ".join(f"{name}=..." for name in fields),
        database,
    )


def config_of(settings: Settings, given: Config | None = None) -> Config:
    """``given`` (or a default Config) with the mapped fields set to the values the
    manager really uses (for ``task_manager.config`` and ``GET /config``)."""
    return (given or Config()).model_copy(
        update={
            "concurrent_tasks": settings.max_concurrent_tasks,
            "poll_interval": settings.poll_interval,
            "running_heartbeat_interval": settings.heartbeat_interval,
            "statistics_history_runs": settings.statistics_history_runs,
            "allow_parallel": settings.allow_parallel,
            "retry_backoff": settings.retry["delay"],
            "retry_backoff_multiplier": settings.retry["backoff"],
            "retry_backoff_max": settings.retry["max_delay"],
        }
    )


async def health(runtime: Runtime) -> HealthResponse:
    """What ``GET /health`` returns: status, database reachability, this instance's id
    and start time (read from its row, so the read is the connectivity check)."""
    connected, started_at = False, None
    if runtime.started:
        try:
            instances = await runtime.db.list_instances()
        except DatabaseError:
            instances = None
        connected = instances is not None
        for instance in instances or []:
            if instance.id == runtime.instance_id:
                started_at = instance.started_at.isoformat()
    return HealthResponse(
        status="healthy" if connected else "unhealthy",
        redis_connected=connected,
        database_connected=connected,
        worker_id=runtime.instance_id if runtime.started else None,
        worker_started_at=started_at,
    )
