"""fastapi-taskflow's ``fastapi_taskflow.backends.sqlite`` import path: :class:`SqliteBackend`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from taskflow.backends._database import DatabaseBackend, record_dict
from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow._payloads.codec import JSONValue

__all__ = ["SqliteBackend"]


class SqliteBackend(DatabaseBackend):
    """A SQLite file as taskflow's database.

    ``TaskManager(snapshot_backend=SqliteBackend("tasks.db"))`` is the same as
    ``TaskManager(snapshot_db="tasks.db")``: tasks, logs and schedules live in that file
    (taskflow's tables, not fastapi-taskflow's ``task_snapshots``; an old file keeps its
    old tables untouched). Nothing is opened until the manager starts.

    Attributes:
        db_path: the file, as given.
        url: ``sqlite+aiosqlite:///<db_path>``.
    """

    def __init__(self, db_path: str = "tasks.db", *, max_workers: int = 4) -> None:
        """Name the SQLite file.

        Args:
            db_path: path of the SQLite file; created (with its tables) when the
                manager starts.
            max_workers: accepted for compatibility and unused: taskflow's database
                access is asynchronous and needs no thread pool.

        Raises:
            ConfigurationError: ``db_path`` is empty or not a string.
        """
        if not isinstance(db_path, str | os.PathLike) or not str(db_path):
            raise ConfigurationError(
                f"SqliteBackend needs the path of a SQLite file, got {db_path!r}", field="db_path"
            )
        self.db_path = str(db_path)
        self.max_workers = max_workers
        self.url = f"sqlite+aiosqlite:///{self.db_path}"

    def __repr__(self) -> str:
        return f"SqliteBackend({self.db_path!r})"

    def query(
        self, status: str | None = None, func_name: str | None = None, limit: int = 100
    ) -> list[dict[str, JSONValue]]:
        """Tasks in the file, newest first, as dicts (blocking; works without a running
        manager and from any thread).

        Each dict has the keys of ``TaskRecord.to_dict()`` except ``logs``:
        ``task_id``, ``func_name``, ``status``, ``args``, ``kwargs``, ``error``,
        ``stacktrace``, ``created_at``, ``start_time``, ``end_time``, ``duration``,
        ``retries_used``, ``queue``, ``source``, ``tags``, ... Unlike fastapi-taskflow,
        unfinished tasks are included (filter with ``status=``), and the arguments of
        encrypted tasks are None.

        Args:
            status: only tasks with this status (``"success"``, ``"failed"``, ...).
            func_name: only tasks of this registered function name.
            limit: at most this many rows.

        Raises:
            DatabaseError: the file cannot be read, or its schema is not taskflow's
                current one (start a ``TaskManager`` on it once to create or upgrade it).
        """
        if not os.path.exists(self.db_path):
            return []  # nothing was ever stored there; do not create the file
        records = self._read_records(status=status, func_name=func_name, limit=limit)
        return [record_dict(record) for record in records]
