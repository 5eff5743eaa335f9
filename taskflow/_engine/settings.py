"""The manager's tunable settings, shared by the parts that read them.

fastapi-task-manager's ``Config`` and ``taskflow worker``'s options change them after
the manager is built, so parts read them when they act rather than copy them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from taskflow._engine.retry import validate as validate_retry
from taskflow._store.engine import is_memory_sqlite, normalize_url
from taskflow.errors import ConfigurationError

LEASE_MARGIN_BEATS = 2  # heartbeat intervals between self-fencing and being taken over


class RetryDefaults(TypedDict):
    """Retry settings of ``@task`` when it gives none (and of unregistered functions)."""

    retries: int
    delay: float
    backoff: float
    max_delay: float | None


@dataclass(slots=True)
class Settings:
    """See :class:`~taskflow.TaskManager` for each setting's meaning."""

    retry: RetryDefaults = field(
        default_factory=lambda: RetryDefaults(retries=0, delay=0.0, backoff=1.0, max_delay=None)
    )
    max_concurrent_tasks: int | None = None
    shutdown_timeout: float = 30.0
    poll_interval: float = 1.0
    heartbeat_interval: float = 5.0
    instance_timeout: float = 30.0
    retention_days: float | None = None
    retention_interval: float = 6 * 3600
    endpoint_error: str = "run"
    statistics_history_runs: int = 500
    allow_parallel: bool = True

    def __post_init__(self) -> None:
        """Refuse settings that make no sense (later changes are the caller's care).

        Raises:
            ConfigurationError: a size, ``endpoint_error`` or ``retention_days`` is invalid,
                or ``instance_timeout`` is not more than 2 x ``heartbeat_interval``.
            ValueError: a retry default is invalid.
        """
        check_positive(max_concurrent_tasks=self.max_concurrent_tasks)
        validate_retry(**self.retry, jitter=0.0)
        if self.endpoint_error not in ("run", "cancel"):
            raise ConfigurationError(
                f"endpoint_error must be 'run' or 'cancel', got {self.endpoint_error!r}"
            )
        if self.retention_days is not None and self.retention_days <= 0:
            raise ConfigurationError(f"retention_days must be > 0, got {self.retention_days}")
        self.check_lease()

    def lease(self) -> float:
        """Seconds after the last heartbeat that went through (counted from when it was
        sent, on this machine's monotonic clock) that an instance keeps its tasks:
        ``instance_timeout`` minus two ``heartbeat_interval``. Past it, an instance that
        cannot reach the database stops its tasks, before another may take them over."""
        return self.instance_timeout - LEASE_MARGIN_BEATS * self.heartbeat_interval

    def check_lease(self) -> None:
        """Raise ConfigurationError unless the lease is positive."""
        if self.heartbeat_interval <= 0 or self.lease() <= 0:
            raise ConfigurationError(
                f"instance_timeout ({self.instance_timeout:g} s) must be more than "
                f"{LEASE_MARGIN_BEATS} x heartbeat_interval ({self.heartbeat_interval:g} s, "
                "which must be > 0): an instance cut off from the database stops its tasks "
                "at instance_timeout - 2 x heartbeat_interval, before another takes them over"
            )


def check_positive(**values: int | None) -> None:
    """Raise ConfigurationError for a size given as 0 or less (None is "no limit")."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ConfigurationError(f"{name} must be >= 1 or None, got {value}")


def choose_url(
    database_url: str | None, snapshot_db: str | None, snapshot_backend: Any
) -> str | None:
    """The configured URL, or None for a private temporary database."""
    url = database_url or _backend_url(snapshot_backend)
    if url is not None:
        _refuse_plain_path(url, "database_url" if database_url else "snapshot_backend")
    if url is None and snapshot_db is not None:
        url = f"sqlite+aiosqlite:///{snapshot_db}"
    if url is None:
        return None
    # An in-memory database cannot be shared by the connections taskflow uses, so it
    # becomes a private temporary file, deleted at shutdown.
    return None if is_memory_sqlite(normalize_url(url)) else url


def _refuse_plain_path(url: Any, parameter: str) -> None:
    """Raise a helpful ConfigurationError for a file name given where a URL belongs."""
    if isinstance(url, str) and "://" not in url and ":" not in url.split("/", 1)[0]:
        raise ConfigurationError(
            f"{parameter}={url!r} is a file name, not a database URL: for a SQLite file "
            f"pass snapshot_db={url!r} or {parameter}='sqlite:///{url}' "
            "(PostgreSQL: postgresql://user:password@host/dbname)",
            field=parameter,
        )


def _backend_url(backend: Any) -> str | None:
    if backend is None:
        return None
    if isinstance(backend, str):
        return backend
    resolve = getattr(backend, "taskflow_database_url", None)
    if callable(resolve):  # taskflow.backends: a URL, or a ConfigurationError saying why not
        return str(resolve())
    for attribute in ("url", "database_url", "dsn"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return value
    raise ConfigurationError(
        f"snapshot_backend {type(backend).__name__} is not supported: pass a database URL "
        "(SQLite or PostgreSQL) as database_url="
    )
