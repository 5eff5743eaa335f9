"""Text search for the dashboard: tasks by id, function name, error or arguments, log
lines by message or structured field.

What a search finds: the text anywhere inside (a substring), ignoring case (ASCII
letters on SQLite, every letter on PostgreSQL), with ``%``, ``_`` and ``\\`` taken
literally. A task matches when the text is in its function name or its error, or is the
start of its id; text that looks like a task id (8 to 32 hex digits with both letters
and digits) is looked up by id only. A log line matches when the text is in its message,
or in the key or the value of one of its structured fields (``cust-40`` finds
``task_log("charged", customer="cust-40")``): top-level fields whose value is a string,
number or boolean, except those whose key contains one of ``hidden_fields`` (the
dashboard passes its ``redact_keys``, so a search cannot find text the page masks).
When the dashboard shows arguments, a task also matches when the text is in its stored
arguments (:func:`argument_match`: the JSON text, never that of an encrypted task, nor
any that holds a masked key).

How: revision ``0006_text_search`` indexes the trigrams (three consecutive characters)
of the error text and of the log lines' message and fields, and ``0007_operator`` those
of the arguments: FTS5 tables on SQLite, ``pg_trgm`` GIN indexes on PostgreSQL (the
arguments' on a table of their own, :data:`args_search`, which the searches fill, so
the task table carries no index of them). An index finds the rows that may match and
the condition above is checked on them, so an index never changes a result, only how
many rows are read. Text shorter than three characters has no trigram: it is searched
by reading rows in page order, as is everything on a SQLite without FTS5 trigrams.
Function names are few: the distinct names are read from an index (one probe per name)
and the matching ones looked up by name.

A search that matches few rows reads them through the index and sorts them; one that
matches many reads rows in page order (newest first), where matches are common enough
to fill a page soon. The dashboard's store picks between the two by counting what the
index finds, up to a cap (:class:`Candidates`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.ids import dashed, hex_prefix, task_id_forms
from taskflow._store.schema import (
    ARGS_FTS,
    ARGS_SEARCH,
    LOGS_FTS,
    TASKS_FTS,
    TaskId,
    task_logs,
    tasks,
)

# A condition of a WHERE clause.
Condition = sa.ColumnElement[bool]

# The shortest text a trigram index can look up.
MIN_INDEXED = 3
# SQLite: trigrams of a text looked up, and the rare ones required, at most.
_MAX_TERMS = 12
_RARE_TERMS = 3
# SQLite: an error search that the FTS5 table answers with more rows than this is common
# text; those rows are found sooner in index order than by building their list.
MANY_MATCHES = 50_000
# A search that looks like a task id or its start: 8 to 32 hex digits, with both letters
# and digits, written with or without the dashes of a UUID string (task ids are UUIDs;
# see taskflow/ids.py). It is looked up in the primary key instead of reading rows for
# text, which on a big table means every row when nothing else matches.
_ID_LIKE = re.compile(r"(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,32}")
TASK_ID_LENGTH = 32  # hex digits
_ROWID: sa.ColumnElement[int] = sa.literal_column(f"{tasks.name}.rowid")
# The field values a log search looks into (SQLite's json_each types, PostgreSQL's
# json_typeof names).
_SQLITE_SCALARS = ("text", "integer", "real", "true", "false")
_PG_SCALARS = ("string", "number", "boolean")

# Every function name stored, in one statement: each step finds the next name with one
# probe of an index that leads with func_name (a loose index scan), so the cost is the
# number of names, not of tasks.
DISTINCT_FUNCTIONS = sa.text(
    """
    WITH RECURSIVE names(name) AS (
        SELECT min(func_name) FROM taskflow_tasks
        UNION ALL
        SELECT (SELECT min(func_name) FROM taskflow_tasks WHERE func_name > names.name)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL
    """
)
# SQLite: which of the FTS5 tables exist (none on a SQLite without FTS5 trigrams).
FTS_TABLES = sa.text(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (:tasks, :logs, :args)"
).bindparams(tasks=TASKS_FTS, logs=LOGS_FTS, args=ARGS_FTS)
# PostgreSQL: the arguments' search table, if it exists (not without pg_trgm).
PG_ARGS_TABLE = sa.text(
    "SELECT CAST(to_regclass(:args) AS text) WHERE to_regclass(:args) IS NOT NULL"
).bindparams(args=ARGS_SEARCH)
# PostgreSQL (revision 0007_operator): the stored arguments of each task that is not
# encrypted, with a trigram GIN index on ``text``; filled by the searches (see
# search_index.index_new_pg_arguments), emptied of deleted tasks by ON DELETE CASCADE.
args_search = sa.table(ARGS_SEARCH, sa.column("task_id", TaskId), sa.column("text", sa.Text))


def contains(column: sa.ColumnElement[str], text: str) -> Condition:
    """``column`` holds ``text``, ignoring case, wildcards taken literally. This is
    ``ILIKE`` on PostgreSQL, which its trigram indexes serve."""
    return column.ilike(_pattern(text), escape="\\")


def _pattern(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere (with ``\\`` as the escape character)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_match(table: str, query: str) -> sa.Select[tuple[int]]:
    """SQLite: the rowids of FTS5 ``table`` that match the FTS5 ``query``."""
    fts = sa.table(table, sa.column("rowid"), sa.column(table))
    return sa.select(fts.c.rowid).where(fts.c[table].op("MATCH")(query))


@dataclass(frozen=True, slots=True)
class Candidates:
    """The rows a text index finds for a text: those that may hold it.

    Attributes:
        count: how many, counted up to a cap plus one (on SQLite an upper bound when it
            comes from one of the text's trigrams).
        query: SQLite: the FTS5 query that finds them (some trigrams of the text, all
            required); None on PostgreSQL, whose trigram index serves ``ILIKE``.
    """

    count: int
    query: str | None = None


async def fts_candidates(
    conn: AsyncConnection, table: str, text: str, *, rare: int, cap: int, exact: bool = False
) -> Candidates:
    """SQLite: the rows of FTS5 ``table`` (trigram, ``detail=none``) that may hold
    ``text`` (:data:`MIN_INDEXED` characters or more), found through its rarest
    trigrams.

    The table keeps no positions, so a text is looked up as trigrams that must all be
    present, and the rows found are checked for the text itself. Requiring a common
    trigram costs a read of its whole list of rows (0.15 s for one in a quarter of
    5,000,000 log lines) and narrows little, so each trigram is first counted up to
    ``rare`` (one statement), and when some are found at most ``rare`` times, the
    rarest of them are required. When every trigram is common the text usually is too;
    all of them are then required, and counted up to ``cap``.

    ``exact``: rows holding all the rarest trigrams are counted too (up to ``cap``: one
    more statement, reading their short lists), not only the rarest one: trigrams of
    digits are each in thousands of rows while the text is in one."""
    grams = _trigrams(text)
    counted = [
        sa.select(sa.func.count())
        .select_from(fts_match(table, _term(gram)).limit(rare + 1).subquery())
        .scalar_subquery()
        for gram in grams
    ]
    counts = (await conn.execute(sa.select(*counted))).one()
    found = sorted((int(count), gram) for count, gram in zip(counts, grams, strict=True))
    rarest = [(count, gram) for count, gram in found if count <= rare][:_RARE_TERMS]
    if rarest:
        query = " AND ".join(_term(gram) for _, gram in rarest)
        if not exact or len(rarest) == 1:
            return Candidates(rarest[0][0], query)
        both = fts_match(table, query).limit(cap + 1).subquery()
        return Candidates(
            int(await conn.scalar(sa.select(sa.func.count()).select_from(both)) or 0), query
        )
    query = " AND ".join(_term(gram) for gram in grams)
    every = fts_match(table, query).limit(cap + 1).subquery()
    count = await conn.scalar(sa.select(sa.func.count()).select_from(every))
    return Candidates(int(count or 0), query)


async def pg_error_candidates(conn: AsyncConnection, text: str, *, cap: int) -> Candidates:
    """PostgreSQL: the tasks whose error holds ``text``, counted up to ``cap + 1``
    through the trigram index (at most ``cap + 1`` rows read)."""
    found = sa.select(sa.literal(1)).where(contains(tasks.c.error, text)).limit(cap + 1)
    count = await conn.scalar(sa.select(sa.func.count()).select_from(found.subquery()))
    return Candidates(int(count or 0))


async def fts_either(
    conn: AsyncConnection, table: str, forms: Iterable[str], *, rare: int, cap: int
) -> Candidates:
    """SQLite: :func:`fts_candidates` for each of ``forms`` (ways the same text may be
    stored), joined: rows found for any of them (counts added up)."""
    found = [
        await fts_candidates(conn, table, form, rare=rare, cap=cap, exact=True) for form in forms
    ]
    if len(found) == 1:
        return found[0]
    query = " OR ".join(f"({one.query})" for one in found)
    return Candidates(sum(one.count for one in found), query)


async def pg_argument_candidates(
    conn: AsyncConnection, text: str, hidden: tuple[str, ...], *, cap: int
) -> Candidates:
    """PostgreSQL: the tasks whose arguments hold ``text`` (:func:`argument_match`),
    counted up to ``cap + 1`` through the trigram index of :data:`args_search`."""
    found = sa.select(sa.literal(1)).where(_stored_match(text, hidden)).limit(cap + 1)
    count = await conn.scalar(sa.select(sa.func.count()).select_from(found.subquery()))
    return Candidates(int(count or 0))


def stored_forms(text: str) -> tuple[str, ...]:
    """How ``text`` may appear in the stored JSON of arguments: as written, and as JSON
    writes it inside a string (non-ASCII as ``\\uXXXX``, ``"`` and ``\\`` escaped)."""
    return tuple(dict.fromkeys((text, json.dumps(text)[1:-1])))


def argument_match(
    text: str, hidden: tuple[str, ...], *, walk: bool = False, indexed: bool = False
) -> Condition:
    """The task's arguments hold ``text``: the stored text of a task that is not
    encrypted (the JSON of its arguments, or of their descriptions for a memory-only
    task) holds it in one of :func:`stored_forms`, and holds none of the ``hidden`` key
    fragments (compared as the dashboard's redaction compares keys: lower case, without
    ``-``, ``_`` or spaces), so no value the dashboard masks can be found.

    ``walk``: PostgreSQL, for rows read in page order: a form no index serves (see
    :meth:`TaskSearch.walk`). ``indexed``: PostgreSQL, the tasks found in
    :data:`args_search` (its trigram index), whose text is the stored text of the task."""
    payload = tasks.c.payload
    if indexed:
        found_ids = sa.select(args_search.c.task_id).where(_stored_match(text, hidden))
        return sa.and_(sa.not_(tasks.c.encrypted), tasks.c.id.in_(found_ids))
    if walk:
        lowered = sa.func.lower(payload)
        found = sa.or_(*(sa.func.strpos(lowered, form.lower()) > 0 for form in stored_forms(text)))
    else:
        found = sa.or_(*(contains(payload, form) for form in stored_forms(text)))
    return sa.and_(sa.not_(tasks.c.encrypted), found, *_without_hidden(payload, hidden))


def _stored_match(text: str, hidden: tuple[str, ...]) -> Condition:
    """PostgreSQL: the row of :data:`args_search` holds ``text`` as
    :func:`argument_match` looks for it (the table holds no encrypted task)."""
    stored = args_search.c.text
    found = sa.or_(*(contains(stored, form) for form in stored_forms(text)))
    return sa.and_(found, *_without_hidden(stored, hidden))


def _without_hidden(payload: sa.ColumnElement[str], hidden: tuple[str, ...]) -> list[Condition]:
    """Conditions that the stored text holds none of the ``hidden`` key fragments
    (already normalized: lower case, without ``-``, ``_`` or spaces), whatever its
    structure: a key anywhere, in any of the codec's shapes, is somewhere in the text.
    JSON writes letters outside ASCII as ``\\uXXXX`` escapes, whose case differs from
    the fragment's: when a fragment has such letters, no text with an escape is
    searched."""
    if not hidden:
        return []
    normal = sa.func.lower(
        sa.func.replace(sa.func.replace(sa.func.replace(payload, "-", ""), "_", ""), " ", "")
    )
    conditions = [
        ~normal.contains(form, autoescape=True)
        for fragment in hidden
        for form in stored_forms(fragment)
    ]
    if any(not fragment.isascii() for fragment in hidden):
        conditions.append(~payload.contains("\\u", autoescape=True))
    return conditions


def _trigrams(text: str) -> list[str]:
    """Trigrams that cover ``text``: every third one and the last, without repeats
    (FTS5 folds case, so ``Err`` and ``err`` are one), at most :data:`_MAX_TERMS`."""
    starts = [*range(0, len(text) - 2, 3), len(text) - 3]
    grams: dict[str, str] = {}
    for start in starts:
        gram = text[start : start + 3]
        grams.setdefault(gram.lower(), gram)
    return list(grams.values())[:_MAX_TERMS]


def _term(gram: str) -> str:
    """One trigram as an FTS5 string."""
    return '"' + gram.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class TaskSearch:
    """A task search made into conditions.

    Attributes:
        text: the search, stripped.
        ids: the ids starting with the text (None: the text cannot start one).
        func_names: the stored function names that contain the text.
        error: look in the error (false for text that looks like a task id).
        indexed: every part has an index: ids, function names and, with text of
            :data:`MIN_INDEXED` characters or more, the trigram indexes of the error
            and (when searched) of the arguments.
        found: the errors the trigram index finds (None: not looked up).
        dialect: ``"sqlite"`` or ``"postgresql"``.
        arguments: look in the arguments (:func:`argument_match`); false for text
            that looks like a task id.
        hidden: the key fragments whose arguments are not searched.
        args_found: the arguments the trigram index finds (None: not looked up).
    """

    text: str
    ids: Condition | None
    func_names: tuple[str, ...]
    error: bool
    indexed: bool
    found: Candidates | None
    dialect: str
    arguments: bool = False
    hidden: tuple[str, ...] = ()
    args_found: Candidates | None = None

    @staticmethod
    def is_id(text: str) -> bool:
        """``text`` looks like a task id or its start, so only ids are searched."""
        digits = hex_prefix(text.strip().lower())
        return digits is not None and _ID_LIKE.fullmatch(digits) is not None

    @staticmethod
    def uses_index(text: str) -> bool:
        """The error's trigram index can look ``text`` up (long enough, not an id)."""
        return len(text.strip()) >= MIN_INDEXED and not TaskSearch.is_id(text)

    @classmethod
    def of(
        cls,
        text: str,
        names: Iterable[str],
        *,
        dialect: str,
        found: Candidates | None = None,
        hidden: tuple[str, ...] | None = None,
        args_found: Candidates | None = None,
    ) -> TaskSearch:
        """The search for ``text`` among tasks of functions ``names``; ``found``: what
        the error's index found (SQLite: None when it has no FTS5 table). ``hidden``:
        None to leave arguments out, else the key fragments whose arguments are not
        searched; ``args_found``: what the arguments' index found."""
        text = text.strip()
        digits = hex_prefix(text.lower())
        if digits is not None and _ID_LIKE.fullmatch(digits):
            return cls(text, _id_starts_with(digits), (), False, True, None, dialect)
        # Task ids are UUIDs: only hex digits (and dashes) can start one.
        ids = None if digits is None else _id_starts_with(digits)
        lowered = text.lower()
        matching = tuple(name for name in names if lowered in name.lower())
        arguments = hidden is not None
        indexed = len(text) >= MIN_INDEXED and (
            dialect == "postgresql"
            or (found is not None and (not arguments or args_found is not None))
        )
        return cls(
            text, ids, matching, True, indexed, found, dialect, arguments, hidden or (), args_found
        )

    @property
    def few(self) -> bool:
        """SQLite: the FTS5 table finds at most :data:`MANY_MATCHES` errors, so their
        rowids make a list worth building; with more, matches are common."""
        return self.found is not None and self.found.count <= MANY_MATCHES

    @property
    def few_args(self) -> bool:
        """:attr:`few` for the arguments' FTS5 table."""
        return self.args_found is not None and self.args_found.count <= MANY_MATCHES

    @property
    def found_count(self) -> int | None:
        """The candidates the text indexes found, errors and arguments (None: not
        looked up)."""
        if self.found is None:
            return None
        if not self.arguments:
            return self.found.count
        return None if self.args_found is None else self.found.count + self.args_found.count

    @property
    def texts(self) -> int:
        """How many of :meth:`parts` look for text (they come first)."""
        return int(self.error) + int(self.arguments)

    def matches(self) -> Condition:
        """The tasks this search finds, checked in each row read (on PostgreSQL in a
        form its trigram index serves)."""
        return sa.or_(*self._terms(contains(tasks.c.error, self.text), self._args()))

    def walk(self) -> Condition:
        """:meth:`matches` for rows read in page order. SQLite first looks a row up in
        the list of rowids the FTS5 table finds, from the index being walked, so a row
        that cannot match is not read. PostgreSQL gets a form that no index serves and
        whose selectivity its planner guesses at a third (``strpos(...) > 0``), so that
        it walks the index of the page's order and stops at a full page: for ``ILIKE``
        it estimates common text as rare and reads every match first."""
        if self.dialect == "postgresql":
            error = sa.func.lower(sa.func.coalesce(tasks.c.error, ""))
            args = self._args(walk=True)
            return sa.or_(*self._terms(sa.func.strpos(error, self.text.lower()) > 0, args))
        found: Condition = contains(tasks.c.error, self.text)
        if self.few:
            found = sa.and_(self._fts_rowids(TASKS_FTS, self.found, plus=True), found)
        args = self._args()
        if args is not None and self.few_args:
            args = sa.and_(self._fts_rowids(ARGS_FTS, self.args_found, plus=True), args)
        return sa.or_(*self._terms(found, args))

    def parts(self) -> list[Condition]:
        """Conditions whose union is :meth:`matches`, each served by an index when
        :attr:`indexed`: the error first and the arguments (the FTS5 rowids, or the
        trigram index of :data:`args_search`), then the id (primary key) and the
        function names (an index that leads with ``func_name``)."""
        error = contains(tasks.c.error, self.text)
        # PostgreSQL: through the arguments' table when it exists (args_found counted it).
        args = self._args(indexed=self.dialect == "postgresql" and self.args_found is not None)
        if self.dialect == "sqlite" and self.few:
            error = sa.and_(self._fts_rowids(TASKS_FTS, self.found, plus=False), error)
        if self.dialect == "sqlite" and args is not None and self.few_args:
            args = sa.and_(self._fts_rowids(ARGS_FTS, self.args_found, plus=False), args)
        return self._terms(error, args)

    def candidates(self) -> sa.CompoundSelect[Any]:
        """The tasks that may match, each part through its index: rowids on SQLite
        (the error's from the FTS5 table, without reading task rows), ids on
        PostgreSQL."""
        if self.dialect == "postgresql":
            return sa.union(*(sa.select(tasks.c.id).where(part) for part in self.parts()))
        assert self.found is not None and self.found.query is not None
        selects: list[sa.Select[Any]] = [
            sa.select(_ROWID).where(term) for term in self._terms(None, None)
        ]
        if self.arguments:
            assert self.args_found is not None and self.args_found.query is not None
            selects.append(fts_match(ARGS_FTS, self.args_found.query))
        return sa.union(*selects, fts_match(TASKS_FTS, self.found.query))

    def _args(self, *, walk: bool = False, indexed: bool = False) -> Condition | None:
        """The argument part of :meth:`matches` (None when arguments are not searched)."""
        if not self.arguments:
            return None
        return argument_match(self.text, self.hidden, walk=walk, indexed=indexed)

    @staticmethod
    def _fts_rowids(table: str, found: Candidates | None, *, plus: bool) -> Condition:
        """The task's rowid is in the list of FTS5 ``table`` (built once: as a join,
        SQLite could probe the FTS5 table once per task row instead). ``plus``: not
        usable as an index (SQLite's unary ``+``), so the planner walks the index of the
        page's order and checks the list there."""
        assert found is not None and found.query is not None
        rowid = sa.literal_column(f"+{tasks.name}.rowid") if plus else _ROWID
        return rowid.in_(fts_match(table, found.query))

    def _terms(self, error: Condition | None, args: Condition | None) -> list[Condition]:
        """``error`` (when the search looks at errors and it is given), ``args`` (when
        given), then the id and function name terms."""
        terms: list[Condition] = []
        if self.error and error is not None:
            terms.append(error)
        if args is not None:
            terms.append(args)
        if self.ids is not None:
            terms.append(self.ids)
        if self.func_names:
            terms.append(tasks.c.func_name.in_(self.func_names))
        return terms


def _id_starts_with(digits: str) -> Condition:
    """Tasks whose id starts with these hex digits, stored in either shape."""
    if len(digits) == TASK_ID_LENGTH:
        return tasks.c.id.in_(task_id_forms(digits))
    # Every id has 32 hex digits: those starting with ``digits`` form one key range
    # per id shape (dashes sit at the same places in every UUID string).
    pad = TASK_ID_LENGTH - len(digits)
    low, high = digits + "0" * pad, digits + "f" * pad
    return sa.or_(tasks.c.id.between(low, high), tasks.c.id.between(dashed(low), dashed(high)))


@dataclass(frozen=True, slots=True)
class LogSearch:
    """A log line search made into conditions.

    Attributes:
        text: the text to find.
        hidden_fields: key fragments of fields not searched (compared as the
            dashboard's redaction compares them: lower case, without ``-``, ``_`` or
            spaces).
        dialect: ``"sqlite"`` or ``"postgresql"``.
    """

    text: str
    hidden_fields: tuple[str, ...]
    dialect: str

    def matches(self) -> Condition:
        """The lines this search finds: the text in the message or in a visible field
        (on PostgreSQL in a form its message and fields indexes serve)."""
        return sa.or_(contains(task_logs.c.message, self.text), self._in_field())

    def candidates(self, found: Candidates) -> Condition:
        """SQLite: the lines the FTS5 table ``found`` (a superset of :meth:`matches`)."""
        assert found.query is not None
        return task_logs.c.id.in_(fts_match(LOGS_FTS, found.query))

    def _in_field(self) -> Condition:
        """The key or the value of one visible field holds the text."""
        if self.dialect == "postgresql":
            return self._pg_in_field()
        field = sa.func.json_each(task_logs.c.extra).table_valued("key", "value", "type")
        value = sa.case(
            (field.c.type == "true", "true"),
            (field.c.type == "false", "false"),
            else_=field.c.value,
        )
        found = sa.exists().where(
            field.c.type.in_(_SQLITE_SCALARS),
            sa.or_(contains(field.c.key, self.text), contains(value, self.text)),
            *self._shown(field.c.key),
        )
        # json_each fails on text that is not JSON; the writes only store JSON, but one
        # bad row must not break every search. IS NOT NULL first: NULL AND x still
        # evaluates x, for the three quarters of the lines that have no fields.
        extra = task_logs.c.extra
        return sa.and_(extra.is_not(None), sa.func.json_valid(extra), found)

    def _pg_in_field(self) -> Condition:
        """The JSON text of the fields holds the text (as written, or escaped the way
        ``json.dumps`` escapes it), which the fields index serves, and then one field
        really does."""
        text = sa.cast(task_logs.c.extra, sa.Text)
        forms = dict.fromkeys((self.text, json.dumps(self.text)[1:-1]))
        in_json = sa.or_(*(contains(text, form) for form in forms))
        extra = task_logs.c.extra
        objects = sa.case((sa.func.json_typeof(extra) == "object", extra))
        field = sa.func.json_each(objects).table_valued("key", "value")
        value = field.c.value.op("#>>")(sa.literal_column("'{}'"))  # the scalar as text
        found = sa.exists().where(
            sa.func.json_typeof(field.c.value).in_(_PG_SCALARS),
            sa.or_(contains(field.c.key, self.text), contains(value, self.text)),
            *self._shown(field.c.key),
        )
        # IS NOT NULL first: NULL AND x still evaluates x (json_each, for every line
        # without fields).
        return sa.and_(extra.is_not(None), in_json, found)

    def _shown(self, key: sa.ColumnElement[str]) -> list[Condition]:
        normal = sa.func.lower(
            sa.func.replace(sa.func.replace(sa.func.replace(key, "-", ""), "_", ""), " ", "")
        )
        return [~normal.contains(fragment, autoescape=True) for fragment in self.hidden_fields]
