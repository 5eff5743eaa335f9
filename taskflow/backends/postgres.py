"""fastapi-taskflow's ``fastapi_taskflow.backends.postgres`` import path:
:class:`PostgresBackend`."""

from __future__ import annotations

import shlex
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from taskflow._store.engine import mask
from taskflow.backends._database import DatabaseBackend
from taskflow.errors import ConfigurationError

__all__ = ["PostgresBackend", "asyncpg_url"]

# libpq query parameters and the asyncpg ``connect()`` argument each becomes.
_LIBPQ_PARAMETERS = {"sslmode": "ssl", "connect_timeout": "timeout"}
# keyword=value DSN keys and the URL part each fills.
_DSN_KEYS = {
    "user": "username",
    "password": "password",
    "host": "host",
    "port": "port",
    "dbname": "database",
}


class PostgresBackend(DatabaseBackend):
    """A PostgreSQL database as taskflow's database.

    ``TaskManager(snapshot_backend=PostgresBackend("postgresql://user:pass@host/db"))``
    is the same as ``TaskManager(database_url=...)``: every instance pointed at it
    shares tasks, schedules, locks and idempotency keys. The libpq connection string is
    turned into an asyncpg URL (:func:`asyncpg_url`); nothing connects until the
    manager starts.

    Attributes:
        url: the ``postgresql+asyncpg://`` URL, or None when only a ``pool`` was given.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: object = None,
        min_conn: int = 1,
        max_conn: int = 5,
        max_workers: int = 4,
    ) -> None:
        """Name the database.

        Args:
            url: a libpq connection string: ``postgresql://user:pass@host:5432/db``
                (``?sslmode=`` and ``?connect_timeout=`` are understood) or
                ``host=... dbname=... user=...``.
            pool: a psycopg2 pool. Accepted so the call does not fail, but taskflow
                connects through asyncpg and cannot borrow it; without ``url`` the
                manager refuses the backend (ConfigurationError) and asks for the URL.
            min_conn, max_conn, max_workers: accepted for compatibility and unused;
                size taskflow's connection pool with ``TaskManager(pool_size=...)``.

        Raises:
            ConfigurationError: neither ``url`` nor ``pool`` is given, or ``url`` is not a
                PostgreSQL connection string (a ``ValueError``, as fastapi-taskflow raised).
        """
        if url is None and pool is None:
            raise ConfigurationError("Either url or pool must be provided", field="url")
        self.pool = pool
        self.min_conn, self.max_conn, self.max_workers = min_conn, max_conn, max_workers
        self.url = None if url is None else asyncpg_url(url)

    def __repr__(self) -> str:
        return f"PostgresBackend({mask(self.url) if self.url else 'pool=...'})"

    def taskflow_database_url(self) -> str:
        """The asyncpg URL ``TaskManager(snapshot_backend=self)`` uses.

        Raises:
            ConfigurationError: the backend was built from a ``pool`` only.
        """
        if self.url is None:
            raise ConfigurationError(
                "PostgresBackend(pool=...) cannot be used by taskflow: it connects through "
                "asyncpg with its own pool, not psycopg2's; pass the connection string: "
                "PostgresBackend('postgresql://user:pass@host/db') "
                "(size the pool with TaskManager(pool_size=...))",
                field="snapshot_backend",
            )
        return self.url


def asyncpg_url(dsn: str) -> str:
    """The ``postgresql+asyncpg://`` URL for a libpq connection string.

    ``postgresql://`` and ``postgres://`` URLs (with any driver, such as ``+psycopg2``)
    get the asyncpg driver, and the libpq parameters ``sslmode`` and ``connect_timeout``
    become asyncpg's ``ssl`` and ``timeout``. A keyword/value string
    (``host=localhost dbname=app user=me``) is turned into a URL.

    Raises:
        ConfigurationError: ``dsn`` is not a PostgreSQL connection string.
    """
    text = dsn.strip() if isinstance(dsn, str) else ""
    url = _url_from_keywords(text) if "://" not in text and "=" in text else _parse(text, dsn)
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"PostgresBackend needs a PostgreSQL connection string, got {mask(url)}", field="url"
        )
    query = {_LIBPQ_PARAMETERS.get(key, key): value for key, value in url.query.items()}
    url = url.set(drivername="postgresql+asyncpg", query=query)
    return url.render_as_string(hide_password=False)


def _parse(text: str, original: object) -> URL:
    try:
        return make_url(text)
    except sa_exc.ArgumentError as exc:
        raise ConfigurationError(
            f"PostgresBackend needs a connection string such as "
            f"postgresql://user:pass@host/db, got {original!r}",
            field="url",
        ) from exc


def _url_from_keywords(text: str) -> URL:
    """A URL from a libpq ``key=value key=value`` string."""
    parts: dict[str, Any] = {}  # keyword arguments of URL.create
    query: dict[str, str] = {}
    for item in shlex.split(text):
        key, _, value = item.partition("=")
        if key in _DSN_KEYS:
            parts[_DSN_KEYS[key]] = int(value) if key == "port" and value.isdigit() else value
        else:
            query[key] = value
    return URL.create("postgresql", query=query, **parts)
