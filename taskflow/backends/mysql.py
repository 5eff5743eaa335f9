"""fastapi-taskflow's ``fastapi_taskflow.backends.mysql`` import path: :class:`MySQLBackend`.

taskflow does not store tasks in MySQL or MariaDB; the class exists so that imports and
construction keep working, and ``TaskManager(snapshot_backend=MySQLBackend(...))`` says
what to use.
"""

from __future__ import annotations

from taskflow.backends._refused import RefusedBackend

__all__ = ["MySQLBackend"]


class MySQLBackend(RefusedBackend):
    """Accepted by construction, refused by ``TaskManager``.

    taskflow runs on SQLite and PostgreSQL only (its claim query relies on PostgreSQL's
    ``SKIP LOCKED`` and ``LISTEN/NOTIFY``, and its migrations are tested on those two).
    Passing this backend to ``TaskManager`` raises
    :class:`~taskflow.errors.ConfigurationError` saying so; its other methods raise the
    same error.
    """

    why = (
        "taskflow does not store tasks in MySQL or MariaDB: it supports SQLite and "
        "PostgreSQL, and PostgreSQL is what shares state between instances and hosts"
    )

    def __init__(self, url: str, *, max_workers: int = 4) -> None:
        """Keep the arguments (nothing connects).

        Args:
            url: the MySQL URL, kept as :attr:`url`.
            max_workers: kept and unused.
        """
        self.url = url
        self.max_workers = max_workers
