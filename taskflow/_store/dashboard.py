"""The dashboard's queries: keyset pages, capped counts, chart buckets, audit, sessions.

Every statement the TaskAdmin dashboard runs lives here, on top of the
:class:`~taskflow._store.sql.SQLStore` transactions (``read()``/``write()``). Lists are
keyset-paginated and counts are capped, so a page costs the same with a thousand rows as
with a million; nothing here loads more than one page (or one bounded sample) at a time.
The one exception is :meth:`DashboardStore.exact_status_counts` (``GET /tasks/metrics``),
which counts index entries of every status: no rows are read, but its cost grows with
the table. Text searches use the trigram indexes of :mod:`taskflow._store.search`.

Rows leave as the typed records of :mod:`taskflow._store.rows`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.admin_schema import audit, sessions
from taskflow._store.ids import task_id_forms
from taskflow._store.rows import (
    AuditRow,
    FinishedRun,
    InstanceRow,
    LogRow,
    LogSearchRow,
    NewAuditEntry,
    SessionRow,
    TaskSummary,
    TaskSummaryWithPayload,
)
from taskflow._store.schema import (
    ERRORS_INDEXED_UNTIL,
    LOGS_FTS,
    TASKS_FTS,
    TERMINAL_STATUSES,
    UTCDateTime,
    instances,
    meta,
    schedules,
    task_logs,
    tasks,
)
from taskflow._store.search import (
    DISTINCT_FUNCTIONS,
    FTS_TABLES,
    MANY_MATCHES,
    MIN_INDEXED,
    Candidates,
    LogSearch,
    TaskSearch,
    fts_candidates,
    pg_error_candidates,
)
from taskflow._store.sql import SQLStore

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]
# What a task list is sorted by: a time, or a duration in seconds.
SortKey = sa.ColumnElement[datetime] | sa.ColumnElement[float]

SORTS = ("created", "started", "finished", "duration")
SCAN_COUNT_CAP = 1000
# A text search matching at most this many tasks reads them through its indexes and
# sorts them; one matching more reads rows in page order, where matches are common
# enough to fill a page soon.
FEW_MATCHES = 2000
# SQLite: a trigram in at most this many errors is rare enough to look a text up by.
RARE_MATCHES = 10_000
# The same for log lines, whose page order is the FTS5 table's own (by id).
FEW_LINES = 20_000
# SQLite: how far before the finish time it has reached a search re-reads finished
# tasks for the error index (see DashboardStore._index_new_errors).
CATCH_UP_SLACK = timedelta(seconds=10)
# The statuses of finished tasks that carry an error.
ERROR_STATUSES = tuple(status for status in TERMINAL_STATUSES if status != "success")
_ROWID: sa.ColumnElement[int] = sa.literal_column(f"{tasks.name}.rowid")
# How long the number of candidates of a task search is kept (seconds), and for how
# many searches.
CANDIDATES_TTL = 2.0
CANDIDATES_KEPT = 64
# Log lines filtered by function: with at most this many tasks, the function's tasks
# lead (their lines are few enough to sort); with more, lines are read newest first and
# each one's task checked, which stops as soon as a page is full.
FEW_TASKS = 2000
FINAL_STATUSES = ("success", "failed", "cancelled", "interrupted", "rejected")

# The columns a list needs: never the payload, result or traceback of a whole page.
_LIST_COLUMNS = (
    tasks.c.id,
    tasks.c.func_name,
    tasks.c.status,
    tasks.c.queue,
    tasks.c.source,
    tasks.c.tags,
    tasks.c.priority,
    tasks.c.attempts,
    tasks.c.max_retries,
    tasks.c.error,
    tasks.c.owner,
    tasks.c.schedule_id,
    tasks.c.idempotency_key,
    tasks.c.encrypted,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a list shows. Empty fields do not filter.

    Attributes:
        statuses: any of these statuses.
        func_name, queue, source: exact matches.
        tag: ``(key, value)``: the task's tag ``key`` equals ``value``.
        since, until: ``created_at`` in ``[since, until]``.
        search: a task id, or text found in the function name or the error (see
            :mod:`taskflow._store.search`).
    """

    statuses: tuple[str, ...] = ()
    func_name: str | None = None
    queue: str | None = None
    source: str | None = None
    tag: tuple[str, str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """A keyset position: the sort value of a row and its id (the tie-breaker)."""

    value: datetime | float
    id: str


@dataclass(slots=True)
class Page:
    """One page of tasks, with the cursors of the pages around it (None: no such page).

    ``rows`` are :class:`TaskSummaryWithPayload` records when the page was read
    ``with_payload``."""

    rows: list[TaskSummary]
    newer: Cursor | None = None
    older: Cursor | None = None


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which log lines a log search shows. Empty fields do not filter.

    ``text`` is found in the message or in the key or value of a structured field,
    except fields whose key contains one of ``hidden_fields`` (see
    :mod:`taskflow._store.search`)."""

    text: str | None = None
    level: str | None = None
    func_name: str | None = None
    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    hidden_fields: tuple[str, ...] = ()


@dataclass(slots=True)
class Buckets:
    """Finished tasks per time bucket and status: ``counts[status][i]`` is the count
    of bucket ``i``, which starts at ``start + i * size`` seconds."""

    start: datetime
    size: int
    count: int
    counts: dict[str, list[int]] = field(default_factory=dict)


class DashboardStore:
    """The dashboard's reads and writes, through ``store``'s transactions.

    Args:
        store: the manager's open :class:`SQLStore` (``task_manager.db``).
    """

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        self._fts: frozenset[str] | None = None  # SQLite's FTS5 tables, once looked up
        self._candidates: dict[str, tuple[float, Candidates | None]] = {}

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._store.dialect

    # -- task lists ----------------------------------------------------------------

    async def page_tasks(
        self,
        filters: TaskFilter,
        *,
        sort: str = "created",
        after: Cursor | None = None,
        before: Cursor | None = None,
        limit: int = 50,
        with_payload: bool = False,
    ) -> Page:
        """One page of tasks, newest (or longest) first.

        ``after`` continues towards older rows; ``before`` goes back towards newer ones.
        Sorting by ``started``, ``finished`` or ``duration`` leaves out tasks without
        those times. A text search that matches few tasks reads them through its indexes
        (see :data:`FEW_MATCHES`); one that matches more is checked row by row in page
        order.

        Raises:
            ValueError: ``sort`` is not one of :data:`SORTS`.
        """
        key = self._sort_key(sort)
        columns = [*_LIST_COLUMNS, key.label("sort_value")]
        if with_payload:
            columns += [tasks.c.payload, tasks.c.result]
        backwards = before is not None
        cursor = before if backwards else after
        search = await self._task_search(filters.search)
        driven = search is not None and await self._few_matches(search)

        def branch(part: TaskFilter) -> sa.Select[*tuple[Any, ...]]:
            where = [*self._conditions(part), *_sort_present(sort)]
            if search is not None:
                where = self._searched(search, where, driven=driven)
            query = sa.select(*columns).where(*where)
            if cursor is not None:
                position = sa.tuple_(key, tasks.c.id)
                bound = sa.tuple_(_bind(cursor.value, sort), sa.literal(cursor.id))
                query = query.where(position > bound if backwards else position < bound)
            return query.order_by(*_order(key, tasks.c.id, backwards)).limit(limit + 1)

        if len(filters.statuses) > 1:
            # One index range per status, merged: no sort of every matching row.
            parts = [
                branch(replace(filters, statuses=(status,))).subquery()
                for status in filters.statuses
            ]
            merged = sa.union_all(*(sa.select(part) for part in parts)).subquery()
            query = (
                sa.select(merged)
                .order_by(*_order(merged.c.sort_value, merged.c.id, backwards))
                .limit(limit + 1)
            )
        else:
            query = branch(filters)
        async with self._store.read() as conn:
            rows = list((await conn.execute(query)).mappings())
        record = TaskSummaryWithPayload.of if with_payload else TaskSummary.of
        return _page(rows, limit=limit, backwards=backwards, cursor=cursor, record=record)

    async def count_tasks(self, filters: TaskFilter, *, cap: int, sort: str = "created") -> int:
        """Tasks matching ``filters`` (and having the times ``sort`` needs), counting at
        most ``cap + 1`` of them: a result above ``cap`` means "more than cap".

        A text search with indexes counts each of its parts (id, function names,
        error) through its own index, up to ``cap + 1`` each, and the distinct tasks of
        all of them."""
        search = await self._task_search(filters.search)
        if search is not None and search.indexed:
            where = [*self._conditions(filters), *_sort_present(sort)]
            if await self._few_matches(search):
                found = sa.select(tasks.c.id).where(*self._searched(search, where, driven=True))
                query = sa.select(sa.func.count()).select_from(found.limit(cap + 1).subquery())
                async with self._store.read() as conn:
                    return int(await conn.scalar(query) or 0)
            return await self._count_found(search, where, cap=cap)
        parts = [replace(filters, statuses=(status,)) for status in filters.statuses] or [filters]
        total = 0
        async with self._store.read() as conn:
            for part in parts:
                conditions = [*self._conditions(part), *_sort_present(sort)]
                if search is not None:
                    conditions.append(search.matches())
                inner = sa.select(sa.literal(1)).select_from(tasks).where(*conditions)
                query = sa.select(sa.func.count()).select_from(inner.limit(cap + 1).subquery())
                total += int(await conn.scalar(query) or 0)
        return min(total, cap + 1)

    @staticmethod
    def count_cap(filters: TaskFilter, cap: int) -> int:
        """The cap to count ``filters`` with: filters that read rows one by one (text
        search, tags, queue, source) count at most 1,000. A text search finds its
        candidates through indexes, but checks each of them in its row."""
        unindexed = filters.search or filters.tag or filters.queue or filters.source
        return min(cap, SCAN_COUNT_CAP) if unindexed else cap

    async def _task_search(self, text: str | None) -> TaskSearch | None:
        """``text`` made a :class:`TaskSearch` (None for no search), with the stored
        function names and what the error's text index finds."""
        if not text or not text.strip():
            return None
        if TaskSearch.is_id(text):
            return TaskSearch.of(text, (), dialect=self.dialect)
        async with self._store.read() as conn:
            names = list(await conn.scalars(DISTINCT_FUNCTIONS))
            indexed = TASKS_FTS in await self._fts_tables(conn)
        if indexed and TaskSearch.uses_index(text):
            await self._index_new_errors()
        async with self._store.read() as conn:
            found = await self._error_candidates(conn, text.strip())
        return TaskSearch.of(text, names, dialect=self.dialect, found=found)

    async def _index_new_errors(self) -> None:
        """SQLite: add to the FTS5 table the errors of the tasks finished since the
        searches last did, and drop the entries of tasks deleted below the oldest one.

        A search does this instead of a trigger: any trigger on the task table makes
        SQLite keep a statement journal for every insert and finish of a task, a third
        more CPU for a no-op task. The finish time reached is kept in ``taskflow_meta``
        (:data:`~taskflow._store.schema.ERRORS_INDEXED_UNTIL`); the last
        :data:`CATCH_UP_SLACK` before it are read again, since a finish is stamped before
        it commits and processes' clocks differ. An entry that a task no longer matches
        (its error changed, or it was deleted) costs a candidate, never a result: every
        candidate is checked in its row."""
        async with self._store.read() as conn:
            mark = _moment(await _meta_value(conn, ERRORS_INDEXED_UNTIL))
            query = sa.select(_ROWID.label("rowid"), tasks.c.error, tasks.c.finished_at).where(
                tasks.c.status.in_(ERROR_STATUSES), tasks.c.error.is_not(None)
            )
            if mark is not None:
                query = query.where(tasks.c.finished_at > mark - CATCH_UP_SLACK)
            rows = (await conn.execute(query)).all()
        finished = [row.finished_at for row in rows if row.finished_at is not None]
        if not finished or (mark is not None and max(finished) <= mark):
            return
        newest = max(finished)
        async with self._store.write() as conn:
            await conn.exec_driver_sql(
                f"INSERT OR REPLACE INTO {TASKS_FTS} (rowid, error) VALUES (?, ?)",
                [(row.rowid, row.error) for row in rows],
            )
            await conn.exec_driver_sql(
                f"DELETE FROM {TASKS_FTS} WHERE rowid < (SELECT min(rowid) FROM {tasks.name})"
            )
            now = datetime.now(UTC)
            statement = sqlite.insert(meta).values(
                key=ERRORS_INDEXED_UNTIL, value=newest.isoformat(), updated_at=now
            )
            update = {"value": newest.isoformat(), "updated_at": now}
            await conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_=update))

    async def _error_candidates(self, conn: AsyncConnection, text: str) -> Candidates | None:
        """What the error's text index finds for ``text`` (None: no index to ask).

        Kept for :data:`CANDIDATES_TTL` seconds: a page and its count ask twice in one
        request. The figure only picks the shape of the queries, never their result."""
        if not TaskSearch.uses_index(text):
            return None
        now = time.monotonic()
        cached = self._candidates.get(text)
        if cached is not None and now - cached[0] < CANDIDATES_TTL:
            return cached[1]
        found: Candidates | None = None
        if self.dialect == "postgresql":
            found = await pg_error_candidates(conn, text, cap=FEW_MATCHES)
        elif TASKS_FTS in await self._fts_tables(conn):
            found = await fts_candidates(conn, TASKS_FTS, text, rare=RARE_MATCHES, cap=MANY_MATCHES)
        if len(self._candidates) >= CANDIDATES_KEPT:
            self._candidates.clear()
        self._candidates[text] = (now, found)
        return found

    def _searched(
        self, search: TaskSearch, where: list[Condition], *, driven: bool
    ) -> list[Condition]:
        """``where`` and the search, in the shape of the plan: ``driven``, the tasks the
        search's indexes find (:meth:`TaskSearch.candidates`), on SQLite with the other
        filters hidden from the planner (without statistics it would walk their index
        instead); else rows in page order (:meth:`TaskSearch.walk`)."""
        if not driven:
            return [*where, search.walk()]
        if self.dialect == "postgresql":
            return [*where, tasks.c.id.in_(search.candidates()), search.matches()]
        rowid: sa.ColumnElement[int] = sa.literal_column(f"{tasks.name}.rowid")
        hidden = [sa.func.coalesce(sa.and_(*where), sa.false())] if where else []
        return [*hidden, rowid.in_(search.candidates()), search.matches()]

    async def _few_matches(self, search: TaskSearch) -> bool:
        """The search matches at most :data:`FEW_MATCHES` tasks in all (counted through
        its indexes, whatever the other filters), so a page reads them and sorts them."""
        if search.found is None or search.found.count > FEW_MATCHES:
            return False
        others = replace(search, error=False)  # the id and function name parts
        if not others.parts():
            return True
        counted = _found(others, (), limit=FEW_MATCHES + 1).subquery()
        query = sa.select(sa.func.count()).select_from(counted)
        async with self._store.read() as conn:
            rest = int(await conn.scalar(query) or 0)
        return search.found.count + rest <= FEW_MATCHES

    async def _count_found(self, search: TaskSearch, where: list[Condition], *, cap: int) -> int:
        """Distinct tasks matching ``search`` and ``where``, counted up to ``cap + 1``
        through the indexes of the search's parts."""
        postgresql = self.dialect == "postgresql"
        found = _found(search, where, limit=cap + 1, error_first=postgresql).subquery()
        query = sa.select(sa.func.count()).select_from(found)
        async with self._store.read() as conn:
            return min(int(await conn.scalar(query) or 0), cap + 1)

    async def _fts_tables(self, conn: AsyncConnection) -> frozenset[str]:
        """SQLite: the FTS5 tables of revision 0006 that exist (looked up once)."""
        if self.dialect != "sqlite":
            return frozenset()
        if self._fts is None:
            self._fts = frozenset(await conn.scalars(FTS_TABLES))
        return self._fts

    async def status_counts(self, statuses: Sequence[str], *, cap: int) -> dict[str, int]:
        """Tasks in each status, each count capped at ``cap + 1`` (one index range each)."""
        counts: dict[str, int] = {}
        async with self._store.read() as conn:
            for status in statuses:
                inner = (
                    sa.select(sa.literal(1))
                    .select_from(tasks)
                    .where(tasks.c.status == status)
                    .limit(cap + 1)
                )
                query = sa.select(sa.func.count()).select_from(inner.subquery())
                counts[status] = int(await conn.scalar(query) or 0)
        return counts

    async def exact_status_counts(self, statuses: Sequence[str]) -> dict[str, int]:
        """Tasks in each of ``statuses``, exactly, in one statement (one snapshot).

        Each status is a scalar ``count(*)`` over its range of an index that leads with
        or covers ``status`` (``(status, finished_at)``; on PostgreSQL also
        ``(owner, status)``, whose NULL owners deduplicate to a small index), read
        without touching the table: about 50 ms for a million tasks (bench/analysis.md,
        "Exact metrics").
        """
        if not statuses:
            return {}
        columns = [
            sa.select(sa.func.count())
            .select_from(tasks)
            .where(tasks.c.status == status)
            .scalar_subquery()
            .label(f"c{index}")
            for index, status in enumerate(statuses)
        ]
        async with self._store.read() as conn:
            row = (await conn.execute(sa.select(*columns))).one()
        return {status: int(row[index] or 0) for index, status in enumerate(statuses)}

    async def owned_counts(
        self, instance_ids: Sequence[str], *, cap: int
    ) -> dict[tuple[str, str], int]:
        """Pending and running tasks of each instance, capped like :meth:`count_tasks`."""
        counts: dict[tuple[str, str], int] = {}
        async with self._store.read() as conn:
            for instance in instance_ids:
                for status in ("pending", "running"):
                    inner = (
                        sa.select(sa.literal(1))
                        .select_from(tasks)
                        .where(tasks.c.owner == instance, tasks.c.status == status)
                        .limit(cap + 1)
                    )
                    query = sa.select(sa.func.count()).select_from(inner.subquery())
                    counts[(instance, status)] = int(await conn.scalar(query) or 0)
        return counts

    async def unowned_pending(self, *, cap: int) -> int:
        """Pending tasks no instance owns (claimable by any), capped."""
        inner = (
            sa.select(sa.literal(1))
            .select_from(tasks)
            .where(tasks.c.owner.is_(None), tasks.c.status == "pending")
            .limit(cap + 1)
        )
        async with self._store.read() as conn:
            query = sa.select(sa.func.count()).select_from(inner.subquery())
            return int(await conn.scalar(query) or 0)

    async def statuses_of(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of ``task_ids`` that exists."""
        ids = [task_id for task_id in task_ids if task_id]
        if not ids:
            return {}
        query = sa.select(tasks.c.id, tasks.c.status).where(tasks.c.id.in_(ids))
        async with self._store.read() as conn:
            return {row.id: row.status for row in await conn.execute(query)}

    def _sort_key(self, sort: str) -> SortKey:
        if sort == "created":
            return tasks.c.created_at
        if sort == "started":
            return tasks.c.started_at
        if sort == "finished":
            return tasks.c.finished_at
        if sort == "duration":
            return self._duration()
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")

    def _duration(self) -> sa.ColumnElement[float]:
        """Seconds from start to finish, as a SQL expression of this dialect."""
        if self.dialect == "postgresql":
            # double precision, so a cursor's float compares equal to the row's value
            return sa.cast(
                sa.func.extract("epoch", tasks.c.finished_at - tasks.c.started_at), sa.Float
            )
        return (sa.func.julianday(tasks.c.finished_at) - sa.func.julianday(tasks.c.started_at)) * (
            86400.0
        )

    def _conditions(self, filters: TaskFilter) -> list[Condition]:
        conditions: list[Condition] = []
        if filters.statuses:
            conditions.append(
                tasks.c.status == filters.statuses[0]
                if len(filters.statuses) == 1
                else tasks.c.status.in_(list(filters.statuses))
            )
        for column, value in (
            (tasks.c.func_name, filters.func_name),
            (tasks.c.queue, filters.queue),
            (tasks.c.source, filters.source),
        ):
            if value is not None:
                conditions.append(column == value)
        if filters.tag is not None:
            conditions.append(self._tag_condition(*filters.tag))
        if filters.since is not None:
            conditions.append(tasks.c.created_at >= filters.since)
        if filters.until is not None:
            conditions.append(tasks.c.created_at <= filters.until)
        return conditions

    def _tag_condition(self, key: str, value: str) -> Condition:
        """The task's tag ``key`` equals ``value``, for any key. SQLite's JSON paths
        cannot name every key (one with a quote, a backslash or a non-ASCII letter finds
        nothing or fails), so there the tags are read as key/value pairs."""
        if self.dialect == "sqlite":
            pairs = sa.func.json_each(tasks.c.tags).table_valued("key", "value")
            return sa.exists().where(pairs.c.key == key, pairs.c.value == value)
        tag: Condition = tasks.c.tags[key].as_string() == value
        return tag

    # -- charts and statistics -----------------------------------------------------

    async def finished_buckets(
        self, *, start: datetime, size: int, count: int, statuses: Sequence[str]
    ) -> Buckets:
        """Tasks that finished in ``statuses`` per ``size``-second bucket from ``start``.

        Each bucket is one range count on the (status, finished_at) index: counting
        index entries is many times cheaper than grouping them by a computed bucket."""
        edges = [start + timedelta(seconds=size * index) for index in range(count + 1)]
        result = Buckets(start=start, size=size, count=count)
        params = {f"edge_{index}": edge for index, edge in enumerate(edges)}
        async with self._store.read() as conn:
            for status in statuses:
                counts = [0] * count
                for index, total in await conn.execute(_bucket_counts(status, count), params):
                    counts[int(index)] = int(total)
                result.counts[status] = counts
        return result

    async def recent_finished(
        self, *, statuses: Sequence[str], limit: int, func_name: str | None = None
    ) -> list[FinishedRun]:
        """The ``limit`` most recently finished tasks in ``statuses`` (of one function,
        when given)."""
        conditions: list[Condition] = [tasks.c.finished_at.is_not(None)]
        if func_name is not None:
            conditions.append(tasks.c.func_name == func_name)
        else:
            conditions.append(tasks.c.status.in_(list(statuses)))
        query = (
            sa.select(tasks.c.func_name, tasks.c.status, tasks.c.started_at, tasks.c.finished_at)
            .where(*conditions)
            .order_by(tasks.c.finished_at.desc())
            .limit(limit)
        )
        async with self._store.read() as conn:
            runs = [FinishedRun.of(row) for row in (await conn.execute(query)).mappings()]
        if func_name is not None:
            runs = [run for run in runs if run.status in statuses]
        return runs

    # -- logs ------------------------------------------------------------------------

    async def page_logs(
        self, filters: LogFilter, *, before_id: int | None = None, limit: int = 100
    ) -> tuple[list[LogSearchRow], int | None]:
        """Log lines matching ``filters``, newest first, with their task's function.

        Returns the lines and the cursor of the next (older) page, or None."""
        query = sa.select(
            task_logs.c.id,
            task_logs.c.task_id,
            task_logs.c.at,
            task_logs.c.level,
            task_logs.c.message,
            task_logs.c.extra,
            tasks.c.func_name,
        ).select_from(task_logs.join(tasks, tasks.c.id == task_logs.c.task_id))
        conditions = _log_conditions(replace(filters, func_name=None, text=None))
        if before_id is not None:
            conditions.append(task_logs.c.id < before_id)
        if filters.text:
            conditions += await self._log_text(filters.text, filters.hidden_fields)
        if filters.func_name:
            query = query.where(*conditions, await self._function_lines(filters.func_name))
        else:
            # The page's lines first, then their tasks: joined before the LIMIT, every
            # line a text index finds would be joined (PostgreSQL does that).
            page = sa.select(task_logs.c.id).where(*conditions)
            page = page.order_by(task_logs.c.id.desc()).limit(limit + 1)
            query = query.where(task_logs.c.id.in_(page))
        query = query.order_by(task_logs.c.id.desc()).limit(limit + 1)
        async with self._store.read() as conn:
            lines = [LogSearchRow.of(row) for row in (await conn.execute(query)).mappings()]
        more = len(lines) > limit
        lines = lines[:limit]
        return lines, (lines[-1].id if more and lines else None)

    async def _log_text(self, text: str, hidden_fields: tuple[str, ...]) -> list[Condition]:
        """The conditions of a log text search (:class:`LogSearch`). On SQLite, when the
        FTS5 table finds at most :data:`FEW_LINES` lines that may match, the search
        reads only those; with more, matches are common and lines are read newest first
        until a page is full. PostgreSQL's planner picks between its trigram indexes and
        that walk itself."""
        search = LogSearch(text, hidden_fields, self.dialect)
        if len(text) < MIN_INDEXED:
            return [search.matches()]
        async with self._store.read() as conn:
            if LOGS_FTS not in await self._fts_tables(conn):
                return [search.matches()]
            found = await fts_candidates(conn, LOGS_FTS, text, rare=FEW_LINES, cap=FEW_LINES)
        if found.count > FEW_LINES:
            return [search.matches()]
        return [search.candidates(found), search.matches()]

    async def _function_lines(self, func_name: str) -> Condition:
        """The condition "the line's task runs ``func_name``", in the shape that lets the
        database read the fewest rows.

        As a join condition, SQLite starts from the function's tasks and sorts all their
        lines: fast for a rare function, seconds for one with 300,000 tasks. As a
        correlated EXISTS it reads lines newest first and looks up each one's task by
        primary key until the page is full: fast for a common function, slow for a rare
        one. A capped count on the (function, created) index picks between the two.
        PostgreSQL's planner, which has statistics, gets the same shapes."""
        few = await self.count_tasks(TaskFilter(func_name=func_name), cap=FEW_TASKS)
        if few <= FEW_TASKS:
            return tasks.c.func_name == func_name
        owner = tasks.alias("line_task")
        return sa.exists().where(owner.c.id == task_logs.c.task_id, owner.c.func_name == func_name)

    async def task_logs(self, task_id: str, *, after_id: int = 0, limit: int = 500) -> list[LogRow]:
        """Log lines of one task after line ``after_id``, oldest first. With
        ``after_id=0`` these are the *last* ``limit`` lines (a long log shows its end)."""
        query = sa.select(task_logs).where(task_logs.c.task_id == _stored_id(task_id))
        if after_id:
            query = query.where(task_logs.c.id > after_id).order_by(task_logs.c.id).limit(limit)
            async with self._store.read() as conn:
                return [LogRow.of(row) for row in (await conn.execute(query)).mappings()]
        query = query.order_by(task_logs.c.id.desc()).limit(limit)
        async with self._store.read() as conn:
            newest_first = [LogRow.of(row) for row in (await conn.execute(query)).mappings()]
        return newest_first[::-1]

    # -- schedules and instances -----------------------------------------------------

    async def schedule_names(self, schedule_ids: Sequence[str]) -> dict[str, str]:
        """The name of each schedule id that exists."""
        ids = [schedule_id for schedule_id in schedule_ids if schedule_id]
        if not ids:
            return {}
        query = sa.select(schedules.c.id, schedules.c.name).where(schedules.c.id.in_(ids))
        async with self._store.read() as conn:
            return {row.id: row.name for row in await conn.execute(query)}

    async def instances(self) -> list[InstanceRow]:
        """Every registered instance, newest heartbeat first."""
        query = sa.select(instances).order_by(instances.c.heartbeat_at.desc())
        async with self._store.read() as conn:
            return [InstanceRow.of(row) for row in (await conn.execute(query)).mappings()]

    # -- audit -----------------------------------------------------------------------

    async def add_audit(self, entry: NewAuditEntry) -> None:
        """Record one action."""
        async with self._store.write() as conn:
            await conn.execute(audit.insert(), [entry.columns()])

    async def page_audit(
        self,
        *,
        before_id: int | None = None,
        limit: int = 50,
        target: str | None = None,
        actions: Sequence[str] = (),
    ) -> tuple[list[AuditRow], int | None]:
        """Audit entries, newest first; returns them and the next page's cursor."""
        query = sa.select(audit)
        if target is not None:
            query = query.where(audit.c.target == target)
        if actions:
            query = query.where(audit.c.action.in_(list(actions)))
        if before_id is not None:
            query = query.where(audit.c.id < before_id)
        query = query.order_by(audit.c.id.desc()).limit(limit + 1)
        async with self._store.read() as conn:
            entries = [AuditRow.of(row) for row in (await conn.execute(query)).mappings()]
        more = len(entries) > limit
        entries = entries[:limit]
        return entries, (entries[-1].id if more and entries else None)

    async def recent_actions(
        self, action: str, *, since: datetime, target: str | None = None, ip: str | None = None
    ) -> int:
        """How many ``action`` entries since ``since`` (for ``target`` or from ``ip``)."""
        query = sa.select(sa.func.count()).where(audit.c.action == action, audit.c.at >= since)
        if target is not None:
            query = query.where(audit.c.target == target)
        if ip is not None:
            query = query.where(audit.c.ip == ip)
        async with self._store.read() as conn:
            return int(await conn.scalar(query) or 0)

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, session: SessionRow, *, now: datetime) -> None:
        """Store a login session, dropping expired ones on the way."""
        async with self._store.write() as conn:
            await conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            await conn.execute(sessions.insert(), [session.columns()])

    async def get_session(self, session_id: str, *, now: datetime) -> SessionRow | None:
        """The unexpired session with this id (hash), or None."""
        query = sa.select(sessions).where(sessions.c.id == session_id, sessions.c.expires_at > now)
        async with self._store.read() as conn:
            found = (await conn.execute(query)).mappings().first()
        return None if found is None else SessionRow.of(found)

    async def delete_session(self, session_id: str) -> bool:
        """End a session everywhere; False if it did not exist."""
        async with self._store.write() as conn:
            result = await conn.execute(sessions.delete().where(sessions.c.id == session_id))
            return result.rowcount == 1

    # -- meta ------------------------------------------------------------------------

    async def meta_insert_if_absent(self, key: str, value: str, *, now: datetime) -> str:
        """Store ``value`` under ``key`` unless a value is there already; return the
        stored value. Two processes racing both get the first writer's value."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        statement = (
            dialect.insert(meta)
            .values(key=key, value=value, updated_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        async with self._store.write() as conn:
            await conn.execute(statement)
            return str(await _meta_value(conn, key))

    # -- a task's log tail, runs started by hand ---------------------------------------

    async def task_log_tail(
        self, task_id: str, *, level: str | None = None, limit: int = 500, cap: int = 100_000
    ) -> tuple[list[LogRow], int]:
        """The last ``limit`` log lines of one task (of one ``level`` when given, in any
        case), oldest first, and how many such lines it has, counted up to ``cap + 1``.
        Both read one range of the ``(task_id, id)`` index."""
        conditions: list[Condition] = [task_logs.c.task_id == _stored_id(task_id)]
        if level:
            conditions.append(sa.func.lower(task_logs.c.level) == level.lower())
        lines = sa.select(task_logs).where(*conditions).order_by(task_logs.c.id.desc())
        inner = sa.select(sa.literal(1)).select_from(task_logs).where(*conditions).limit(cap + 1)
        count = sa.select(sa.func.count()).select_from(inner.subquery())
        async with self._store.read() as conn:
            newest = [LogRow.of(row) for row in (await conn.execute(lines.limit(limit))).mappings()]
            total = int(await conn.scalar(count) or 0)
        return newest[::-1], total

    async def note_schedule_run(self, name: str, *, task_id: str, at: datetime) -> None:
        """Record ``task_id`` as the last run of schedule ``name`` (a run started by
        hand), unless a later run is recorded already."""
        newer = sa.or_(schedules.c.last_run_at.is_(None), schedules.c.last_run_at <= at)
        async with self._store.write() as conn:
            await conn.execute(
                schedules.update()
                .where(schedules.c.name == name, newer)
                .values(last_run_at=at, last_task_id=task_id)
            )


# -- helpers ---------------------------------------------------------------------------


async def _meta_value(conn: AsyncConnection, key: str) -> str | None:
    value: str | None = await conn.scalar(sa.select(meta.c.value).where(meta.c.key == key))
    return value


def _moment(text: str | None) -> datetime | None:
    """A UTC time written as ISO text (naive text is UTC, as SQLite stores it)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@functools.lru_cache(maxsize=32)
def _bucket_counts(status: str, count: int) -> sa.CompoundSelect[int, int]:
    """One query: ``(bucket index, count)`` for each of ``count`` consecutive ranges,
    whose edges are the parameters ``edge_0`` … ``edge_<count>``.

    Built once per status and bucket count: constructing a 60-part UNION in SQLAlchemy
    costs tens of milliseconds of Python, many times the query itself."""
    edges = [sa.bindparam(f"edge_{index}", type_=UTCDateTime()) for index in range(count + 1)]
    return sa.union_all(
        *(
            sa.select(sa.literal(index).label("bucket"), sa.func.count().label("n"))
            .select_from(tasks)
            .where(
                tasks.c.status == status,
                tasks.c.finished_at >= edges[index],
                tasks.c.finished_at < edges[index + 1],
            )
            for index in range(count)
        )
    )


def _sort_present(sort: str) -> list[Condition]:
    present: list[Condition] = []
    if sort in ("started", "duration"):
        present.append(tasks.c.started_at.is_not(None))
    if sort in ("finished", "duration"):
        present.append(tasks.c.finished_at.is_not(None))
    return present


def _order(
    key: SortKey, id_column: sa.ColumnElement[str], backwards: bool
) -> tuple[sa.UnaryExpression[datetime] | sa.UnaryExpression[float], sa.UnaryExpression[str]]:
    if backwards:
        return key.asc(), id_column.asc()
    return key.desc(), id_column.desc()


def _bind(
    value: datetime | float, sort: str
) -> sa.BindParameter[float] | sa.BindParameter[datetime]:
    if sort == "duration":
        if isinstance(value, datetime):
            raise TypeError("the cursor of a duration sort holds seconds, not a time")
        return sa.literal(float(value), sa.Float)
    return sa.literal(value, UTCDateTime())


def _found(
    search: TaskSearch,
    where: Sequence[Condition],
    *,
    limit: int | None = None,
    error_first: bool = False,
) -> sa.Select[tuple[str]] | sa.CompoundSelect[tuple[str]]:
    """The ids of the tasks matching ``search`` and ``where``: one select per part of
    the search, each read through that part's index (``limit`` rows at most), and the
    union of their ids. Not correlated: it reads the task table on its own.

    ``error_first``: the error part hides ``where`` from the planner, so that it reads
    the rows its text index finds and checks the filters there, instead of also reading
    (and intersecting) the whole range of a filter's index, such as every failed task."""
    selects: list[sa.Select[tuple[str]]] = []
    for index, part in enumerate(search.parts()):
        filters = list(where)
        if error_first and search.error and index == 0 and filters:
            filters = [sa.func.coalesce(sa.and_(*filters), sa.false())]
        select = sa.select(tasks.c.id).where(part, *filters).correlate(None)
        if limit is not None:  # a LIMIT inside a UNION needs a subquery of its own
            select = sa.select(select.limit(limit).subquery().c.id)
        selects.append(select)
    return selects[0] if len(selects) == 1 else sa.union(*selects)


def _stored_id(task_id: str) -> sa.ScalarSelect[str]:
    """The id ``task_id`` is stored under (either shape), as a scalar subquery.

    Log lines are then matched with ``=``: PostgreSQL plans ``task_id IN (a, b)`` with
    ``ORDER BY id LIMIT n`` as a backward walk of the whole log table, filtered (about
    0.9 s at 5,000,000 lines), and ``= (subquery)`` as a range of the
    ``(task_id, id)`` index."""
    return (
        sa.select(tasks.c.id).where(tasks.c.id.in_(task_id_forms(task_id))).limit(1)
    ).scalar_subquery()


def _log_conditions(filters: LogFilter) -> list[Condition]:
    conditions: list[Condition] = []
    if filters.level:
        conditions.append(sa.func.lower(task_logs.c.level) == filters.level.lower())
    if filters.func_name:
        conditions.append(tasks.c.func_name == filters.func_name)
    if filters.task_id:
        conditions.append(task_logs.c.task_id == _stored_id(filters.task_id))
    if filters.since is not None:
        conditions.append(task_logs.c.at >= filters.since)
    if filters.until is not None:
        conditions.append(task_logs.c.at <= filters.until)
    return conditions


def _page(
    rows: list[RowMapping],
    *,
    limit: int,
    backwards: bool,
    cursor: Cursor | None,
    record: Callable[[RowMapping], TaskSummary],
) -> Page:
    """The page of ``rows`` (read with one extra row, which only says that more
    follow), each made a record by ``record``; cursors come from the raw rows, whose
    ``sort_value`` no record keeps."""
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    page = Page(rows=[record(row) for row in rows])
    if not rows:
        return page
    first, last = rows[0], rows[-1]
    has_newer = more if backwards else cursor is not None
    has_older = True if backwards else more
    if has_newer:
        page.newer = Cursor(first["sort_value"], first["id"])
    if has_older:
        page.older = Cursor(last["sort_value"], last["id"])
    return page
