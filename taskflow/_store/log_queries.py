"""The dashboard's log queries: log searches over every task's lines, and the lines of
one task.

A text search reads the lines SQLite's FTS5 table finds when they are few, else lines
newest first until a page is full (:class:`~taskflow._store.search.LogSearch`).
:class:`LogSQL` is a part of :class:`~taskflow._store.dashboard.DashboardStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from taskflow._store.ids import task_id_forms
from taskflow._store.rows import LogRow, LogSearchRow
from taskflow._store.schema import LOGS_FTS, task_logs, tasks
from taskflow._store.search import MIN_INDEXED, LogSearch, fts_candidates
from taskflow._store.task_search import TaskSearchSQL

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]

# SQLite: a trigram in at most this many log lines is rare enough to look a text up by
# (their page order is the FTS5 table's own, by id).
FEW_LINES = 20_000
# Log lines filtered by function: with at most this many tasks, the function's tasks
# lead (their lines are few enough to sort); with more, lines are read newest first and
# each one's task checked, which stops as soon as a page is full.
FEW_TASKS = 2000


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


class LogSQL(TaskSearchSQL):
    """Log lines, through ``_store``'s transactions."""

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
        search = LogSearch(text, hidden_fields, self._store.dialect)
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
        inner = sa.select(sa.literal(1)).select_from(tasks).where(tasks.c.func_name == func_name)
        query = sa.select(sa.func.count()).select_from(inner.limit(FEW_TASKS + 1).subquery())
        async with self._store.read() as conn:
            few = int(await conn.scalar(query) or 0)
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
