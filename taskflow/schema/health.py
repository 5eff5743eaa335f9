"""``GET /health`` and ``GET /config`` of the management router."""

from __future__ import annotations

from pydantic import BaseModel


class HealthResponse(BaseModel):
    """The manager's health.

    ``status`` is ``"healthy"`` when the manager runs and its database answers.
    ``redis_connected`` keeps fastapi-task-manager's name and means the same thing for
    taskflow's store: the database answered (``database_connected`` says it plainly).
    ``worker_id`` is this process's instance id; there is no leader, so ``is_leader``
    is None.
    """

    status: str
    redis_connected: bool
    worker_id: str | None = None
    worker_started_at: str | None = None
    is_leader: bool | None = None
    database_connected: bool = False


class ConfigResponse(BaseModel):
    """The :class:`~taskflow.Config` in effect (no secrets: no host, password or URL)."""

    redis_key_prefix: str
    concurrent_tasks: int | None
    statistics_history_runs: int
    statistics_redis_expiration: int
    allow_parallel: bool
    poll_interval: float
    worker_service_name: str
    stream_block_ms: int
    leader_heartbeat_interval: float
    leader_retry_interval: float
    reconciliation_interval: int
    retry_backoff: float
    retry_backoff_max: float | None
    retry_backoff_multiplier: float
    running_heartbeat_interval: float
