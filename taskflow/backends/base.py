"""fastapi-taskflow's ``fastapi_taskflow.backends.base`` import path: :class:`SnapshotBackend`.

fastapi-taskflow kept tasks in memory and copied them to a "snapshot backend" from time to
time. taskflow writes every task to its SQL database as it happens, so there is nothing to
snapshot: the backends in :mod:`taskflow.backends` only say *which* database to use.

A backend tells :class:`~taskflow.TaskManager` its database through
:meth:`SnapshotBackend.taskflow_database_url`. The built-in ``SqliteBackend`` and
``PostgresBackend`` return a URL; ``RedisBackend``, ``MySQLBackend`` and a user's own
subclass raise :class:`~taskflow.errors.ConfigurationError` saying why and what to use.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import TYPE_CHECKING

from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow.records import TaskRecord

__all__ = ["SnapshotBackend", "USE_A_DATABASE"]

#: How to configure taskflow's storage, quoted by every refusal.
USE_A_DATABASE = (
    "pass a SQLite or PostgreSQL database instead: TaskManager(snapshot_db='tasks.db') "
    "for one host, or TaskManager(database_url='postgresql://user:pass@host/db') for "
    "state shared by several instances or hosts"
)


class SnapshotBackend(abc.ABC):
    """The abstract class fastapi-taskflow's backends (and users' own) derive from.

    The six abstract methods are fastapi-taskflow's contract, kept so that a subclass
    written for it still defines and instantiates. taskflow never calls them: passing a
    custom subclass to ``TaskManager(snapshot_backend=...)`` raises
    :class:`~taskflow.errors.ConfigurationError` (see :meth:`taskflow_database_url`).
    """

    supports_scheduled_once: bool = False

    def taskflow_database_url(self) -> str:
        """The database URL ``TaskManager(snapshot_backend=self)`` uses.

        Raises:
            ConfigurationError: always, for a custom backend: taskflow stores every task
                in its own SQL tables as it happens, so a backend's ``save()`` and
                ``load()`` would never be called and its storage would stay empty.
        """
        raise ConfigurationError(
            f"snapshot_backend={type(self).__name__}() is a custom SnapshotBackend, which "
            "taskflow cannot use: it writes every task to its own SQL tables as it "
            f"happens and never calls save()/load(); {USE_A_DATABASE}",
            field="snapshot_backend",
        )

    @abc.abstractmethod
    async def save(self, records: list[TaskRecord]) -> int:
        """Persist finished task records; returns how many were written."""

    @abc.abstractmethod
    async def load(self) -> list[TaskRecord]:
        """Every persisted finished task record."""

    @abc.abstractmethod
    async def save_pending(self, records: list[TaskRecord]) -> int:
        """Persist unfinished tasks at shutdown; returns how many were written."""

    @abc.abstractmethod
    async def load_pending(self) -> list[TaskRecord]:
        """The tasks saved by :meth:`save_pending`."""

    @abc.abstractmethod
    async def clear_pending(self) -> None:
        """Forget the tasks saved by :meth:`save_pending`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release held resources."""

    async def claim_pending(self, task_id: str) -> bool:
        """fastapi-taskflow's default: always True."""
        return True

    async def check_idempotency_key(self, key: str) -> str | None:
        """fastapi-taskflow's default: always None."""
        return None

    async def record_idempotency_key(self, key: str, task_id: str) -> None:
        """fastapi-taskflow's default: does nothing."""
        return None

    async def completed_ids(self, task_ids: list[str]) -> set[str]:
        """The ids among ``task_ids`` that :meth:`load` reports as succeeded."""
        wanted = set(task_ids)
        records = await self.load()
        return {r.task_id for r in records if r.task_id in wanted and r.status == "success"}

    async def delete_before(self, cutoff: datetime) -> int:
        """fastapi-taskflow's default: deletes nothing, returns 0."""
        return 0

    async def acquire_schedule_lock(self, key: str, ttl: int) -> bool:
        """fastapi-taskflow's default: always True."""
        return True
