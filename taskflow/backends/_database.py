"""What ``SqliteBackend`` and ``PostgresBackend`` share: a database URL for
:class:`~taskflow.TaskManager`, and reads of its task table through taskflow's store."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from taskflow._engine.reader import record_from_row
from taskflow._payloads.payloads import Payloads
from taskflow._store.sql import SQLStore
from taskflow.backends.base import SnapshotBackend
from taskflow.records import TaskRecord

if TYPE_CHECKING:
    from taskflow._payloads.codec import JSONValue

T = TypeVar("T")


class DatabaseBackend(SnapshotBackend):
    """A backend that names a SQL database taskflow uses directly.

    ``TaskManager(snapshot_backend=backend)`` runs on :attr:`url`. The snapshot methods
    of fastapi-taskflow have nothing left to do: ``save()`` and ``save_pending()`` write
    nothing and return 0 (every task is a row from the moment it is added),
    ``load_pending()`` returns ``[]`` and ``clear_pending()`` does nothing (pending tasks
    are rows that any process resumes). ``load()`` reads the finished tasks back.

    Attributes:
        url: the SQLAlchemy URL taskflow connects with (None when it is unknown).
    """

    url: str | None = None

    def taskflow_database_url(self) -> str:
        """The database URL ``TaskManager(snapshot_backend=self)`` uses."""
        assert self.url is not None
        return self.url

    async def save(self, records: list[TaskRecord]) -> int:
        """Write nothing: taskflow stored these tasks when they were added. Returns 0."""
        return 0

    async def load(self) -> list[TaskRecord]:
        """Every finished task in the database (arguments of encrypted tasks are None).

        Raises:
            DatabaseError: the database cannot be read (or its schema is not taskflow's
                current one: start a ``TaskManager`` on it once).
        """
        records = await asyncio.to_thread(
            self._read_records, status=None, func_name=None, limit=None
        )
        return [record for record in records if record.status.is_final]

    async def save_pending(self, records: list[TaskRecord]) -> int:
        """Write nothing: pending tasks are rows already. Returns 0."""
        return 0

    async def load_pending(self) -> list[TaskRecord]:
        """Always ``[]``: pending tasks resume from the task table by themselves."""
        return []

    async def clear_pending(self) -> None:
        """Nothing to clear."""

    async def close(self) -> None:
        """Nothing to release: each read opens and closes its own connection."""

    def _read_records(
        self, *, status: str | None, func_name: str | None, limit: int | None
    ) -> list[TaskRecord]:
        """Newest tasks first, read in one short-lived store (blocking)."""

        async def read(store: SQLStore) -> list[TaskRecord]:
            rows = await store.list_tasks(status=status, func_name=func_name, limit=limit)
            payloads = Payloads(None)
            return [record_from_row(row, payloads, [], []) for row in rows]

        assert self.url is not None
        return run_on_own_loop(self.url, read)


def run_on_own_loop(url: str, operation: Callable[[SQLStore], Awaitable[T]]) -> T:
    """Run ``operation`` on a :class:`SQLStore` for ``url`` in a helper thread with its
    own event loop, and block until it returns.

    Works from any thread, including one running an event loop (which it blocks for one
    round trip, as a sync sqlite3 call would). The schema is checked, never upgraded.

    Raises:
        DatabaseError: the database cannot be reached or its schema is out of date.
    """

    async def run() -> T:
        store = SQLStore(url, pool_size=1)
        await store.open(auto_upgrade=False)
        try:
            return await operation(store)
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taskflow-backend") as pool:
        return pool.submit(lambda: asyncio.run(run())).result()


def record_dict(record: TaskRecord) -> dict[str, JSONValue]:
    """A task as fastapi-taskflow's ``SqliteBackend.query()`` returned it: the keys of
    :meth:`TaskRecord.to_dict` without ``logs`` (query() does not read them)."""
    data = record.to_dict()
    data.pop("logs", None)
    return data
