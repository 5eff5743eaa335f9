"""Idempotency-key lookups quick enough to block the event loop's own thread.

``add_task`` is synchronous, and with an idempotency key it must answer with the id of
the live task holding that key. In an ``async def`` route it runs on the event loop,
so the lookup blocks the loop. Through the async engine a lookup is about 18 hand-offs
to the driver's thread (checkout, begin, execute, fetch, rollback, checkin), which
costs milliseconds when the machine is busy. On a SQLite file, a private stdlib
``sqlite3`` connection answers the same indexed query in tens of microseconds, and in
WAL mode a read never waits for a writer. Other databases have no such reader: their
lookups go through the sync bridge (``taskflow/_engine/bridge.py``).
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy.engine import URL

from taskflow._store import failures
from taskflow._store.engine import is_sqlite_file, sqlite_busy_timeout
from taskflow._store.hot_sql import LIVE_KEY_PREDICATE
from taskflow.errors import DatabaseError

# The partial unique index's own predicate, spelled literally so that the index is used.
_HOLDER = f"SELECT id FROM taskflow_tasks WHERE idempotency_key = ? AND {LIVE_KEY_PREDICATE}"


class SQLiteKeyReader:
    """A read-only ``sqlite3`` connection to the task database, opened at the first
    lookup and shared by the threads that call it (one at a time)."""

    def __init__(self, url: URL, *, display_url: str) -> None:
        self._url = url
        self._display_url = display_url
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def supports(url: URL) -> bool:
        """True for a SQLite file named by a plain path (see ``is_sqlite_file``)."""
        return is_sqlite_file(url)

    def __call__(self, key: str) -> str | None:
        """The id of the live task holding ``key``, or None.

        Raises:
            DatabaseError: the database cannot be read (the reader is closed, or the
                driver failed), with the same messages as the store's own reads.
        """
        with self._lock:
            try:
                row = self._open().execute(_HOLDER, (key,)).fetchone()
            except sqlite3.Error as exc:
                self._drop()
                raise failures.translate(exc, url=self._url, display_url=self._display_url) from exc
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the connection; later lookups raise."""
        with self._lock:
            self._closed = True
            self._drop()

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise DatabaseError("the task store is closed")
        if self._connection is None:
            connection = sqlite3.connect(
                self._url.database or "",
                timeout=sqlite_busy_timeout(self._url),
                isolation_level=None,  # autocommit: each lookup reads the latest commit
                check_same_thread=False,  # callers take the lock
            )
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
