"""The raw-driver limit: the row writes of durable no-op tasks, done by the database
driver alone.

One durable no-op task makes taskflow write one row three times (group commit's
insert, start and finish: ``taskflow/_store/sqlite_batch.py`` on a SQLite file,
``task_sql.py`` elsewhere; an attempt row is written only when an attempt is followed by
another, so a task that succeeds at once has none):

1. insert the task row, ``pending``;
2. update it to ``running`` (owner, ``started_at``, ``attempts + 1``);
3. update it to ``success`` (result, ``finished_at``).

This module makes exactly these row writes, on taskflow's own schema, and nothing else:
no HTTP, no event loop between the steps, no futures, no SQLAlchemy. The statements are
fixed texts, prepared once and reused by the driver. SQLite uses the stdlib ``sqlite3``
in one thread (WAL, ``synchronous=FULL`` and foreign keys on, as taskflow opens it),
``executemany`` with plain tuples, ``batch`` tasks per call. PostgreSQL uses ``asyncpg``
on one connection, one statement per kind of write over arrays of the batch's values
(``unnest``; see ``INSERT_PG`` for why not ``executemany``).

Transactions are shaped as taskflow's group commit shapes them under the throughput
scenario's load: one transaction runs whatever is waiting, in the order insert, start,
finish, and a task's start waits for its insert's commit and its finish for its start's.
So transaction *k* inserts batch *k*, starts batch *k − 1* and finishes batch *k − 2*:
every transaction commits three steps of three batches, and each task meets three
commits. (Measured with an instrumented copy of the app under that load: about 200 tasks
of each kind per transaction, and nearly every transaction held all three kinds.)

What is left is the database's own work per row and one durable commit per batch,
which any runner storing the same rows with the same durability and batch size must
pay too: the tasks/s here is the ceiling of such a runner, and the CPU per task its
floor. The CPU counted is this process's (``time.process_time``): on SQLite it includes
the database engine, which runs in the process; on PostgreSQL it does not, as it does
not for taskflow's server either.

One simplification, in the limit's favour: one timestamp serves a whole transaction
(taskflow's start batch also stamps all its tasks with one time).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import databases

OWNER = uuid.uuid4().hex  # the instance id taskflow would record as owner
FUNC_NAME, FUNC_PATH = "noop", "bench.app:noop"
PG_SCHEMA = "taskflow_raw_limit"  # beside taskflow's own tables in the bench database
PG_CONNECT = {"server_settings": {"search_path": PG_SCHEMA}}

# The columns of a new task that vary per task or per function; the rest are the
# constants every new task starts with (see NewTask.columns) or NULL.
INSERT_TASK = """
INSERT INTO taskflow_tasks (
    id, func_name, func_path, status, payload, encrypted, attempts, max_retries, priority,
    queue, tags, source, owner, requeue_on_interrupt, cancel_requested, created_at,
    next_attempt_at)
VALUES (?, ?, ?, 'pending', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
START_TASK = """
UPDATE taskflow_tasks
SET status = 'running', owner = ?, started_at = ?, finished_at = NULL, attempts = attempts + 1
WHERE id = ? AND status = 'pending'
"""
FINISH_TASK = """
UPDATE taskflow_tasks
SET status = 'success', result = ?, error = NULL, traceback = NULL, finished_at = ?,
    next_attempt_at = ?
WHERE id = ? AND status = 'running' AND owner = ?
"""
# Task rows that reached success: one per stored task.
COUNT_DONE = "SELECT count(*) FROM taskflow_tasks WHERE status = 'success'"


@dataclass(frozen=True)
class Figures:
    """One round of the limit: ``tasks`` tasks, ``batch`` per transaction."""

    batch: int
    tasks: int
    seconds: float
    cpu_seconds: float

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_us_per_task(self) -> float:
        return self.cpu_seconds * 1e6 / self.tasks


def payload() -> str:
    """The stored arguments of ``noop(-1)``, as the bench app enqueues it."""
    from taskflow._payloads.payloads import Payloads

    return Payloads(None).encode_call((-1,), {})


def pipeline(ids: Sequence[str], batch: int) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """Per transaction, the tasks to insert, to start and to finish: batch *k* is
    inserted in transaction *k*, started in *k + 1* and finished in *k + 2*."""
    chunks = [list(ids[i : i + batch]) for i in range(0, len(ids), batch)]
    for step in range(len(chunks) + 2):
        yield (
            chunks[step] if step < len(chunks) else [],
            chunks[step - 1] if 0 < step <= len(chunks) else [],
            chunks[step - 2] if step > 1 else [],
        )


def new_ids(tasks: int) -> list[str]:
    """Task ids as taskflow makes them (made before the clock starts)."""
    return [str(uuid.uuid4()) for _ in range(tasks)]


def clock() -> tuple[float, float]:
    """Wall time and this process's CPU time, now."""
    return time.perf_counter(), time.process_time()


def figures(batch: int, tasks: int, began: tuple[float, float]) -> Figures:
    """The :class:`Figures` of ``tasks`` tasks stored since ``began`` (see :func:`clock`)."""
    wall, cpu = clock()
    return Figures(batch, tasks, wall - began[0], cpu - began[1])


class SQLiteLimit:
    """The limit on a SQLite file created by taskflow's migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.payload = payload()

    def prepare(self) -> None:
        """A fresh file with taskflow's schema."""
        databases.migrate_sqlite(databases.fresh_sqlite(self.path))

    def run(self, tasks: int, batch: int) -> Figures:
        """Store ``tasks`` no-op tasks from pending to success, ``batch`` per transaction."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            before = conn.execute(COUNT_DONE).fetchone()[0]
            ids = new_ids(tasks)
            began = clock()
            for inserts, starts, finishes in pipeline(ids, batch):
                self._transaction(conn, inserts, starts, finishes)
            result = figures(batch, tasks, began)
            done = conn.execute(COUNT_DONE).fetchone()[0] - before
        finally:
            conn.close()
        _check(done, tasks)
        return result

    def _transaction(
        self, conn: sqlite3.Connection, inserts: list[str], starts: list[str], finishes: list[str]
    ) -> None:
        now = datetime.now(UTC).strftime(databases.SQLITE_TIME)
        conn.execute("BEGIN IMMEDIATE")
        if inserts:
            conn.executemany(
                INSERT_TASK,
                [
                    (i, FUNC_NAME, FUNC_PATH, self.payload, 0, 0, 0, "default", "{}",
                     "manual", OWNER, 0, 0, now, now)
                    for i in inserts
                ],
            )  # fmt: skip
        if starts:
            conn.executemany(START_TASK, [(OWNER, now, i) for i in starts])
        if finishes:
            conn.executemany(FINISH_TASK, [(None, now, now, i, OWNER) for i in finishes])
        conn.execute("COMMIT")


class PostgresLimit:
    """The limit on PostgreSQL, in a schema of its own created from taskflow's table
    definitions (the metadata its migrations are checked against)."""

    def __init__(self, url: str) -> None:
        self.params = databases.pg_params(url)
        self.payload = payload()

    def prepare(self) -> None:
        """A fresh ``taskflow_raw_limit`` schema with taskflow's tables."""
        asyncio.run(self._prepare())

    async def _prepare(self) -> None:
        import asyncpg
        from sqlalchemy.engine import URL
        from sqlalchemy.ext.asyncio import create_async_engine

        from taskflow._store.schema import metadata

        conn = await asyncpg.connect(**self.params, timeout=10)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
            await conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
        finally:
            await conn.close()
        params = self.params
        url = URL.create(
            "postgresql+asyncpg",
            username=params["user"],
            password=params["password"],
            host=params["host"],
            port=params["port"],
            database=params["database"],
        )
        engine = create_async_engine(url, connect_args=PG_CONNECT)
        try:
            async with engine.begin() as sa_conn:
                await sa_conn.run_sync(metadata.create_all)
        finally:
            await engine.dispose()

    def run(self, tasks: int, batch: int) -> Figures:
        """Store ``tasks`` no-op tasks from pending to success, ``batch`` per transaction."""
        return asyncio.run(self._run(tasks, batch))

    async def _run(self, tasks: int, batch: int) -> Figures:
        import asyncpg

        conn = await asyncpg.connect(**self.params, **PG_CONNECT, timeout=10)
        try:
            before = await conn.fetchval(COUNT_DONE)
            ids = new_ids(tasks)
            began = clock()
            for inserts, starts, finishes in pipeline(ids, batch):
                await self._transaction(conn, inserts, starts, finishes)
            result = figures(batch, tasks, began)
            done = await conn.fetchval(COUNT_DONE) - before
        finally:
            await conn.close()
        _check(done, tasks)
        return result

    async def _transaction(
        self, conn: Any, inserts: list[str], starts: list[str], finishes: list[str]
    ) -> None:
        now = datetime.now(UTC)
        async with conn.transaction():
            if inserts:
                n = len(inserts)
                await conn.execute(
                    INSERT_PG, inserts, [FUNC_NAME] * n, [FUNC_PATH] * n, [self.payload] * n,
                    [False] * n, [0] * n, [0] * n, ["default"] * n, ["{}"] * n, ["manual"] * n,
                    [OWNER] * n, [False] * n, [now] * n,
                )  # fmt: skip
            if starts:
                await conn.execute(START_PG, OWNER, now, starts)
            if finishes:
                n = len(finishes)
                await conn.execute(FINISH_PG, finishes, [None] * n, [now] * n, OWNER)


# PostgreSQL: the same writes, one statement per kind and batch over arrays (``unnest``).
# ``executemany`` would execute every row as a statement of its own: measured here it
# stays near 3,600 tasks/s at any batch size, a cost per row that taskflow's multi-row
# statements do not pay, so it would be no limit.
INSERT_PG = """
INSERT INTO taskflow_tasks (
    id, func_name, func_path, status, payload, encrypted, attempts, max_retries, priority,
    queue, tags, source, owner, requeue_on_interrupt, cancel_requested, created_at,
    next_attempt_at)
SELECT id, func_name, func_path, 'pending', payload, encrypted, 0, max_retries, priority,
    queue, tags::json, source, owner, requeue, false, created_at, created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int[],
    $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bool[],
    $13::timestamptz[])
    AS t(id, func_name, func_path, payload, encrypted, max_retries, priority, queue, tags,
         source, owner, requeue, created_at)
"""
START_PG = """
UPDATE taskflow_tasks
SET status = 'running', owner = $1, started_at = $2, finished_at = NULL,
    attempts = attempts + 1
WHERE id = ANY($3::text[]) AND status = 'pending'
"""
FINISH_PG = """
UPDATE taskflow_tasks AS t
SET status = 'success', result = u.result, error = NULL, traceback = NULL,
    finished_at = u.finished_at, next_attempt_at = u.finished_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(id, result, finished_at)
WHERE t.id = u.id AND t.status = 'running' AND t.owner = $4
"""


def _check(done: int, tasks: int) -> None:
    """Every task row must have reached ``success``: a write that matched no row would
    make the limit look faster than it is."""
    if done != tasks:
        raise RuntimeError(
            f"raw-driver limit: {done} success rows for {tasks} tasks (expected {tasks})"
        )
