"""The SQL store: every statement taskflow runs lives in this module.

One implementation serves SQLite (aiosqlite) and PostgreSQL (asyncpg); where the
dialects differ (claiming with ``SKIP LOCKED``, upserts), the difference stays inside a
method with one name and one contract. Frequent small writes (insert, start, finish,
log) go through :class:`~taskflow._store.batch.GroupCommitter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskflow._payloads.payloads import MEMORY_ONLY, MEMORY_ONLY_LOST
from taskflow._store import engine as engines
from taskflow._store import failures
from taskflow._store.batch import GroupCommitter, Op
from taskflow._store.ids import task_id_forms
from taskflow._store.schema import (
    TERMINAL_STATUSES,
    instances,
    meta,
    schedules,
    task_aliases,
    task_attempts,
    task_logs,
    tasks,
)
from taskflow.errors import DatabaseError

#: A row to write: column name → value, as SQLAlchemy binds it (the column gives the
#: value's type). Keys starting with ``_`` are flags for the store, not columns.
Row = Mapping[str, Any]

NOTIFY_CHANNEL = "taskflow"
LISTEN_RETRY = 1.0  # seconds between attempts to re-open a lost listening connection

_LIVE_KEY = sa.text("status NOT IN ('failed', 'cancelled', 'interrupted')")
_SCHEDULED_RUN = sa.text("source = 'scheduled'")
_IDEMPOTENCY_WHERE = sa.text(
    "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
)


class SQLStore:
    """Async access to taskflow's tables on SQLite or PostgreSQL.

    Args:
        url: any SQLAlchemy URL for SQLite or PostgreSQL; sync driver names are mapped
            to aiosqlite/asyncpg. For SQLite, ``?timeout=<seconds>`` sets the busy
            timeout (default 30).
        pool_size: connections kept open (PostgreSQL).
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (``FULL`` survives power loss,
            ``NORMAL`` survives a process crash).

    Raises:
        ConfigurationError: the URL is not a supported database.
    """

    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        self.url = engines.normalize_url(url)
        self.display_url = engines.mask(self.url)
        self.dialect = self.url.get_backend_name()
        self._pool_size = pool_size
        self._synchronous = sqlite_synchronous
        self.engine: AsyncEngine | None = None
        # SQLite allows one writer: queue our own writers here rather than on the file lock.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._committer = GroupCommitter[Row](
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

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, *, auto_upgrade: bool) -> None:
        """Connect, check (or upgrade) the schema and start group commit.

        Raises:
            DatabaseError: the database cannot be reached (the message names the URL).
            DatabaseReadOnly: a SQLite file (or its directory) cannot be written.
            DatabaseUnavailable: the database is down, or locked past the busy timeout.
            SchemaOutOfDate: the schema is stale and ``auto_upgrade`` is off.
        """
        from taskflow._store import migrate

        self.engine = engine = engines.create_engine(
            self.url, pool_size=self._pool_size, synchronous=self._synchronous
        )
        try:
            await migrate.prepare_schema(
                engine, auto_upgrade=auto_upgrade, display_url=self.display_url
            )
            if self.dialect == "sqlite":  # read-only: fail now, not at the first enqueue
                await engines.check_sqlite_writable(engine, self.url)
        except DatabaseError:
            await engine.dispose()
            raise
        except (sa.exc.SQLAlchemyError, OSError, sqlite3.Error) as exc:
            await engine.dispose()
            raise failures.translate(
                exc, url=self.url, display_url=self.display_url, connecting=True
            ) from exc
        except Exception as exc:
            await engine.dispose()
            raise DatabaseError(f"cannot open the task database {self.display_url}: {exc}") from exc
        self._committer.start()

    async def close(self) -> None:
        """Commit queued writes and close every connection."""
        await self._committer.close()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    # -- transactions ----------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction; driver errors leave as :class:`DatabaseError`."""
        async with self._translated(), self.require_engine().connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        async with (
            _maybe(self._write_lock),
            self._translated(),
            self.require_engine().connect() as conn,
        ):
            conn = await engines.write_options(conn)
            async with conn.begin():
                yield conn

    def require_engine(self) -> AsyncEngine:
        """The engine of the open store.

        Raises:
            DatabaseError: the store is not open, or is closed already.
        """
        if self.engine is None:
            raise DatabaseError("the task store is closed")
        return self.engine

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except DatabaseError:
            raise
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise failures.translate(exc, url=self.url, display_url=self.display_url) from exc

    # -- group-committed writes --------------------------------------------------------

    # Each kind's handler below resolves the futures of its operations to the type its
    # method promises; the committer itself only carries the results.

    def insert_task(self, row: Row) -> asyncio.Future[str]:
        """Queue a task row; resolves to the id stored (an existing id on a key clash)."""
        return cast("asyncio.Future[str]", self._committer.submit("insert", row))

    def start_task(
        self, task_id: str, *, instance: str, now: datetime
    ) -> asyncio.Future[int | None]:
        """Queue pending → running; resolves to the attempt number, or None if not pending."""
        start = {"id": task_id, "owner": instance, "started_at": now}
        return cast("asyncio.Future[int | None]", self._committer.submit("start", start))

    def finish_task(self, update: Row) -> asyncio.Future[None]:
        """Queue the outcome of an attempt (final, or pending again for a retry).

        ``update`` has ``id``, ``owner``, ``attempt``, ``status``, ``finished_at`` and optionally
        ``result``, ``error``, ``traceback``, ``next_attempt_at``.
        """
        return cast("asyncio.Future[None]", self._committer.submit("finish", update))

    def append_log(self, row: Row) -> asyncio.Future[None]:
        """Queue one log line (``task_id``, ``at``, ``level``, ``message``, ``extra``)."""
        return cast("asyncio.Future[None]", self._committer.submit("log", row))

    @property
    def write_backlog(self) -> int:
        """Writes waiting for the next group commit."""
        return self._committer.backlog

    async def _insert_batch(self, conn: AsyncConnection, ops: Sequence[Op[Row]]) -> list[str]:
        plain = [_without_flags(op.data) for op in ops if op.data.get("idempotency_key") is None]
        if plain:
            await conn.execute(tasks.insert(), plain)
        await self._notify(conn, {op.data["queue"] for op in ops if op.data.get("owner") is None})
        return [
            await self._insert_keyed(conn, op.data)
            if op.data.get("idempotency_key") is not None
            else op.data["id"]
            for op in ops
        ]

    async def _insert_keyed(self, conn: AsyncConnection, row: Row) -> str:
        row = dict(row)
        promised = row.pop("_promised", False)
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(tasks)
        statement = insert.values(**row).on_conflict_do_nothing(
            index_elements=["idempotency_key"], index_where=_IDEMPOTENCY_WHERE
        )
        if (await conn.execute(statement)).rowcount == 1:
            return str(row["id"])
        existing = await _live_task_with_key(conn, row["idempotency_key"])
        if existing is None:  # the holder failed between the insert and this read
            return await self._insert_keyed(conn, {**row, "_promised": promised})
        if promised:
            await conn.execute(task_aliases.insert(), [{"alias": row["id"], "task_id": existing}])
        return existing

    async def _start_batch(self, conn: AsyncConnection, ops: Sequence[Op[Row]]) -> list[int | None]:
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
            fresh = {row.id: row.attempts for row in rows}
            await _record_attempt_starts(conn, fresh, instance=instance, now=now)
            started.update(fresh)
        return [started.get(op.data["id"]) for op in ops]

    async def _log_batch(self, conn: AsyncConnection, ops: Sequence[Op[Row]]) -> list[None]:
        await conn.execute(task_logs.insert(), [op.data for op in ops])
        return [None] * len(ops)

    async def _finish_batch(self, conn: AsyncConnection, ops: Sequence[Op[Row]]) -> list[None]:
        updates = [_finish_params(op.data) for op in ops]
        await conn.execute(
            tasks.update()
            .where(
                tasks.c.id == sa.bindparam("b_id"),
                tasks.c.status == "running",
                tasks.c.owner == sa.bindparam("b_owner"),
            )
            .values(
                status=sa.bindparam("b_status"),
                result=sa.bindparam("b_result"),
                error=sa.bindparam("b_error"),
                traceback=sa.bindparam("b_traceback"),
                finished_at=sa.bindparam("b_task_finished_at"),
                next_attempt_at=sa.bindparam("b_next_attempt_at"),
            ),
            updates,
        )
        await conn.execute(
            task_attempts.update()
            .where(
                task_attempts.c.task_id == sa.bindparam("b_id"),
                task_attempts.c.attempt == sa.bindparam("b_attempt"),
            )
            .values(
                status=sa.bindparam("b_attempt_status"),
                finished_at=sa.bindparam("b_finished_at"),
                error=sa.bindparam("b_error"),
                traceback=sa.bindparam("b_traceback"),
            ),
            updates,
        )
        return [None] * len(ops)

    async def _notify(self, conn: AsyncConnection, queues: set[str]) -> None:
        """Tell listening instances (PostgreSQL) that tasks became claimable; delivered
        at commit. SQLite has no notifications: instances poll."""
        if self.dialect != "postgresql":
            return
        for queue in sorted(queues):
            await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, queue)))

    async def listen(self, on_notify: Callable[[str], None]) -> Listener | None:
        """Call ``on_notify(payload)`` for every notification (PostgreSQL only; None on
        SQLite). The listener reconnects by itself after a connection loss."""
        if self.dialect != "postgresql":
            return None
        listener = Listener(self, on_notify)
        await listener.start()
        return listener

    # -- direct reads ----------------------------------------------------------------

    async def get_task(self, task_id: str) -> RowMapping | None:
        """The task row with this id (or with the id it is an alias of), or None.

        The id may be given in either shape (see :func:`taskflow._store.ids.task_id_forms`)."""
        forms = task_id_forms(task_id)
        async with self.read() as conn:
            result = await conn.execute(sa.select(tasks).where(tasks.c.id.in_(forms)))
            row = result.mappings().first()
            if row is not None:
                return row
            target = sa.select(task_aliases.c.task_id).where(task_aliases.c.alias.in_(forms))
            result = await conn.execute(
                sa.select(tasks).where(tasks.c.id == target.scalar_subquery())
            )
            return result.mappings().first()

    async def get_logs(self, task_id: str, *, limit: int = 1000) -> list[RowMapping]:
        """The first ``limit`` log lines of a task, oldest first."""
        async with self.read() as conn:
            result = await conn.execute(
                sa.select(task_logs)
                .where(task_logs.c.task_id == task_id)
                .order_by(task_logs.c.id)
                .limit(limit)
            )
            return list(result.mappings())

    async def get_attempts(self, task_id: str) -> list[RowMapping]:
        """Every attempt of a task, first first."""
        async with self.read() as conn:
            result = await conn.execute(
                sa.select(task_attempts)
                .where(task_attempts.c.task_id == task_id)
                .order_by(task_attempts.c.attempt)
            )
            return list(result.mappings())

    async def find_live_by_key(self, key: str) -> str | None:
        """Id of the task holding an idempotency key (one not failed/cancelled/interrupted)."""
        async with self.read() as conn:
            return await _live_task_with_key(conn, key)

    async def list_tasks(
        self, *, status: str | None = None, func_name: str | None = None, limit: int | None = 100
    ) -> list[RowMapping]:
        """Newest tasks first, optionally filtered by status and function name (``limit``
        None: all)."""
        query = sa.select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.id).limit(limit)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if func_name is not None:
            query = query.where(tasks.c.func_name == func_name)
        async with self.read() as conn:
            return list((await conn.execute(query)).mappings())

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

    async def insert_task_now(self, row: Row) -> str:
        """Insert one task in its own transaction (bypassing group commit)."""
        async with self.write() as conn:
            if row.get("idempotency_key") is None:
                await conn.execute(tasks.insert(), [row])
                return str(row["id"])
            return await self._insert_keyed(conn, row)

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
    ) -> list[RowMapping]:
        """Take ownership of up to ``limit`` due, unowned pending tasks for ``instance``.

        The tasks stay ``pending`` until they really start (``start_task``), so a claimed
        task that is still waiting for a free slot when its instance stops or dies is
        simply released again, never marked interrupted. PostgreSQL locks candidates with
        ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait on or take the same
        row; SQLite's ``BEGIN IMMEDIATE`` makes the single ``UPDATE ... RETURNING``
        exclusive.
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
            candidates = candidates.with_for_update(skip_locked=True)
        async with self.write() as conn:
            rows = await conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(candidates.scalar_subquery()), tasks.c.owner.is_(None))
                .values(owner=instance)
                .returning(*tasks.c)
            )
            return list(rows.mappings())

    async def copy_task(self, task_id: str, *, row: Row) -> str | None:
        """Insert ``row`` (a new task built from ``task_id``) unless the source is gone.

        Returns the new id (or the id of a live task holding the same idempotency key),
        or None if ``task_id`` does not exist.
        """
        async with self.write() as conn:
            exists = await conn.scalar(
                sa.select(tasks.c.id).where(tasks.c.id.in_(task_id_forms(task_id)))
            )
            if exists is None:
                return None
            if row.get("idempotency_key") is None:
                await conn.execute(tasks.insert(), [row])
                return str(row["id"])
            return await self._insert_keyed(conn, row)

    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished task with its logs and attempts; False if absent or not final."""
        async with self.write() as conn:
            result = await conn.execute(
                tasks.delete().where(
                    tasks.c.id.in_(task_id_forms(task_id)), tasks.c.status.in_(TERMINAL_STATUSES)
                )
            )
            return result.rowcount == 1

    # -- instances and rescue --------------------------------------------------------

    async def register_instance(self, row: Row) -> None:
        """Insert this process's instance row."""
        async with self.write() as conn:
            await conn.execute(instances.insert(), [row])

    async def heartbeat(self, instance: str, *, now: datetime, info: Mapping[str, object]) -> bool:
        """Refresh an instance's heartbeat; False if its row is gone (it was rescued)."""
        async with self.write() as conn:
            result = await conn.execute(
                instances.update()
                .where(instances.c.id == instance)
                .values(heartbeat_at=now, info=info)
            )
            return result.rowcount == 1

    async def list_instances(self) -> list[RowMapping]:
        """Every registered instance, newest heartbeat first."""
        async with self.read() as conn:
            query = sa.select(instances).order_by(instances.c.heartbeat_at.desc())
            return list((await conn.execute(query)).mappings())

    async def dead_instances(
        self, *, me: str, stale_before: datetime, hostname: str, dead_pids: Sequence[int]
    ) -> list[str]:
        """Instances whose heartbeat is older than ``stale_before``, or which ran on this
        host under a pid that no longer exists."""
        same_host_dead = sa.and_(instances.c.hostname == hostname, instances.c.pid.in_(dead_pids))
        query = sa.select(instances.c.id).where(
            instances.c.id != me,
            sa.or_(instances.c.heartbeat_at < stale_before, same_host_dead),
        )
        async with self.read() as conn:
            return [row.id for row in await conn.execute(query)]

    async def host_instances(self, *, hostname: str, me: str) -> list[RowMapping]:
        """Other instances registered from this host (for the dead-pid check)."""
        query = sa.select(instances.c.id, instances.c.pid).where(
            instances.c.hostname == hostname, instances.c.id != me
        )
        async with self.read() as conn:
            return list((await conn.execute(query)).mappings())

    async def settle_instance(
        self,
        instance: str,
        *,
        now: datetime,
        reason: str,
        remove: bool = True,
        only: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Settle the tasks of a stopped instance, in one transaction.

        Its pending tasks become unowned (claimable); its running tasks go back to
        pending when ``requeue_on_interrupt`` was set, else end ``interrupted`` with
        ``reason``. Tasks that only that process could run (memory-only payload) end
        ``interrupted``, running or pending, with a message saying why. ``only`` limits
        this to some task ids (and keeps the instance row). Returns counts by outcome.
        """
        mine: sa.ColumnElement[bool] = tasks.c.owner == instance
        if only is not None:
            mine = sa.and_(mine, tasks.c.id.in_(list(only)))
            remove = False
        async with self.write() as conn:
            lost = await self._end_memory_only(conn, mine, now=now, reason=reason)
            running = sa.and_(mine, tasks.c.status == "running")
            interrupted = await conn.execute(
                tasks.update()
                .where(running, tasks.c.requeue_on_interrupt.is_(False))
                .values(status="interrupted", finished_at=now, error=reason, owner=None)
                .returning(tasks.c.id, tasks.c.attempts)
            )
            interrupted_rows = list(interrupted)
            requeued = await conn.execute(
                tasks.update()
                .where(running, tasks.c.requeue_on_interrupt.is_(True))
                .values(status="pending", owner=None, next_attempt_at=now, error=reason)
                .returning(tasks.c.id, tasks.c.attempts)
            )
            requeued_rows = list(requeued)
            await _interrupt_attempts(conn, interrupted_rows + requeued_rows, now=now, why=reason)
            released = await conn.execute(
                tasks.update().where(mine, tasks.c.status == "pending").values(owner=None)
            )
            if remove:
                await conn.execute(instances.delete().where(instances.c.id == instance))
            await self._notify(conn, {"rescue"})
        return {
            "interrupted": len(interrupted_rows),
            "requeued": len(requeued_rows),
            "released": released.rowcount,
            "lost": lost,
        }

    async def _end_memory_only(
        self, conn: AsyncConnection, mine: sa.ColumnElement[bool], *, now: datetime, reason: str
    ) -> int:
        """End the memory-only tasks among ``mine`` (running or pending) as
        ``interrupted``: nothing stored can run them again. Returns how many."""
        why = f"{reason}; {MEMORY_ONLY_LOST}"
        memory = tasks.c.payload.startswith(MEMORY_ONLY, autoescape=True)
        ended = 0
        for status in ("running", "pending"):
            rows = list(
                await conn.execute(
                    tasks.update()
                    .where(mine, memory, tasks.c.status == status)
                    .values(status="interrupted", finished_at=now, error=why, owner=None)
                    .returning(tasks.c.id, tasks.c.attempts)
                )
            )
            if status == "running":
                await _interrupt_attempts(conn, rows, now=now, why=why)
            ended += len(rows)
        return ended

    # -- schedules -------------------------------------------------------------------------

    async def upsert_static_schedule(self, row: Row) -> RowMapping:
        """Create a static schedule, or refresh an existing one from code.

        An existing schedule keeps its ``next_run_at`` (and so its phase) unless its
        trigger changed; ``enabled`` (paused or not) is left as the database has it.
        """
        async with self.write() as conn:
            # Several processes may start at once: insert-if-absent is one statement, so
            # the loser of the race updates the winner's row instead of failing.
            if await self._insert_schedule_if_absent(conn, row):
                query = sa.select(schedules).where(schedules.c.name == row["name"])
                return (await conn.execute(query)).mappings().one()
            query = sa.select(schedules).where(schedules.c.name == row["name"]).with_for_update()
            existing = (await conn.execute(query)).mappings().one()
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == existing["id"])
                .values(**_refreshed(existing, row))
            )
            return (await conn.execute(query)).mappings().one()

    async def _insert_schedule_if_absent(self, conn: AsyncConnection, row: Row) -> bool:
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(schedules)
        result = await conn.execute(
            insert.values(**row).on_conflict_do_nothing(index_elements=["name"])
        )
        return result.rowcount == 1

    async def due_schedules(self, *, now: datetime, limit: int = 100) -> list[RowMapping]:
        """Enabled schedules whose next run is due, earliest first."""
        query = (
            sa.select(schedules)
            .where(schedules.c.enabled.is_(True), schedules.c.next_run_at <= now)
            .order_by(schedules.c.next_run_at)
            .limit(limit)
        )
        async with self.read() as conn:
            return list((await conn.execute(query)).mappings())

    async def next_schedule_due(self) -> datetime | None:
        """The earliest ``next_run_at`` of any enabled schedule."""
        query = sa.select(sa.func.min(schedules.c.next_run_at)).where(schedules.c.enabled.is_(True))
        async with self.read() as conn:
            due: datetime | None = await conn.scalar(query)
            return due

    async def fire_schedule(
        self,
        *,
        schedule_id: str,
        slot: datetime,
        next_run_at: datetime,
        now: datetime,
        task_row: Row | None,
        skip_if_active: bool = False,
    ) -> tuple[bool, bool]:
        """Advance a schedule from ``slot`` to ``next_run_at`` and insert the slot's task
        (None: the slot is skipped), in one transaction.

        The update only matches while ``next_run_at`` still equals ``slot``, so among
        any number of processes exactly one fires each slot. With ``skip_if_active`` the
        task is not inserted while an earlier run of the schedule is pending or running.
        Returns ``(advanced, inserted)``.
        """
        async with self.write() as conn:
            result = await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id, schedules.c.next_run_at == slot)
                .values(next_run_at=next_run_at, updated_at=now)
            )
            if result.rowcount != 1:
                return False, False
            if task_row is None or (skip_if_active and await _has_active_run(conn, schedule_id)):
                return True, False
            await conn.execute(tasks.insert(), [task_row])
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id)
                .values(last_run_at=now, last_task_id=task_row["id"])
            )
        return True, True

    async def create_schedule(self, row: Row) -> bool:
        """Insert a schedule; False when its name is taken."""
        async with self.write() as conn:
            return await self._insert_schedule_if_absent(conn, row)

    async def delete_schedule(self, name: str) -> RowMapping | None:
        """Delete the dynamic schedule ``name``; returns the row as it was (a static row
        is returned but not deleted), or None when there is no such schedule."""
        async with self.write() as conn:
            query = sa.select(schedules).where(schedules.c.name == name)
            row = (await conn.execute(query)).mappings().first()
            if row is not None and row["kind"] == "dynamic":
                await conn.execute(schedules.delete().where(schedules.c.id == row["id"]))
            return row

    async def set_schedule_enabled(
        self, name: str, *, enabled: bool, next_run_at: datetime | None, now: datetime
    ) -> bool:
        """Pause or resume a schedule (resuming sets a fresh ``next_run_at``)."""
        values: dict[str, object] = {"enabled": enabled, "updated_at": now}
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        async with self.write() as conn:
            result = await conn.execute(
                schedules.update().where(schedules.c.name == name).values(**values)
            )
            return result.rowcount == 1

    async def get_schedule(self, name: str) -> RowMapping | None:
        """The schedule called ``name``, or None."""
        async with self.read() as conn:
            query = sa.select(schedules).where(schedules.c.name == name)
            return (await conn.execute(query)).mappings().first()

    async def list_schedules(self) -> list[RowMapping]:
        """Every schedule, by name."""
        async with self.read() as conn:
            query = sa.select(schedules).order_by(schedules.c.name)
            return list((await conn.execute(query)).mappings())

    async def running_schedule_ids(self) -> set[str]:
        """Ids of the schedules that have a run in status ``running``."""
        query = (
            sa.select(tasks.c.schedule_id)
            .where(tasks.c.schedule_id.is_not(None), tasks.c.status == "running")
            .distinct()
        )
        async with self.read() as conn:
            return set((await conn.scalars(query)).all())

    async def schedule_runs(self, schedule_id: str, *, limit: int) -> list[RowMapping]:
        """Start and finish times of the newest ``limit`` finished runs of a schedule,
        oldest first."""
        query = (
            sa.select(tasks.c.started_at, tasks.c.finished_at)
            .where(
                tasks.c.schedule_id == schedule_id,
                tasks.c.status.in_(TERMINAL_STATUSES),
                tasks.c.started_at.is_not(None),
                tasks.c.finished_at.is_not(None),
            )
            .order_by(tasks.c.finished_at.desc(), tasks.c.id)
            .limit(limit)
        )
        async with self.read() as conn:
            return list(reversed(list((await conn.execute(query)).mappings())))

    async def clear_schedule_runs(self, schedule_id: str) -> int:
        """Delete the finished runs of a schedule (with their logs and attempts)."""
        async with self.write() as conn:
            result = await conn.execute(
                tasks.delete().where(
                    tasks.c.schedule_id == schedule_id, tasks.c.status.in_(TERMINAL_STATUSES)
                )
            )
            return result.rowcount

    # -- retention and meta ------------------------------------------------------------

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

    async def get_meta(self, key: str) -> str | None:
        """A value from the meta table, or None."""
        async with self.read() as conn:
            return await conn.scalar(sa.select(meta.c.value).where(meta.c.key == key))

    async def set_meta(self, key: str, value: str, *, now: datetime) -> None:
        """Insert or replace a value in the meta table."""
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(meta)
        statement = insert.values(key=key, value=value, updated_at=now).on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at": now}
        )
        async with self.write() as conn:
            await conn.execute(statement)


# -- helpers ---------------------------------------------------------------------------


@asynccontextmanager
async def _maybe(lock: asyncio.Lock | None) -> AsyncIterator[None]:
    if lock is None:
        yield
        return
    async with lock:
        yield


_TRIGGER_FIELDS = ("cron", "every", "timezone")


def _refreshed(existing: RowMapping, row: Row) -> dict[str, object]:
    """Columns to update when code re-declares an existing schedule."""
    values = {
        key: row[key]
        for key in (
            "func_name",
            "kind",
            "payload",
            "options",
            "description",
            "tags",
            "group_name",
            "updated_at",
        )
    }
    values.update({key: row[key] for key in _TRIGGER_FIELDS})
    if any(existing[key] != row[key] for key in _TRIGGER_FIELDS) or existing["next_run_at"] is None:
        values["next_run_at"] = row["next_run_at"]
    return values


async def _has_active_run(conn: AsyncConnection, schedule_id: str) -> bool:
    active = await conn.scalar(
        sa.select(tasks.c.id)
        .where(
            tasks.c.schedule_id == schedule_id,
            # Literal SQL, not bound parameters: only then can the planner see that the
            # query implies the predicate of the partial (schedule, slot) index.
            _SCHEDULED_RUN,
            tasks.c.status.in_(("pending", "running")),
        )
        .limit(1)
    )
    return active is not None


def _without_flags(row: Row) -> dict[str, object]:
    return {key: value for key, value in row.items() if not key.startswith("_")}


async def _live_task_with_key(conn: AsyncConnection, key: str) -> str | None:
    return await conn.scalar(
        sa.select(tasks.c.id).where(
            tasks.c.idempotency_key == key,
            _LIVE_KEY,  # literal: matches the partial index
        )
    )


def _group_starts(ops: Sequence[Op[Row]]) -> list[tuple[str, datetime, list[str]]]:
    groups: dict[str, tuple[datetime, list[str]]] = {}
    for op in ops:
        start = op.data
        groups.setdefault(start["owner"], (start["started_at"], []))[1].append(start["id"])
    return [(instance, now, ids) for instance, (now, ids) in groups.items()]


async def _record_attempt_starts(
    conn: AsyncConnection, attempts: dict[str, int], *, instance: str, now: datetime
) -> None:
    if not attempts:
        return
    rows = [
        {
            "task_id": task_id,
            "attempt": attempt,
            "instance": instance,
            "started_at": now,
            "status": "running",
        }
        for task_id, attempt in attempts.items()
    ]
    await conn.execute(task_attempts.insert(), rows)


async def _interrupt_attempts(
    conn: AsyncConnection, rows: Sequence[sa.Row[Any]], *, now: datetime, why: str
) -> None:
    if not rows:
        return
    await conn.execute(
        task_attempts.update()
        .where(
            task_attempts.c.task_id == sa.bindparam("b_id"),
            task_attempts.c.attempt == sa.bindparam("b_attempt"),
        )
        .values(status="interrupted", finished_at=now, error=why),
        [{"b_id": row.id, "b_attempt": row.attempts} for row in rows],
    )


def _finish_params(update: Row) -> dict[str, object]:
    status = update["status"]
    return {
        "b_id": update["id"],
        "b_attempt": update["attempt"],
        "b_status": status,
        "b_attempt_status": "failed" if status == "pending" else status,
        "b_result": update.get("result"),
        "b_error": update.get("error"),
        "b_traceback": update.get("traceback"),
        "b_finished_at": update["finished_at"],
        "b_task_finished_at": None if status == "pending" else update["finished_at"],
        "b_next_attempt_at": update.get("next_attempt_at") or update["finished_at"],
        "b_owner": update["owner"],
    }


class Listener:
    """A PostgreSQL connection kept open for ``LISTEN``, reopened when it drops."""

    def __init__(self, store: SQLStore, on_notify: Callable[[str], None]) -> None:
        self._store = store
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first connection listens (or failed once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="taskflow-listen")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ready.wait()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect below
                _log.warning("taskflow listener lost its connection (%s); reconnecting", exc)
            self._ready.set()
            await asyncio.sleep(LISTEN_RETRY)
            self._on_notify("reconnected")  # anything may have been missed meanwhile

    async def _listen_until_lost(self) -> None:
        lost = asyncio.Event()
        async with self._store.require_engine().connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection  # asyncpg: untyped
            assert raw is not None  # a connection checked out just now is open
            raw.add_termination_listener(lambda _c: lost.set())
            await raw.add_listener(NOTIFY_CHANNEL, self._deliver)
            self._ready.set()
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(Exception):
                    await raw.remove_listener(NOTIFY_CHANNEL, self._deliver)
        raise ConnectionError("listening connection closed")

    def _deliver(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def close(self) -> None:
        """Stop listening and release the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


_log = logging.getLogger("taskflow._store")
