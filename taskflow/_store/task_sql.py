"""The tasks aggregate: tasks, their attempts, log lines and id aliases.

Frequent small writes (insert, start, finish, log) go through
:class:`~taskflow._store.batch.GroupCommitter`: one transaction commits the writes that
arrived together.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.batch import GroupCommitter, Op
from taskflow._store.database import Database
from taskflow._store.ids import task_id_forms
from taskflow._store.key_reader import SQLiteKeyReader
from taskflow._store.protocol import KeyReader
from taskflow._store.rows import (
    AttemptRow,
    LogRow,
    NewLogLine,
    NewTask,
    Outcome,
    TaskRow,
    attempt_history,
)
from taskflow._store.schema import (
    ATTEMPT_END_COLUMNS,
    TERMINAL_STATUSES,
    UTCDateTime,
    sqlite_text,
    task_aliases,
    task_attempts,
    task_logs,
    tasks,
)


@dataclass(frozen=True, slots=True)
class _Start:
    """pending → running for ``id`` on ``owner``, as of ``started_at``."""

    id: str
    owner: str
    started_at: datetime


#: What group commit carries: one record per kind of write.
_Write = NewTask | _Start | NewLogLine | Outcome

_LIVE_KEY = sa.text("status NOT IN ('failed', 'cancelled', 'interrupted')")
# The predicate of the partial unique index on idempotency keys: queries that spell it
# literally (not with bound parameters) can use that index.
_LIVE_KEY_PREDICATE = (
    "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
)
_IDEMPOTENCY_WHERE = sa.text(_LIVE_KEY_PREDICATE)


class TaskSQL(Database):
    """Tasks in SQL: group-committed writes, reads, claims, cancellation, retention."""

    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        super().__init__(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        self._committer = GroupCommitter[_Write](
            handlers={
                "insert": self._insert_batch,
                "start": self._start_batch,
                "log": self._log_batch,
                "finish": self._finish_batch,
            },
            order=("insert", "start", "log", "finish"),
            transaction=self.write,
            # SQLite has one writer; PostgreSQL overlaps two batches (see batch.py).
            lanes=2 if self.dialect == "postgresql" else 1,
        )
        self._key_reader = (
            SQLiteKeyReader(self.url, display_url=self.display_url)
            if SQLiteKeyReader.supports(self.url)
            else None
        )

    async def open(self, *, auto_upgrade: bool) -> None:
        """Connect, check (or upgrade) the schema and start group commit (see
        :meth:`Database.open`)."""
        await super().open(auto_upgrade=auto_upgrade)
        self._committer.start()

    async def close(self) -> None:
        """Commit queued writes and close every connection."""
        await self._committer.close()
        if self._key_reader is not None:
            self._key_reader.close()
        await super().close()

    def key_reader(self) -> KeyReader | None:
        """A blocking lookup of idempotency-key holders, quick enough for the event
        loop's own thread (SQLite files only; see ``key_reader.py``), or None."""
        return self._key_reader

    # -- group-committed writes --------------------------------------------------------

    # Each kind's handler below resolves the futures of its operations to the type its
    # method promises; the committer itself only carries the results.

    def insert_task(self, task: NewTask) -> asyncio.Future[str]:
        """Queue a new task; resolves to the id stored (an existing id on a key clash)."""
        return cast("asyncio.Future[str]", self._committer.submit("insert", task))

    def start_task(
        self, task_id: str, *, instance: str, now: datetime
    ) -> asyncio.Future[int | None]:
        """Queue pending → running; resolves to the attempt number, or None if not pending."""
        start = _Start(task_id, instance, now)
        return cast("asyncio.Future[int | None]", self._committer.submit("start", start))

    def finish_task(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queue the outcome of an attempt (final, or pending again for a retry)."""
        return cast("asyncio.Future[None]", self._committer.submit("finish", outcome))

    def append_log(self, line: NewLogLine) -> asyncio.Future[None]:
        """Queue one log line."""
        return cast("asyncio.Future[None]", self._committer.submit("log", line))

    async def _insert_batch(self, conn: AsyncConnection, ops: Sequence[Op[_Write]]) -> list[str]:
        new = [cast(NewTask, op.data) for op in ops]
        plain = [task for task in new if task.idempotency_key is None]
        keyed = [task for task in new if task.idempotency_key is not None]
        await self._insert_rows(conn, plain, keyed=False)
        holders = await self._insert_keyed_batch(conn, keyed) if keyed else {}
        await self._notify(conn, {task.queue for task in new if task.owner is None})
        return [holders.get(task.id, task.id) for task in new]

    async def _insert_rows(
        self, conn: AsyncConnection, new: Sequence[NewTask], *, keyed: bool
    ) -> None:
        """Insert ``new`` in one statement (``keyed``: skipping rows whose live
        idempotency key is taken)."""
        if not new:
            return
        if self.dialect == "sqlite":
            statement = _SQLITE_INSERT_KEYED if keyed else _SQLITE_INSERT
            await conn.exec_driver_sql(statement, [_sqlite_insert_values(t) for t in new])
        else:
            statement = _PG_INSERT_KEYED if keyed else _PG_INSERT
            await conn.exec_driver_sql(statement, _pg_insert_arrays(new))

    async def _insert_keyed_batch(
        self, conn: AsyncConnection, keyed: Sequence[NewTask]
    ) -> dict[str, str]:
        """Insert tasks with idempotency keys, all in two statements: an insert that
        skips taken keys, and one read of who holds each key. Returns, for each task,
        the id of the task that holds its key (itself when it was inserted); a
        ``promised`` id that lost its key becomes an alias of the holder."""
        await self._insert_rows(conn, keyed, keyed=True)
        keys = list({cast(str, task.idempotency_key) for task in keyed})
        holder_of = await _live_holders(conn, keys, dialect=self.dialect)
        holders: dict[str, str] = {}
        aliases: list[dict[str, str]] = []
        for task in keyed:
            holder = holder_of.get(cast(str, task.idempotency_key))
            if holder is None:  # the holder ended (failed) between the insert and the read
                holder = await self._insert_keyed(conn, task)
            holders[task.id] = holder
            if holder != task.id and task.promised:
                aliases.append({"alias": task.id, "task_id": holder})
        if aliases:
            await conn.execute(task_aliases.insert(), aliases)
        return holders

    async def _insert_keyed(self, conn: AsyncConnection, task: NewTask) -> str:
        assert task.idempotency_key is not None
        insert = self.upsert(tasks)
        statement = insert.values(**task.columns()).on_conflict_do_nothing(
            index_elements=["idempotency_key"], index_where=_IDEMPOTENCY_WHERE
        )
        if (await conn.execute(statement)).rowcount == 1:
            return task.id
        existing = await _live_task_with_key(conn, task.idempotency_key)
        if existing is None:  # the holder failed between the insert and this read
            return await self._insert_keyed(conn, task)
        if task.promised:
            await conn.execute(task_aliases.insert(), [{"alias": task.id, "task_id": existing}])
        return existing

    async def _start_batch(
        self, conn: AsyncConnection, ops: Sequence[Op[_Write]]
    ) -> list[int | None]:
        started: dict[str, int] = {}
        for instance, now, ids in _group_starts(ops):
            rows = await conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(ids), tasks.c.status == "pending")
                .values(
                    status="running",
                    owner=instance,
                    started_at=now,
                    finished_at=None,
                    attempts=tasks.c.attempts + 1,
                )
                .returning(tasks.c.id, tasks.c.attempts)
            )
            started.update({row.id: row.attempts for row in rows})
        return [started.get(cast(_Start, op.data).id) for op in ops]

    async def _log_batch(self, conn: AsyncConnection, ops: Sequence[Op[_Write]]) -> list[None]:
        lines = [cast(NewLogLine, op.data) for op in ops]
        await conn.execute(
            task_logs.insert(),
            [
                {
                    "task_id": line.task_id,
                    "at": line.at,
                    "level": line.level,
                    "message": line.message,
                    "extra": line.extra,
                }
                for line in lines
            ],
        )
        return [None] * len(ops)

    async def _finish_batch(self, conn: AsyncConnection, ops: Sequence[Op[_Write]]) -> list[None]:
        updates = [_finish_params(cast(Outcome, op.data)) for op in ops]
        if self.dialect == "sqlite":
            await conn.exec_driver_sql(_SQLITE_FINISH, [_sqlite_finish_values(u) for u in updates])
        else:
            await conn.exec_driver_sql(_PG_FINISH, _pg_finish_arrays(updates))
        retried = [params for params in updates if params["b_status"] == "pending"]
        if retried:
            await conn.execute(self._retried_attempt(), retried)
        return [None] * len(ops)

    def _retried_attempt(self) -> sa.Insert:
        """Keep the attempt that just failed, now that its task is pending again: the
        task row will describe the next attempt. Only where this finish was applied
        (the task is pending for its owner at that attempt), so a late report from an
        instance that was settled meanwhile changes nothing."""
        ended = sa.select(
            tasks.c.id,
            tasks.c.attempts,
            tasks.c.owner,
            tasks.c.started_at,
            sa.bindparam("b_finished_at", type_=UTCDateTime),
            sa.literal("failed"),
            sa.bindparam("b_error", type_=sa.Text),
            sa.bindparam("b_traceback", type_=sa.Text),
        ).where(
            tasks.c.id == sa.bindparam("b_id"),
            tasks.c.status == "pending",
            tasks.c.owner == sa.bindparam("b_owner"),
            tasks.c.attempts == sa.bindparam("b_attempt"),
        )
        columns = [column.name for column in task_attempts.c]
        insert = self.upsert(task_attempts).from_select(columns, ended)
        return insert.on_conflict_do_update(
            index_elements=["task_id", "attempt"],
            set_={name: insert.excluded[name] for name in ATTEMPT_END_COLUMNS},
        )

    # -- direct reads ----------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRow | None:
        """The task row with this id (or with the id it is an alias of), or None.

        The id may be given in either shape (see :func:`taskflow._store.ids.task_id_forms`)."""
        forms = task_id_forms(task_id)
        async with self.read() as conn:
            result = await conn.execute(sa.select(tasks).where(tasks.c.id.in_(forms)))
            row = result.mappings().first()
            if row is None:
                target = sa.select(task_aliases.c.task_id).where(task_aliases.c.alias.in_(forms))
                result = await conn.execute(
                    sa.select(tasks).where(tasks.c.id == target.scalar_subquery())
                )
                row = result.mappings().first()
            return None if row is None else TaskRow.of(row)

    async def get_logs(self, task_id: str, *, limit: int = 1000) -> list[LogRow]:
        """The first ``limit`` log lines of a task, oldest first."""
        async with self.read() as conn:
            result = await conn.execute(
                sa.select(task_logs)
                .where(task_logs.c.task_id == task_id)
                .order_by(task_logs.c.id)
                .limit(limit)
            )
            return [LogRow.of(row) for row in result.mappings()]

    async def get_attempts(self, task_id: str) -> list[AttemptRow]:
        """Every attempt of a task, first first (see :func:`attempt_history`)."""
        async with self.read() as conn:
            task = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).mappings()
            found = task.first()
            if found is None:
                return []
            result = await conn.execute(
                sa.select(task_attempts).where(task_attempts.c.task_id == task_id)
            )
            ended = [AttemptRow.of(row) for row in result.mappings()]
        return attempt_history(TaskRow.of(found), ended)

    async def find_live_by_key(self, key: str) -> str | None:
        """Id of the task holding an idempotency key (one not failed/cancelled/interrupted)."""
        async with self.read() as conn:
            return await _live_task_with_key(conn, key)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        func_name: str | None = None,
        limit: int | None = 100,
        created_since: datetime | None = None,
    ) -> list[TaskRow]:
        """Newest tasks first, optionally filtered by status, function name and creation
        time (``limit`` None: all)."""
        query = sa.select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.id).limit(limit)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if func_name is not None:
            query = query.where(tasks.c.func_name == func_name)
        if created_since is not None:
            query = query.where(tasks.c.created_at >= created_since)
        async with self.read() as conn:
            return [TaskRow.of(row) for row in (await conn.execute(query)).mappings()]

    async def count_by_status(self) -> dict[str, int]:
        """Number of tasks in each status."""
        query = sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
        async with self.read() as conn:
            return {row[0]: row[1] for row in await conn.execute(query)}

    async def count_waiting(self, queue: str, *, now: datetime) -> int:
        """Number of pending tasks of ``queue`` due by ``now`` (an index-only count on the
        claim index). Tasks deferred to later (one-off firings, retries waiting out their
        delay) are not waiting to run yet, so they do not fill the queue."""
        query = sa.select(sa.func.count()).where(
            tasks.c.status == "pending",
            tasks.c.queue == queue,
            tasks.c.next_attempt_at <= now,
        )
        async with self.read() as conn:
            return int(await conn.scalar(query) or 0)

    async def queue_counts(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """Number of tasks in each status, per queue, for ``queues``."""
        query = (
            sa.select(tasks.c.queue, tasks.c.status, sa.func.count())
            .where(tasks.c.queue.in_(list(queues)))
            .group_by(tasks.c.queue, tasks.c.status)
        )
        counts: dict[str, dict[str, int]] = {name: {} for name in queues}
        async with self.read() as conn:
            for queue, status, count in await conn.execute(query):
                counts[queue][status] = int(count)
        return counts

    # -- direct writes -----------------------------------------------------------------

    async def owned_since(self, *, owner: str, before: datetime) -> list[str]:
        """Ids of tasks ``owner`` holds that were due or started before ``before``."""
        query = sa.select(tasks.c.id).where(
            tasks.c.owner == owner,
            sa.or_(
                sa.and_(tasks.c.status == "pending", tasks.c.next_attempt_at < before),
                sa.and_(tasks.c.status == "running", tasks.c.started_at < before),
            ),
        )
        async with self.read() as conn:
            return [row.id for row in await conn.execute(query)]

    async def cancel_requests(self, *, owner: str) -> list[str]:
        """Ids of running tasks of ``owner`` whose cancellation was requested."""
        query = sa.select(tasks.c.id).where(
            tasks.c.owner == owner, tasks.c.status == "running", tasks.c.cancel_requested.is_(True)
        )
        async with self.read() as conn:
            return [row.id for row in await conn.execute(query)]

    async def insert_task_now(self, task: NewTask) -> str:
        """Insert one task in its own transaction (bypassing group commit)."""
        async with self.write() as conn:
            return await self._insert(conn, task)

    async def _insert(self, conn: AsyncConnection, task: NewTask) -> str:
        if task.idempotency_key is None:
            await conn.execute(tasks.insert(), [task.columns()])
            return task.id
        return await self._insert_keyed(conn, task)

    async def cancel_task(
        self, task_id: str, *, now: datetime, reason: str | None = None
    ) -> str | None:
        """Cancel a task: pending ones end ``cancelled``; running ones get a request flag.

        Returns the status the task had, or None if there is no such task.
        """
        async with self.write() as conn:
            found = (
                await conn.execute(
                    sa.select(tasks.c.id, tasks.c.status).where(
                        tasks.c.id.in_(task_id_forms(task_id))
                    )
                )
            ).first()
            if found is None:
                return None
            status: str
            task_id, status = found
            if status == "pending":
                await conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id)
                    .values(
                        status="cancelled",
                        finished_at=now,
                        error=reason or "cancelled before start",
                    )
                )
            elif status == "running":
                await conn.execute(
                    tasks.update().where(tasks.c.id == task_id).values(cancel_requested=True)
                )
                await self._notify(conn, {"cancel"})
            return status

    async def claim_tasks(
        self, *, instance: str, queues: Sequence[str], limit: int, now: datetime
    ) -> list[TaskRow]:
        """Take ownership of up to ``limit`` due, unowned pending tasks for ``instance``.

        The tasks stay ``pending`` until they really start (``start_task``), so a claimed
        task that is still waiting for a free slot when its instance stops or dies is
        simply released again, never marked interrupted. PostgreSQL locks candidates with
        ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait on or take the same
        row; SQLite's ``BEGIN IMMEDIATE`` makes the single ``UPDATE ... RETURNING``
        exclusive.

        On PostgreSQL the candidates are a ``MATERIALIZED`` CTE: selected once. Under
        ``WHERE id IN (subquery)`` the planner may rescan the subquery for each row it
        updates, and every rescan skips the rows just updated and locks the next best,
        so one claim would take more than ``limit`` tasks.
        """
        candidates = (
            sa.select(tasks.c.id)
            .where(
                tasks.c.status == "pending",
                tasks.c.owner.is_(None),
                tasks.c.queue.in_(list(queues)),
                tasks.c.next_attempt_at <= now,
            )
            .order_by(tasks.c.priority.desc(), tasks.c.next_attempt_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            claim = candidates.with_for_update(skip_locked=True).cte("claim")
            chosen = tasks.c.id == claim.prefix_with("MATERIALIZED").c.id
        else:
            chosen = tasks.c.id.in_(candidates.scalar_subquery())
        async with self.write() as conn:
            rows = await conn.execute(
                tasks.update()
                .where(chosen, tasks.c.owner.is_(None))
                .values(owner=instance)
                .returning(*tasks.c)
            )
            return [TaskRow.of(row) for row in rows.mappings()]

    async def copy_task(self, task_id: str, *, task: NewTask) -> str | None:
        """Insert ``task`` (a new task built from ``task_id``) unless the source is gone.

        Returns the new id (or the id of a live task holding the same idempotency key),
        or None if ``task_id`` does not exist.
        """
        async with self.write() as conn:
            exists = await conn.scalar(
                sa.select(tasks.c.id).where(tasks.c.id.in_(task_id_forms(task_id)))
            )
            if exists is None:
                return None
            return await self._insert(conn, task)

    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished task with its logs and attempts; False if absent or not final."""
        async with self.write() as conn:
            result = await conn.execute(
                tasks.delete().where(
                    tasks.c.id.in_(task_id_forms(task_id)), tasks.c.status.in_(TERMINAL_STATUSES)
                )
            )
            return result.rowcount == 1

    # -- retention ------------------------------------------------------------

    async def prune_finished(self, *, before: datetime, batch_size: int = 500) -> int:
        """Delete up to ``batch_size`` final tasks that finished before ``before``."""
        async with self.write() as conn:
            ids = (
                sa.select(tasks.c.id)
                .where(tasks.c.status.in_(TERMINAL_STATUSES), tasks.c.finished_at < before)
                .limit(batch_size)
            )
            result = await conn.execute(tasks.delete().where(tasks.c.id.in_(ids.scalar_subquery())))
            return result.rowcount


async def _live_task_with_key(conn: AsyncConnection, key: str) -> str | None:
    return await conn.scalar(
        sa.select(tasks.c.id).where(
            tasks.c.idempotency_key == key,
            _LIVE_KEY,  # literal: matches the partial index
        )
    )


async def _live_holders(conn: AsyncConnection, keys: list[str], *, dialect: str) -> dict[str, str]:
    """The id of the live task holding each of ``keys`` (absent: none holds it)."""
    holders: dict[str, str] = {}
    if dialect == "postgresql":
        result = await conn.exec_driver_sql(_PG_KEY_HOLDERS, (keys,))
        holders.update(cast("list[tuple[str, str]]", result.all()))
        return holders
    for start in range(0, len(keys), _SQLITE_KEYS_PER_READ):
        chunk = keys[start : start + _SQLITE_KEYS_PER_READ]
        marks = ", ".join("?" * len(chunk))
        result = await conn.exec_driver_sql(_SQLITE_KEY_HOLDERS.format(marks=marks), tuple(chunk))
        holders.update(cast("list[tuple[str, str]]", result.all()))
    return holders


def _group_starts(ops: Sequence[Op[_Write]]) -> list[tuple[str, datetime, list[str]]]:
    groups: dict[str, tuple[datetime, list[str]]] = {}
    for op in ops:
        start = cast(_Start, op.data)
        groups.setdefault(start.owner, (start.started_at, []))[1].append(start.id)
    return [(instance, now, ids) for instance, (now, ids) in groups.items()]


def _finish_params(outcome: Outcome) -> dict[str, object]:
    status = outcome.status
    return {
        "b_id": outcome.id,
        "b_attempt": outcome.attempt,
        "b_status": status,
        "b_result": outcome.result,
        "b_error": outcome.error,
        "b_traceback": outcome.traceback,
        "b_finished_at": outcome.finished_at,
        "b_task_finished_at": None if status == "pending" else outcome.finished_at,
        "b_next_attempt_at": outcome.next_attempt_at or outcome.finished_at,
        "b_owner": outcome.owner,
    }


# -- the hot statements, through the driver -------------------------------------------
#
# The inserts and finishes of group commit run as fixed statements through the driver,
# with no per-row parameter processing: about a quarter of a task's CPU went there. On
# SQLite they are ``executemany`` with plain tuples; on PostgreSQL one statement per
# batch over arrays (``unnest``), as asyncpg's ``executemany`` would still run one
# statement per row. The values are converted here exactly as the column types convert
# them (``sqlite_text`` for SQLite timestamps, ``json.dumps`` for JSON), so a row reads
# back the same whichever way it was written; the store tests compare both paths.

_SQLITE_INSERT = """
INSERT INTO taskflow_tasks (
    id, func_name, func_path, status, payload, encrypted, attempts, max_retries, priority,
    queue, tags, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
    requeue_on_interrupt, cancel_requested, created_at, next_attempt_at, retry_delay,
    retry_max_delay, error, finished_at)
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)
"""

# A task with an idempotency key is inserted unless a live task holds the key (the
# conflict target is the partial unique index, named by its own predicate).
_ON_KEY_CONFLICT = (
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL"
    " AND status NOT IN ('failed', 'cancelled', 'interrupted') DO NOTHING"
)
_SQLITE_INSERT_KEYED = _SQLITE_INSERT.rstrip() + "\n" + _ON_KEY_CONFLICT
_SQLITE_KEYS_PER_READ = 500  # well under SQLite's limit of bound parameters
_SQLITE_KEY_HOLDERS = (
    "SELECT idempotency_key, id FROM taskflow_tasks"
    f" WHERE idempotency_key IN ({{marks}}) AND {_LIVE_KEY_PREDICATE}"
)

_SQLITE_FINISH = """
UPDATE taskflow_tasks
SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ?, next_attempt_at = ?
WHERE id = ? AND status = 'running' AND owner = ?
"""


def _sqlite_insert_values(task: NewTask) -> tuple[object, ...]:
    rejected = task.rejection is not None
    return (
        task.id,
        task.func_name,
        task.func_path,
        "rejected" if rejected else "pending",
        task.payload,
        task.encrypted,
        task.max_retries,
        task.priority,
        task.queue,
        json.dumps(task.tags),
        task.idempotency_key,
        task.source,
        task.schedule_id,
        sqlite_text(task.schedule_slot),
        task.run_key,
        task.owner,
        task.requeue_on_interrupt,
        sqlite_text(task.created_at),
        sqlite_text(task.next_attempt_at),
        task.retry_delay,
        task.retry_max_delay,
        task.rejection,
        sqlite_text(task.created_at) if rejected else None,
    )


def _sqlite_finish_values(params: dict[str, object]) -> tuple[object, ...]:
    return (
        params["b_status"],
        params["b_result"],
        params["b_error"],
        params["b_traceback"],
        sqlite_text(cast("datetime | None", params["b_task_finished_at"])),
        sqlite_text(cast("datetime", params["b_next_attempt_at"])),
        params["b_id"],
        params["b_owner"],
    )


_PG_INSERT = """
INSERT INTO taskflow_tasks (
    id, func_name, func_path, status, payload, encrypted, attempts, max_retries, priority,
    queue, tags, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
    requeue_on_interrupt, cancel_requested, created_at, next_attempt_at, retry_delay,
    retry_max_delay, error, finished_at)
SELECT id, func_name, func_path, status, payload, encrypted, 0, max_retries, priority,
    queue, tags::json, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
    requeue_on_interrupt, false, created_at, next_attempt_at, retry_delay,
    retry_max_delay, error, finished_at
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::int[],
    $8::int[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::timestamptz[], $15::text[], $16::text[], $17::bool[], $18::timestamptz[],
    $19::timestamptz[], $20::float8[], $21::float8[], $22::text[], $23::timestamptz[])
    AS t(id, func_name, func_path, status, payload, encrypted, max_retries, priority, queue,
         tags, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
         requeue_on_interrupt, created_at, next_attempt_at, retry_delay, retry_max_delay,
         error, finished_at)
"""

_PG_INSERT_KEYED = _PG_INSERT.rstrip() + "\n" + _ON_KEY_CONFLICT
_PG_KEY_HOLDERS = (
    "SELECT idempotency_key, id FROM taskflow_tasks"
    f" WHERE idempotency_key = ANY($1::text[]) AND {_LIVE_KEY_PREDICATE}"
)

_PG_FINISH = """
UPDATE taskflow_tasks AS t
SET status = u.status, result = u.result, error = u.error, traceback = u.traceback,
    finished_at = u.finished_at, next_attempt_at = u.next_attempt_at
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::timestamptz[])
    AS u(id, owner, status, result, error, traceback, finished_at, next_attempt_at)
WHERE t.id = u.id AND t.status = 'running' AND t.owner = u.owner
"""


def _pg_insert_arrays(new: Sequence[NewTask]) -> tuple[list[Any], ...]:
    """One array per column of :data:`_PG_INSERT`, in its order."""
    for task in new:
        _check_aware(task.created_at, task.next_attempt_at, task.schedule_slot)
    return (
        [task.id for task in new],
        [task.func_name for task in new],
        [task.func_path for task in new],
        ["pending" if task.rejection is None else "rejected" for task in new],
        [task.payload for task in new],
        [task.encrypted for task in new],
        [task.max_retries for task in new],
        [task.priority for task in new],
        [task.queue for task in new],
        [json.dumps(task.tags) for task in new],
        [task.idempotency_key for task in new],
        [task.source for task in new],
        [task.schedule_id for task in new],
        [task.schedule_slot for task in new],
        [task.run_key for task in new],
        [task.owner for task in new],
        [task.requeue_on_interrupt for task in new],
        [task.created_at for task in new],
        [task.next_attempt_at for task in new],
        [task.retry_delay for task in new],
        [task.retry_max_delay for task in new],
        [task.rejection for task in new],
        [task.created_at if task.rejection is not None else None for task in new],
    )


def _pg_finish_arrays(updates: Sequence[dict[str, Any]]) -> tuple[list[Any], ...]:
    """One array per column of :data:`_PG_FINISH`, in its order."""
    for params in updates:
        _check_aware(params["b_task_finished_at"], params["b_next_attempt_at"])
    names = ("b_id", "b_owner", "b_status", "b_result", "b_error", "b_traceback")
    times = ("b_task_finished_at", "b_next_attempt_at")
    return tuple([params[name] for params in updates] for name in (*names, *times))


def _check_aware(*moments: datetime | None) -> None:
    """Refuse a naive timestamp, as the column type does (asyncpg would read it as UTC
    without a word)."""
    for moment in moments:
        if moment is not None and moment.tzinfo is None:
            raise ValueError("taskflow timestamps must be timezone-aware")
