"""fastapi-task-manager's ``TaskManager`` surface on taskflow's TaskManager: ``config``,
``is_running``, ``is_healthy()``, ``health_check()``, ``append_to_app_lifecycle()``,
``start()`` and ``stop()``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from taskflow._compat.config import MANAGER_FIELDS, REDIS_FIELDS, RETRY_FIELDS, Config
from taskflow.errors import DatabaseError
from taskflow.schema.health import HealthResponse

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow")


class CompatAPI:
    """Methods of fastapi-task-manager's TaskManager (a mixin: ``self`` is the
    TaskManager)."""

    def _setup_compat(self: TaskManager, config: Config | None, app: FastAPI | None) -> None:
        """Apply ``TaskManager(config=..., app=...)`` (called at the end of ``__init__``)."""
        self.statistics_history_runs = 500
        self.allow_parallel = True
        self._compat_config = config
        if config is not None:
            apply_config(self, config)
        if app is not None:
            self.init_app(app)

    @property
    def config(self: TaskManager) -> Config:
        """The :class:`~taskflow.Config` given to the constructor (or a default one), its
        mapped fields showing the values this manager uses."""
        return config_of(self, self._compat_config)

    @property
    def is_running(self: TaskManager) -> bool:
        """True while the manager is started (no database round trip)."""
        return self.started

    async def is_healthy(self: TaskManager) -> bool:
        """True when the manager is started and its database answers."""
        return (await self.health_check()).status == "healthy"

    async def health_check(self: TaskManager) -> HealthResponse:
        """What ``GET /health`` returns: status, database reachability, this instance's
        id and start time (read from its row, so the read is the connectivity check)."""
        connected, started_at = False, None
        if self.started:
            try:
                instances = await self.db.list_instances()
            except DatabaseError:
                instances = None
            connected = instances is not None
            for row in instances or []:
                if row["id"] == self.instance_id:
                    started_at = row["started_at"].isoformat()
        return HealthResponse(
            status="healthy" if connected else "unhealthy",
            redis_connected=connected,
            database_connected=connected,
            worker_id=self.instance_id if self.started else None,
            worker_started_at=started_at,
        )

    def append_to_app_lifecycle(self: TaskManager, app: FastAPI) -> None:
        """Start and stop with ``app``'s lifespan (same as :meth:`init_app`)."""
        self.init_app(app)

    async def start(self: TaskManager) -> None:
        """Start the manager (same as :meth:`startup`)."""
        await self.startup()

    async def stop(self: TaskManager) -> None:
        """Stop the manager (same as :meth:`shutdown`)."""
        await self.shutdown()


def apply_config(manager: TaskManager, config: Config) -> None:
    """Set the manager's settings from the fields given in ``config``; log once when
    Redis fields are given."""
    given = config.model_fields_set
    for field_name, attribute in MANAGER_FIELDS.items():
        if field_name in given:
            setattr(manager, attribute, getattr(config, field_name))
    for field_name, key in RETRY_FIELDS.items():
        if field_name in given:
            manager.defaults[key] = getattr(config, field_name)
    redis_given = [name for name in REDIS_FIELDS if name in given]
    if redis_given:
        _warn_redis(redis_given, manager.database_url)


def _warn_redis(fields: list[str], database: str) -> None:
    logger.warning(
        "taskflow ignores Config(%s): it keeps schedules and runs in its SQL database, "
        "not Redis. This manager uses %s; point it elsewhere with "
        "Config(database_url=...), TaskManager(database_url=...) or the "
        "TASKFLOW_DATABASE_URL environment variable (SQLite or PostgreSQL).",
        ", ".join(f"{name}=..." for name in fields),
        database,
    )


def config_of(manager: TaskManager, given: Config | None = None) -> Config:
    """``given`` (or a default Config) with the mapped fields set to the values the
    manager really uses (for ``task_manager.config`` and ``GET /config``)."""
    return (given or Config()).model_copy(
        update={
            "concurrent_tasks": manager.max_concurrent_tasks,
            "poll_interval": manager.poll_interval,
            "running_heartbeat_interval": manager.heartbeat_interval,
            "statistics_history_runs": manager.statistics_history_runs,
            "allow_parallel": manager.allow_parallel,
            "retry_backoff": manager.defaults["delay"],
            "retry_backoff_multiplier": manager.defaults["backoff"],
            "retry_backoff_max": manager.defaults.get("max_delay"),
        }
    )
