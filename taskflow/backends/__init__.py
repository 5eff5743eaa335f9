"""fastapi-taskflow's ``fastapi_taskflow.backends`` import path.

In taskflow a backend only names the database: ``SqliteBackend(path)`` and
``PostgresBackend(dsn)`` work as ``TaskManager(snapshot_backend=...)``; ``RedisBackend``,
``MySQLBackend`` and custom :class:`SnapshotBackend` subclasses construct but are refused
by ``TaskManager`` with a :class:`~taskflow.errors.ConfigurationError` saying why.
"""

from taskflow.backends.base import SnapshotBackend
from taskflow.backends.mysql import MySQLBackend
from taskflow.backends.postgres import PostgresBackend
from taskflow.backends.redis import RedisBackend
from taskflow.backends.sqlite import SqliteBackend

__all__ = ["MySQLBackend", "PostgresBackend", "RedisBackend", "SnapshotBackend", "SqliteBackend"]
