"""``Config``: fastapi-task-manager's settings object, mapped onto a TaskManager.

``TaskManager(app=app, config=Config(redis_host="localhost"))`` works unchanged. Fields
with a meaning in taskflow set the matching TaskManager setting when they are given;
fields left out keep taskflow's defaults. The Redis fields are accepted and ignored:
taskflow keeps schedules and runs in its SQL database. The mapping itself is applied by
the TaskManager (:mod:`taskflow._compat.manager`); this module only describes it.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from taskflow._store.migrate import DEFAULT_URL

REDIS_FIELDS = ("redis_host", "redis_port", "redis_password", "redis_db")
# Config field -> TaskManager attribute it sets (when the field is given).
MANAGER_FIELDS = {
    "concurrent_tasks": "max_concurrent_tasks",
    "poll_interval": "poll_interval",
    "running_heartbeat_interval": "heartbeat_interval",
    "statistics_history_runs": "statistics_history_runs",
    "allow_parallel": "allow_parallel",
}
# Config field -> default retry setting of the manager's tasks.
RETRY_FIELDS = {
    "retry_backoff": "delay",
    "retry_backoff_multiplier": "backoff",
    "retry_backoff_max": "max_delay",
}


class Config(BaseModel):
    """fastapi-task-manager's configuration, accepted by ``TaskManager(config=...)``.

    Mapped when given: ``concurrent_tasks`` (``max_concurrent_tasks``),
    ``poll_interval``, ``running_heartbeat_interval`` (``heartbeat_interval``),
    ``allow_parallel`` (default ``overlap`` of group schedules), ``retry_backoff`` /
    ``retry_backoff_multiplier`` / ``retry_backoff_max`` (default ``delay`` / ``backoff``
    / ``max_delay`` of retries), ``statistics_history_runs`` (runs shown by the
    statistics route). ``database_url`` (taskflow's addition) chooses the database.

    Accepted without effect (shown by ``GET /config``): ``redis_key_prefix``,
    ``statistics_redis_expiration``, ``worker_service_name``, ``stream_block_ms``,
    ``leader_heartbeat_interval``, ``leader_retry_interval`` (there is no leader),
    ``reconciliation_interval``, and the Redis connection fields, which log one warning.
    """

    redis_key_prefix: str = "fastapi_task_manager"
    concurrent_tasks: int = Field(2, ge=1)
    statistics_redis_expiration: int = 432_000
    statistics_history_runs: int = Field(500, ge=0)
    allow_parallel: bool = True
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: str | None = None
    redis_db: int = 0
    poll_interval: float = Field(0.1, gt=0)
    worker_service_name: str = "fastapi-task-manager"
    stream_block_ms: int = 1000
    leader_heartbeat_interval: float = 3.0
    leader_retry_interval: float = 5.0
    reconciliation_interval: int = 30
    retry_backoff: float = Field(1.0, ge=0)
    retry_backoff_max: float = Field(60.0, ge=0)
    retry_backoff_multiplier: float = Field(2.0, ge=1)
    running_heartbeat_interval: float = Field(3.0, gt=0)
    database_url: str | None = None


def config_database_url(config: Config) -> str:
    """The database a ``config=`` TaskManager uses: ``config.database_url``, else
    ``TASKFLOW_DATABASE_URL``, else the SQLite file ``taskflow.db`` in the working
    directory (so dynamic schedules survive restarts, as they did in Redis)."""
    return config.database_url or os.environ.get("TASKFLOW_DATABASE_URL") or DEFAULT_URL


def response_fields(config: Config) -> dict[str, Any]:
    """The ``GET /config`` fields of ``config`` (no Redis credentials, no URL)."""
    hidden = {*REDIS_FIELDS, "database_url"}
    return {key: value for key, value in config.model_dump().items() if key not in hidden}
