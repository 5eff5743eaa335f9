"""Task searches on the dashboard: what the text indexes find for a text, and the shape
of the query that reads the matches (through the indexes when they are few, in page
order when they are many).

The conditions themselves are :class:`~taskflow._store.search.TaskSearch`'s; the indexes
are brought up to date first (:mod:`taskflow._store.search_index`).
:class:`TaskSearchSQL` is a part of :class:`~taskflow._store.dashboard.DashboardStore`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.schema import ARGS_FTS, ARGS_SEARCH, TASKS_FTS, tasks
from taskflow._store.search import (
    DISTINCT_FUNCTIONS,
    FTS_TABLES,
    MANY_MATCHES,
    PG_ARGS_TABLE,
    Candidates,
    TaskSearch,
    fts_candidates,
    fts_either,
    pg_argument_candidates,
    pg_error_candidates,
    stored_forms,
)
from taskflow._store.search_index import (
    index_new_arguments,
    index_new_errors,
    index_new_pg_arguments,
)
from taskflow._store.sql import SQLStore

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]

# A text search matching at most this many tasks reads them through its indexes and
# sorts them; one matching more reads rows in page order, where matches are common
# enough to fill a page soon.
FEW_MATCHES = 2000
# SQLite: a trigram in at most this many errors is rare enough to look a text up by.
RARE_MATCHES = 10_000
# How long the number of candidates of a task search is kept (seconds), and for how
# many searches.
CANDIDATES_TTL = 2.0
CANDIDATES_KEPT = 64


class TaskSearchSQL:
    """Task searches, through ``_store``'s transactions."""

    _store: SQLStore
    _fts: frozenset[str] | None  # SQLite's FTS5 tables, once looked up
    _candidates: dict[str, tuple[float, Candidates | None, Candidates | None]]
    _hidden: tuple[str, ...] | None

    async def _task_search(self, text: str | None) -> TaskSearch | None:
        """``text`` made a :class:`TaskSearch` (None for no search), with the stored
        function names and what the error's text index finds."""
        if not text or not text.strip():
            return None
        if TaskSearch.is_id(text):
            return TaskSearch.of(text, (), dialect=self._store.dialect)
        async with self._store.read() as conn:
            names = list(await conn.scalars(DISTINCT_FUNCTIONS))
            fts = await self._fts_tables(conn)
        if TaskSearch.uses_index(text):
            if TASKS_FTS in fts:
                await index_new_errors(self._store)
            if ARGS_FTS in fts and self._hidden is not None:
                await index_new_arguments(self._store)
            if ARGS_SEARCH in fts and self._hidden is not None:
                await index_new_pg_arguments(self._store)
        async with self._store.read() as conn:
            found, args_found = await self._text_candidates(conn, text.strip())
        return TaskSearch.of(
            text,
            names,
            dialect=self._store.dialect,
            found=found,
            hidden=self._hidden,
            args_found=args_found,
        )

    async def _text_candidates(
        self, conn: AsyncConnection, text: str
    ) -> tuple[Candidates | None, Candidates | None]:
        """What the text indexes of the error and (when searched) of the arguments find
        for ``text`` (None: no index to ask).

        Kept for :data:`CANDIDATES_TTL` seconds: a page and its count ask twice in one
        request. The figures only pick the shape of the queries, never their result."""
        if not TaskSearch.uses_index(text):
            return None, None
        now = time.monotonic()
        cached = self._candidates.get(text)
        if cached is not None and now - cached[0] < CANDIDATES_TTL:
            return cached[1], cached[2]
        found: Candidates | None = None
        args_found: Candidates | None = None
        fts = await self._fts_tables(conn)
        if self._store.dialect == "postgresql":
            found = await pg_error_candidates(conn, text, cap=FEW_MATCHES)
            if ARGS_SEARCH in fts and self._hidden is not None:
                args_found = await pg_argument_candidates(conn, text, self._hidden, cap=FEW_MATCHES)
        else:
            if TASKS_FTS in fts:
                found = await fts_candidates(
                    conn, TASKS_FTS, text, rare=RARE_MATCHES, cap=MANY_MATCHES
                )
            if ARGS_FTS in fts and self._hidden is not None:
                args_found = await fts_either(
                    conn, ARGS_FTS, stored_forms(text), rare=RARE_MATCHES, cap=MANY_MATCHES
                )
        if len(self._candidates) >= CANDIDATES_KEPT:
            self._candidates.clear()
        self._candidates[text] = (now, found, args_found)
        return found, args_found

    def _searched(
        self, search: TaskSearch, where: list[Condition], *, driven: bool
    ) -> list[Condition]:
        """``where`` and the search, in the shape of the plan: ``driven``, the tasks the
        search's indexes find (:meth:`TaskSearch.candidates`), on SQLite with the other
        filters hidden from the planner (without statistics it would walk their index
        instead); else rows in page order (:meth:`TaskSearch.walk`)."""
        if not driven:
            return [*where, search.walk()]
        if self._store.dialect == "postgresql":
            return [*where, tasks.c.id.in_(search.candidates()), search.matches()]
        rowid: sa.ColumnElement[int] = sa.literal_column(f"{tasks.name}.rowid")
        hidden = [sa.func.coalesce(sa.and_(*where), sa.false())] if where else []
        return [*hidden, rowid.in_(search.candidates()), search.matches()]

    async def _few_matches(self, search: TaskSearch) -> bool:
        """The search matches at most :data:`FEW_MATCHES` tasks in all (counted through
        its indexes, whatever the other filters), so a page reads them and sorts them."""
        found = search.found_count
        if found is None or found > FEW_MATCHES:
            return False
        others = replace(search, error=False, arguments=False)  # the id and name parts
        if not others.parts():
            return True
        counted = _found(others, (), limit=FEW_MATCHES + 1).subquery()
        query = sa.select(sa.func.count()).select_from(counted)
        async with self._store.read() as conn:
            rest = int(await conn.scalar(query) or 0)
        return found + rest <= FEW_MATCHES

    async def _count_found(self, search: TaskSearch, where: list[Condition], *, cap: int) -> int:
        """Distinct tasks matching ``search`` and ``where``, counted up to ``cap + 1``
        through the indexes of the search's parts."""
        postgresql = self._store.dialect == "postgresql"
        found = _found(search, where, limit=cap + 1, error_first=postgresql).subquery()
        query = sa.select(sa.func.count()).select_from(found)
        async with self._store.read() as conn:
            return min(int(await conn.scalar(query) or 0), cap + 1)

    async def _fts_tables(self, conn: AsyncConnection) -> frozenset[str]:
        """The text search tables that exist (looked up once): SQLite's FTS5 tables of
        revisions 0006 and 0007, PostgreSQL's arguments' table (none without pg_trgm)."""
        if self._fts is None:
            query = FTS_TABLES if self._store.dialect == "sqlite" else PG_ARGS_TABLE
            self._fts = frozenset(await conn.scalars(query))
        return self._fts


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

    ``error_first``: the text parts (error, arguments) hide ``where`` from the planner,
    so that each reads the rows its text index finds and checks the filters there,
    instead of also reading (and intersecting) the whole range of a filter's index, such
    as every failed task."""
    selects: list[sa.Select[tuple[str]]] = []
    for index, part in enumerate(search.parts()):
        filters = list(where)
        if error_first and index < search.texts and filters:
            filters = [sa.func.coalesce(sa.and_(*filters), sa.false())]
        select = sa.select(tasks.c.id).where(part, *filters).correlate(None)
        if limit is not None:  # a LIMIT inside a UNION needs a subquery of its own
            select = sa.select(select.limit(limit).subquery().c.id)
        selects.append(select)
    return selects[0] if len(selects) == 1 else sa.union(*selects)
