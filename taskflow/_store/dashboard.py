"""The dashboard's queries: task lists and their filters, keyset pages, capped counts,
instances; and :class:`DashboardStore`, which composes every part of them.

Every statement the TaskAdmin dashboard runs lives in :class:`DashboardStore`, on top of
the :class:`~taskflow._store.sql.SQLStore` transactions (``read()``/``write()``): task
lists and counts here, task searches in :mod:`taskflow._store.task_search` (their indexes
caught up by :mod:`taskflow._store.search_index`), log lines in
:mod:`taskflow._store.log_queries`, chart series in :mod:`taskflow._store.series`, the
audit log, sessions and meta values in :mod:`taskflow._store.admin_sql`. Lists are
keyset-paginated and counts are capped, so a page costs the same with a thousand rows as
with a million; nothing here loads more than one page (or one bounded sample) at a time.
The one exception is :meth:`DashboardStore.exact_status_counts` (``GET /tasks/metrics``),
which counts index entries of every status: no rows are read, but its cost grows with
the table. Text searches use the trigram indexes of :mod:`taskflow._store.search`.

Rows leave as the typed records of :mod:`taskflow._store.rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from taskflow._store.admin_sql import AdminSQL
from taskflow._store.ids import task_id_forms
from taskflow._store.log_queries import LogSQL
from taskflow._store.rows import (
    InstanceRow,
    RetryLinks,
    TaskLink,
    TaskSummary,
    TaskSummaryWithPayload,
)
from taskflow._store.schema import UTCDateTime, instances, schedules, tasks
from taskflow._store.series import FINAL_STATUSES, SeriesSQL
from taskflow._store.sql import SQLStore

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]
# What a task list is sorted by: a time, or a duration in seconds.
SortKey = sa.ColumnElement[datetime] | sa.ColumnElement[float]

SORTS = ("created", "started", "finished", "duration")
SCAN_COUNT_CAP = 1000

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
    tasks.c.retry_of,
    tasks.c.resolution,
    tasks.c.resolved_at,
    tasks.c.progress,
)
# Tasks the task page lists as the retries of one task.
RETRIES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a list shows. Empty fields do not filter.

    Attributes:
        statuses: any of these statuses.
        func_name, queue, source: exact matches.
        tag: ``(key, value)``: the task's tag ``key`` equals ``value``.
        since, until: ``created_at`` in ``[since, until]``.
        search: a task id, or text found in the function name, the error or (when
            the store searches them) the arguments (see :mod:`taskflow._store.search`).
        unresolved: only tasks not yet retried or discarded (``resolution`` null).
        owner: the instance that holds the task (index ``(owner, status)``).
    """

    statuses: tuple[str, ...] = ()
    func_name: str | None = None
    queue: str | None = None
    source: str | None = None
    owner: str | None = None
    tag: tuple[str, str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    unresolved: bool = False


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


class DashboardStore(LogSQL, SeriesSQL, AdminSQL):
    """The dashboard's reads and writes, through ``store``'s transactions: task lists
    here, and the parts it is made of (:class:`~taskflow._store.log_queries.LogSQL`
    with :class:`~taskflow._store.task_search.TaskSearchSQL`,
    :class:`~taskflow._store.series.SeriesSQL`, :class:`~taskflow._store.admin_sql.AdminSQL`).

    Args:
        store: the manager's open :class:`SQLStore` (``task_manager.db``).
        search_arguments: task searches also look in the arguments of tasks that are
            not encrypted (:func:`~taskflow._store.search.argument_match`).
        hidden_keys: with ``search_arguments``: key fragments (as the dashboard's
            redaction normalizes them) whose arguments are not searched.
        retention_days: the task retention in days, read when the charts' rollups are
            pruned (None: :data:`~taskflow._store.stats_minutes.DEFAULT_KEEP`).
    """

    def __init__(
        self,
        store: SQLStore,
        *,
        search_arguments: bool = False,
        hidden_keys: Sequence[str] = (),
        retention_days: Callable[[], float | None] | None = None,
    ) -> None:
        self._store = store
        self._retention_days = retention_days
        self._fts = None
        self._candidates = {}
        self._hidden = tuple(hidden_keys) if search_arguments else None

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
        (see :data:`~taskflow._store.task_search.FEW_MATCHES`); one that matches more is
        checked row by row in page order.

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

    async def running_tasks(
        self, instance_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[TaskSummary]]:
        """The tasks each instance is running now, longest running first, at most
        ``limit`` per instance (instances running nothing are left out).

        One statement: a range of the index ``(owner, status)`` per instance, whose
        size is the instance's concurrency, never the history."""
        if not instance_ids:
            return {}
        place = (
            sa.func.row_number()
            .over(partition_by=tasks.c.owner, order_by=(tasks.c.started_at, tasks.c.id))
            .label("place")
        )
        ranked = (
            sa.select(*_LIST_COLUMNS, place)
            .where(tasks.c.owner.in_(list(instance_ids)), tasks.c.status == "running")
            .subquery()
        )
        query = (
            sa.select(*(ranked.c[column.name] for column in _LIST_COLUMNS))
            .where(ranked.c.place <= limit)
            .order_by(ranked.c.owner, ranked.c.place)
        )
        found: dict[str, list[TaskSummary]] = {}
        async with self._store.read() as conn:
            for row in (await conn.execute(query)).mappings():
                found.setdefault(row["owner"], []).append(TaskSummary.of(row))
        return found

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

    # -- resolving failures, acting on many tasks --------------------------------------

    async def retry_links(self, task_id: str) -> RetryLinks | None:
        """The retry links of one task (None: no such task): what it runs again, how
        it was resolved, and the first :data:`RETRIES_SHOWN` tasks that run it again."""
        own = sa.select(tasks.c.id, tasks.c.retry_of, tasks.c.resolution, tasks.c.resolved_at)
        link = sa.select(tasks.c.id, tasks.c.status, tasks.c.created_at)
        async with self._store.read() as conn:
            found = (await conn.execute(own.where(tasks.c.id.in_(task_id_forms(task_id))))).first()
            if found is None:
                return None
            original = None
            if found.retry_of is not None:
                rows = (await conn.execute(link.where(tasks.c.id == found.retry_of))).mappings()
                first = rows.first()
                original = None if first is None else TaskLink.of(first)
            copies = link.where(tasks.c.retry_of == found.id)
            copies = copies.order_by(tasks.c.created_at, tasks.c.id).limit(RETRIES_SHOWN)
            retried_as = [TaskLink.of(row) for row in (await conn.execute(copies)).mappings()]
        return RetryLinks(
            retry_of=found.retry_of,
            original=original,
            resolution=found.resolution,
            resolved_at=found.resolved_at,
            retried_as=retried_as,
        )

    async def discard_tasks(
        self, task_ids: Sequence[str], *, statuses: Sequence[str], now: datetime
    ) -> list[str]:
        """Resolve as ``discarded`` those of ``task_ids`` that are in ``statuses`` and
        unresolved, in one statement; the ids discarded."""
        ids = [task_id for task_id in task_ids if task_id]
        if not ids:
            return []
        statement = (
            tasks.update()
            .where(
                tasks.c.id.in_(ids),
                tasks.c.status.in_(list(statuses)),
                tasks.c.resolution.is_(None),
            )
            .values(resolution="discarded", resolved_at=now)
            .returning(tasks.c.id)
        )
        async with self._store.write() as conn:
            return list((await conn.execute(statement)).scalars())

    async def delete_final_tasks(self, task_ids: Sequence[str]) -> list[str]:
        """Delete those of ``task_ids`` that are final, with their logs and attempts,
        in one statement; the ids deleted."""
        ids = [task_id for task_id in task_ids if task_id]
        if not ids:
            return []
        statement = (
            tasks.delete()
            .where(tasks.c.id.in_(ids), tasks.c.status.in_(FINAL_STATUSES))
            .returning(tasks.c.id)
        )
        async with self._store.write() as conn:
            return list((await conn.execute(statement)).scalars())

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
            (tasks.c.owner, filters.owner),
        ):
            if value is not None:
                conditions.append(column == value)
        if filters.tag is not None:
            conditions.append(self._tag_condition(*filters.tag))
        if filters.since is not None:
            conditions.append(tasks.c.created_at >= filters.since)
        if filters.until is not None:
            conditions.append(tasks.c.created_at <= filters.until)
        if filters.unresolved:
            conditions.append(tasks.c.resolution.is_(None))
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
