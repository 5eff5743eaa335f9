"""The tasks aggregate: tasks, their attempts, log lines and id aliases.

Frequent small writes (insert, start, finish, log) go through
:class:`~taskflow._store.batch.GroupCommitter`: one transaction commits the writes that
arrived together. On a SQLite file that transaction runs on the writer thread
(:mod:`taskflow._store.sqlite_writer`, :mod:`taskflow._store.sqlite_batch`); on
PostgreSQL on asyncpg connections kept for it (:mod:`taskflow._store.pg_writer`,
:mod:`taskflow._store.pg_batch`); on in-memory SQLite through the async engine, with
the handlers below.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store import hot_sql, pg_batch, sqlite_batch
from taskflow._store.batch import GroupCommitter, Groups, Op
from taskflow._store.database import Database
from taskflow._store.hot_sql import LIVE_KEY_PREDICATE, Start, Write
from taskflow._store.ids import task_id_forms
from taskflow._store.key_reader import SQLiteKeyReader
from taskflow._store.pg_writer import PGWriter
from taskflow._store.protocol import KeyReader
from taskflow._store.rows import (
    AttemptRow,
    LogRow,
    NewLogLine,
    NewTask,
    Outcome,
    ProgressUpdate,
    TaskRow,
    attempt_history,
    ended_notification,
)
from taskflow._store.schema import (
    ATTEMPT_END_COLUMNS,
    TERMINAL_STATUSES,
    UTCDateTime,
    task_aliases,
    task_attempts,
    task_logs,
    tasks,
)
from taskflow._store.sqlite_writer import SQLiteWriter

# Writes the operations of one kind through the engine; one result per operation.
_Handler = Callable[[AsyncConnection, Sequence[Op[Write]]], Awaitable[Sequence[object]]]
_LIVE_KEY = sa.text("status NOT IN ('failed', 'cancelled', 'interrupted')")
_IDEMPOTENCY_WHERE = sa.text(LIVE_KEY_PREDICATE)


class TaskSQL(Database):
    """Tasks in SQL: group-committed writes, reads, claims, cancellation, retention."""

    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        super().__init__(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        self._writer = (
            SQLiteWriter(self.url, display_url=self.display_url, synchronous=sqlite_synchronous)
            if SQLiteWriter.supports(self.url)
            else None
        )
        self._pg_writer = (
            PGWriter(self.require_engine, url=self.url, display_url=self.display_url)
            if self.dialect == "postgresql"
            else None
        )
        self._handlers: dict[str, _Handler] = {
            "insert": self._insert_batch,
            "start": self._start_batch,
            "log": self._log_batch,
            "progress": self._progress_batch,
            "finish": self._finish_batch,
        }
        self._committer = GroupCommitter[Write](
            write_batch=self._write_batch,
            order=("insert", "start", "log", "progress", "finish"),
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
        if self._writer is not None:
            try:
                await self._writer.start()
            except BaseException:
                await self._writer.close()
                await super().close()
                raise
        self._committer.start()

    async def close(self) -> None:
        """Commit queued writes and close every connection."""
        await self._committer.close()
        if self._writer is not None:
            await self._writer.close()
        if self._pg_writer is not None:
            await self._pg_writer.close()
        if self._key_reader is not None:
            self._key_reader.close()
        await super().close()

    def key_reader(self) -> KeyReader | None:
        """A blocking lookup of idempotency-key holders, quick enough for the event
        loop's own thread (SQLite files only; see ``key_reader.py``), or None."""
        return self._key_reader

    # -- group-committed writes --------------------------------------------------------

    # Each kind's handler resolves the futures of its operations to the type its method
    # promises; the committer itself only carries the results. The ``_*_batch``
    # handlers below write through the engine: in-memory SQLite only.

    def insert_task(self, task: NewTask) -> asyncio.Future[str]:
        """Queue a new task; resolves to the id stored (an existing id on a key clash)."""
        return cast("asyncio.Future[str]", self._committer.submit("insert", task))

    def start_task(
        self, task_id: str, *, instance: str, now: datetime
    ) -> asyncio.Future[int | None]:
        """Queue pending → running; resolves to the attempt number, or None if not pending."""
        start = Start(task_id, instance, now)
        return cast("asyncio.Future[int | None]", self._committer.submit("start", start))

    def finish_task(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queue the outcome of an attempt (final, or pending again for a retry)."""
        return cast("asyncio.Future[None]", self._committer.submit("finish", outcome))

    def append_log(self, line: NewLogLine) -> asyncio.Future[None]:
        """Queue one log line."""
        return cast("asyncio.Future[None]", self._committer.submit("log", line))

    def set_progress(self, update: ProgressUpdate) -> asyncio.Future[None]:
        """Queue a task's latest progress report (a finish queued later commits after it)."""
        return cast("asyncio.Future[None]", self._committer.submit("progress", update))

    async def _write_batch(self, groups: Groups[Write]) -> list[Sequence[object]]:
        """One group-commit transaction: on the writer thread for a SQLite file (in one
        hand-off), on a kept asyncpg connection for PostgreSQL, else (in-memory SQLite)
        through the engine."""
        if self._writer is not None:
            assert self._write_lock is not None  # SQLite always has one
            async with self._write_lock:
                return await self._writer.run(
                    functools.partial(sqlite_batch.write_batch, groups=groups)
                )
        if self._pg_writer is not None:
            return await self._pg_writer.run(functools.partial(pg_batch.write_batch, groups=groups))
        results: list[Sequence[object]] = []
        async with self.write() as conn:
            for kind, ops in groups:
                results.append(await self._handlers[kind](conn, ops))
        return results

    async def _insert_batch(self, conn: AsyncConnection, ops: Sequence[Op[Write]]) -> list[str]:
        new = [cast(NewTask, op.data) for op in ops]
        plain = [task for task in new if task.idempotency_key is None]
        keyed = [task for task in new if task.idempotency_key is not None]
        await self._insert_rows(conn, plain, keyed=False)
        holders = await self._insert_keyed_batch(conn, keyed) if keyed else {}
        limited = hot_sql.limit_keys(new)
        if limited:
            await conn.exec_driver_sql(hot_sql.SQLITE_SET_LIMIT_KEY, limited)
        return [holders.get(task.id, task.id) for task in new]

    async def _insert_rows(
        self, conn: AsyncConnection, new: Sequence[NewTask], *, keyed: bool
    ) -> None:
        """Insert ``new`` in one statement (``keyed``: skipping rows whose live
        idempotency key is taken)."""
        if not new:
            return
        statement = hot_sql.SQLITE_INSERT_KEYED if keyed else hot_sql.SQLITE_INSERT
        await conn.exec_driver_sql(statement, [hot_sql.sqlite_insert_values(t) for t in new])

    async def _insert_keyed_batch(
        self, conn: AsyncConnection, keyed: Sequence[NewTask]
    ) -> dict[str, str]:
        """Insert tasks with idempotency keys, all in two statements: an insert that
        skips taken keys, and one read of who holds each key. Returns, for each task,
        the id of the task that holds its key (itself when it was inserted); a
        ``promised`` id that lost its key becomes an alias of the holder."""
        await self._insert_rows(conn, keyed, keyed=True)
        keys = list({cast(str, task.idempotency_key) for task in keyed})
        holder_of = await _live_holders(conn, keys)
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
        self, conn: AsyncConnection, ops: Sequence[Op[Write]]
    ) -> list[int | None]:
        started: dict[str, int] = {}
        for instance, now, ids in hot_sql.group_starts(ops):
            repeated = sa.and_(  # see hot_sql.SQLITE_START
                tasks.c.status == "running", tasks.c.owner == instance, tasks.c.started_at == now
            )
            rows = await conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(ids), sa.or_(tasks.c.status == "pending", repeated))
                .values(
                    status="running",
                    owner=instance,
                    started_at=now,
                    finished_at=None,
                    attempts=tasks.c.attempts + sa.case((tasks.c.status == "pending", 1), else_=0),
                )
                .returning(tasks.c.id, tasks.c.attempts)
            )
            started.update({row.id: row.attempts for row in rows})
        return [started.get(cast(Start, op.data).id) for op in ops]

    async def _log_batch(self, conn: AsyncConnection, ops: Sequence[Op[Write]]) -> list[None]:
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

    async def _progress_batch(self, conn: AsyncConnection, ops: Sequence[Op[Write]]) -> list[None]:
        updates = [cast(ProgressUpdate, op.data) for op in ops]
        await conn.execute(
            tasks.update()
            .where(tasks.c.id == sa.bindparam("b_id"))
            .values(progress=sa.bindparam("b_progress")),
            [{"b_id": u.task_id, "b_progress": u.report} for u in updates],
        )
        return [None] * len(ops)

    async def _finish_batch(self, conn: AsyncConnection, ops: Sequence[Op[Write]]) -> list[None]:
        updates = [hot_sql.finish_params(cast(Outcome, op.data)) for op in ops]
        await conn.exec_driver_sql(
            hot_sql.SQLITE_FINISH, [hot_sql.sqlite_finish_values(u) for u in updates]
        )
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
            if status in ("pending", "blocked"):
                await conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id)
                    .values(
                        status="cancelled",
                        finished_at=now,
                        error=reason or "cancelled before start",
                    )
                )
                await self._notify(conn, {ended_notification([task_id])})
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
        ``FOR NO KEY UPDATE SKIP LOCKED`` so concurrent claimers never wait on or take the
        same row (the weaker lock does not conflict with the key-share locks that inserts
        referencing a task take, such as log lines and the argument search's side table,
        so those never hide a task from claimers); SQLite's ``BEGIN IMMEDIATE`` makes the
        single ``UPDATE ... RETURNING`` exclusive.

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
            claim = candidates.with_for_update(skip_locked=True, key_share=True).cte("claim")
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

        In the same transaction the copy records ``retry_of`` (the source's id) and the
        source is resolved as ``retried`` at ``task.created_at``. Returns the new id (or
        the id of a live task holding the same idempotency key, and then nothing is
        linked), or None if ``task_id`` does not exist.
        """
        async with self.write() as conn:
            source = await conn.scalar(
                sa.select(tasks.c.id).where(tasks.c.id.in_(task_id_forms(task_id)))
            )
            if source is None:
                return None
            stored = await self._insert(conn, task)
            if stored == task.id:
                await conn.execute(
                    tasks.update().where(tasks.c.id == stored).values(retry_of=source)
                )
                await conn.execute(
                    tasks.update()
                    .where(tasks.c.id == source)
                    .values(resolution="retried", resolved_at=task.created_at)
                )
            return stored

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


async def _live_holders(conn: AsyncConnection, keys: list[str]) -> dict[str, str]:
    """The id of the live task holding each of ``keys`` (absent: none holds it; SQLite)."""
    holders: dict[str, str] = {}
    for start in range(0, len(keys), hot_sql.SQLITE_KEYS_PER_READ):
        chunk = keys[start : start + hot_sql.SQLITE_KEYS_PER_READ]
        marks = ", ".join("?" * len(chunk))
        result = await conn.exec_driver_sql(
            hot_sql.SQLITE_KEY_HOLDERS.format(marks=marks), tuple(chunk)
        )
        holders.update(cast("list[tuple[str, str]]", result.all()))
    return holders
