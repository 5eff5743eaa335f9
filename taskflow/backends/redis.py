"""fastapi-taskflow's ``fastapi_taskflow.backends.redis`` import path: :class:`RedisBackend`.

taskflow does not store tasks in Redis; the class exists so that imports and construction
keep working, and ``TaskManager(snapshot_backend=RedisBackend(...))`` says what to use.
"""

from __future__ import annotations

from taskflow.backends._refused import RefusedBackend

__all__ = ["RedisBackend"]


class RedisBackend(RefusedBackend):
    """Accepted by construction, refused by ``TaskManager``.

    fastapi-taskflow used Redis to share task history and schedule locks between
    instances. taskflow shares all of it (tasks, schedules, locks, idempotency keys)
    through one SQL database: point every instance at the same PostgreSQL database.
    Passing this backend to ``TaskManager`` raises
    :class:`~taskflow.errors.ConfigurationError` saying so; its other methods raise the
    same error.
    """

    why = (
        "taskflow does not store tasks in Redis: tasks, schedules, locks and idempotency "
        "keys live in one SQL database, and PostgreSQL is what shares them between "
        "instances and hosts"
    )

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "fbtm:snapshots",
        ttl: int | None = None,
        **client_kwargs: object,
    ) -> None:
        """Keep the arguments (nothing connects).

        Args:
            url: the Redis URL, kept as :attr:`url`.
            prefix, ttl, client_kwargs: kept and unused.
        """
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.client_kwargs = client_kwargs
