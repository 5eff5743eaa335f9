"""Catching up the dashboard's text indexes: the errors and arguments of the tasks stored
since the searches last looked.

No trigger fills these indexes (one would cost every insert and finish of a task); a
task search adds what is missing first. SQLite keeps the errors and the arguments in
FTS5 tables, PostgreSQL the arguments in ``taskflow_task_args_search``; how far each one
has reached is kept in ``taskflow_meta``. The searches themselves are in
:mod:`taskflow._store.search` and :mod:`taskflow._store.task_search`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from taskflow._store.admin_sql import meta_value
from taskflow._store.schema import (
    ARGS_FTS,
    ARGS_INDEXED_UNTIL,
    ERRORS_INDEXED_UNTIL,
    TASKS_FTS,
    TERMINAL_STATUSES,
    UTCDateTime,
    meta,
    tasks,
)
from taskflow._store.search import args_search
from taskflow._store.sql import SQLStore

# SQLite: how far before the finish time it has reached a search re-reads finished
# tasks for the error index (see index_new_errors); PostgreSQL: how far before the
# creation time it has reached a search looks for tasks missing from the arguments'
# table (see index_new_pg_arguments).
CATCH_UP_SLACK = timedelta(seconds=10)
# The statuses of finished tasks that carry an error.
ERROR_STATUSES = tuple(status for status in TERMINAL_STATUSES if status != "success")
_ROWID: sa.ColumnElement[int] = sa.literal_column(f"{tasks.name}.rowid")
# Task rows added to the arguments' index (SQLite's FTS5 table, PostgreSQL's
# taskflow_task_args_search) per write transaction, so that a search catching up on many
# tasks makes progress in short transactions (on SQLite never holding the write lock long).
ARGS_CHUNK = 20_000


async def index_new_errors(store: SQLStore) -> None:
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
    async with store.read() as conn:
        mark = _moment(await meta_value(conn, ERRORS_INDEXED_UNTIL))
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
    async with store.write() as conn:
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


async def index_new_arguments(store: SQLStore) -> None:
    """SQLite: add to the arguments' FTS5 table the tasks stored since the searches
    last did, :data:`ARGS_CHUNK` rows per write transaction.

    Arguments never change once stored, so tasks are taken by rowid, past the last
    one indexed (kept in ``taskflow_meta`` under
    :data:`~taskflow._store.schema.ARGS_INDEXED_UNTIL` with its id and the rowid
    the table starts from). The table is contentless: entries of deleted tasks stay
    (a candidate, never a result) until they outnumber the live ones, and then the
    table is filled again from scratch, as it is when the last task indexed is gone
    (SQLite may then give its rowid to a new task)."""
    while True:
        async with store.read() as conn:  # most searches find nothing to add
            if await _arguments_to_index(conn) is None:
                return
        async with store.write() as conn:
            chunk = await _arguments_to_index(conn)
            if chunk is None:
                return
            await _index_arguments(conn, chunk)


async def index_new_pg_arguments(store: SQLStore) -> None:
    """PostgreSQL: add to the arguments' table (``taskflow_task_args_search``) the
    tasks stored since the searches last did, :data:`ARGS_CHUNK` per write
    transaction, so that the first search over a big table makes progress in short
    transactions.

    Task ids are random, so tasks are taken in order of creation time, past the one
    reached (kept in ``taskflow_meta`` under
    :data:`~taskflow._store.schema.ARGS_INDEXED_UNTIL`). A task's creation time is
    stamped before its insert commits, by the clock of the process that stores it,
    so a task can appear with a time before the one reached: the last
    :data:`CATCH_UP_SLACK` before it are looked at again, and the tasks there that
    the table lacks are added (the others are skipped: ``ON CONFLICT DO NOTHING``).
    A task whose creation time is more than that before the time reached when its
    insert commits (a clock that far behind, or a transaction open that long) is
    never added: searches that go through the index miss its arguments. Deleted
    tasks leave the table with their rows (``ON DELETE CASCADE``). When nothing is
    missing but the newest task is well past the time reached (only encrypted tasks
    came), the time moves up to it, so that the window read stays short."""
    async with store.read() as conn:  # most searches find nothing to add
        start, newest, mark = await _first_unindexed(conn)
    if start is None:
        if newest is not None and (mark is None or newest - mark > CATCH_UP_SLACK):
            async with store.write() as conn:
                await _reach_arguments(conn, newest)
        return
    inclusive = True
    while start is not None:
        async with store.write() as conn:
            start = await _index_pg_arguments(conn, start, inclusive=inclusive)
        inclusive = False


@dataclass(frozen=True, slots=True)
class _ArgumentChunk:
    """SQLite: task rowids ``(start, end]`` to add to the arguments' FTS5 table (the
    task at ``end`` has id ``end_id``), which is filled from rowid ``first``; ``refill``:
    empty the table first."""

    start: int
    end: int
    end_id: str
    first: int
    refill: bool


async def _arguments_to_index(conn: AsyncConnection) -> _ArgumentChunk | None:
    """SQLite: the next chunk of tasks whose arguments the FTS5 table lacks (None: it
    has them all); see :func:`index_new_arguments`. When nothing is
    left, which is what most searches find, this is one statement."""
    rowid = _ROWID
    newest = sa.select(tasks.c.id).order_by(rowid.desc()).limit(1)
    state = (
        await conn.execute(
            sa.select(
                sa.select(meta.c.value)
                .where(meta.c.key == ARGS_INDEXED_UNTIL)
                .scalar_subquery()
                .label("mark"),
                sa.select(sa.func.min(rowid)).select_from(tasks).scalar_subquery().label("low"),
                sa.select(sa.func.max(rowid)).select_from(tasks).scalar_subquery().label("high"),
                newest.scalar_subquery().label("high_id"),
            )
        )
    ).one()
    mark, lowest = _argument_mark(state.mark), state.low
    if lowest is None:
        return None
    refill = mark is None
    if mark is not None:
        start, last_id, first = mark
        stale, live = lowest - first, start - lowest
        if stale > max(live, ARGS_CHUNK):
            refill = True
        elif state.high == start:
            if state.high_id == last_id:
                return None  # up to date
            refill = True  # the task at the mark was deleted and its rowid given again
        else:
            at_mark = await conn.scalar(sa.select(tasks.c.id).where(rowid == start))
            refill = at_mark != last_id
    if refill:
        start, first = lowest - 1, lowest
    newer = sa.select(rowid.label("rowid"), tasks.c.id).where(rowid > start)
    end = (await conn.execute(newer.order_by(rowid).offset(ARGS_CHUNK - 1).limit(1))).first()
    if end is None:
        end = (await conn.execute(newer.order_by(rowid.desc()).limit(1))).first()
    if end is None:
        return None
    return _ArgumentChunk(start, end.rowid, end.id, first, refill)


async def _index_arguments(conn: AsyncConnection, chunk: _ArgumentChunk) -> None:
    """SQLite: add the arguments of ``chunk``'s tasks that are not encrypted to the FTS5
    table, and keep how far it goes."""
    if chunk.refill:
        await conn.exec_driver_sql(f"INSERT INTO {ARGS_FTS} ({ARGS_FTS}) VALUES ('delete-all')")
    await conn.exec_driver_sql(
        f"INSERT INTO {ARGS_FTS} (rowid, payload) SELECT rowid, payload FROM {tasks.name} "
        "WHERE rowid > ? AND rowid <= ? AND NOT encrypted",
        (chunk.start, chunk.end),
    )
    value = f"{chunk.end} {chunk.end_id} {chunk.first}"
    now = datetime.now(UTC)
    statement = sqlite.insert(meta).values(key=ARGS_INDEXED_UNTIL, value=value, updated_at=now)
    update = {"value": value, "updated_at": now}
    await conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_=update))


async def _first_unindexed(
    conn: AsyncConnection,
) -> tuple[tuple[datetime, str] | None, datetime | None, datetime | None]:
    """PostgreSQL: the creation time and id of the first task (in that order) whose
    arguments the arguments' table lacks, from :data:`CATCH_UP_SLACK` before the time
    reached (None: it has them all), the newest creation time and the time reached; see
    :func:`index_new_pg_arguments`. It reads the tasks created in that
    window, each probed in the table."""
    mark = _moment(await meta_value(conn, ARGS_INDEXED_UNTIL))
    listed = sa.select(sa.literal(1)).where(args_search.c.task_id == tasks.c.id)
    query = (
        sa.select(tasks.c.created_at, tasks.c.id)
        .where(sa.not_(tasks.c.encrypted), ~sa.exists(listed))
        .order_by(tasks.c.created_at, tasks.c.id)
        .limit(1)
    )
    if mark is not None:
        query = query.where(tasks.c.created_at > mark - CATCH_UP_SLACK)
    row = (await conn.execute(query)).first()
    if row is not None:
        return (row.created_at, row.id), None, mark
    newest = await conn.scalar(sa.select(sa.func.max(tasks.c.created_at)))
    return None, newest, mark


async def _index_pg_arguments(
    conn: AsyncConnection, start: tuple[datetime, str], *, inclusive: bool
) -> tuple[datetime, str] | None:
    """PostgreSQL: add to the arguments' table the tasks that are not encrypted among
    the next :data:`ARGS_CHUNK` from ``start`` (creation time and id, ``inclusive`` or
    not), move the time reached forward to the last one's, and return where the next
    chunk starts (None: no task is left).

    The chunk's tasks are locked against deletion (``FOR KEY SHARE``, the lock the
    foreign key takes anyway): a task deleted meanwhile is skipped, where its insert
    would break the foreign key."""
    created, task_id = start
    position = sa.tuple_(tasks.c.created_at, tasks.c.id)
    bound = sa.tuple_(sa.literal(created, UTCDateTime), sa.literal(task_id))
    chunk = (
        sa.select(tasks.c.id, tasks.c.created_at, tasks.c.payload, tasks.c.encrypted)
        .where(tasks.c.created_at >= created, position >= bound if inclusive else position > bound)
        .order_by(tasks.c.created_at, tasks.c.id)
        .limit(ARGS_CHUNK)
        .with_for_update(read=True, key_share=True)
        .cte("chunk")
    )
    added = (
        postgresql.insert(args_search)
        .from_select(
            ["task_id", "text"],
            sa.select(chunk.c.id, chunk.c.payload).where(sa.not_(chunk.c.encrypted)),
        )
        .on_conflict_do_nothing(index_elements=["task_id"])
        .cte("added")
    )
    last = (
        await conn.execute(
            sa.select(chunk.c.created_at, chunk.c.id, sa.func.count().over().label("rows"))
            .order_by(chunk.c.created_at.desc(), chunk.c.id.desc())
            .limit(1)
            .add_cte(added)
        )
    ).first()
    if last is None:
        return None
    await _reach_arguments(conn, last.created_at)
    return (last.created_at, last.id) if last.rows == ARGS_CHUNK else None


async def _reach_arguments(conn: AsyncConnection, moment: datetime) -> None:
    """PostgreSQL: keep ``moment`` as the creation time the arguments' table has
    reached, unless a later one is kept already."""
    # Always microseconds and UTC, so that the texts sort as the times do.
    value = moment.astimezone(UTC).isoformat(timespec="microseconds")
    now = datetime.now(UTC)
    statement = postgresql.insert(meta).values(key=ARGS_INDEXED_UNTIL, value=value, updated_at=now)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": value, "updated_at": now},
            where=meta.c.value < statement.excluded.value,  # never backwards
        )
    )


def _argument_mark(text: str | None) -> tuple[int, str, int] | None:
    """The value of ``ARGS_INDEXED_UNTIL``: the rowid and id of the last task indexed,
    and the rowid the table was filled from (None: nothing indexed)."""
    if not text:
        return None
    rowid, task_id, first = text.split(" ")
    return int(rowid), task_id, int(first)


def _moment(text: str | None) -> datetime | None:
    """A UTC time written as ISO text (naive text is UTC, as SQLite stores it)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
