"""Group commit's writes on a SQLite file, as one synchronous transaction.

:class:`~taskflow._store.sqlite_writer.SQLiteWriter` runs :func:`write_batch` on its
thread: every kind of write of a batch, in order, through the stdlib driver with the
statements and values of :mod:`taskflow._store.hot_sql`. Each kind returns one result
per operation, as the async handlers of ``TaskSQL`` do for the other databases.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import cast

from taskflow._store import hot_sql
from taskflow._store.batch import Groups, Op
from taskflow._store.hot_sql import Start, Write
from taskflow._store.rows import NewLogLine, NewTask, Outcome, ProgressUpdate
from taskflow._store.schema import sqlite_text


def write_batch(connection: sqlite3.Connection, groups: Groups[Write]) -> list[Sequence[object]]:
    """Run each group of operations (``(kind, ops)``, in order); one result list each."""
    return [_KINDS[kind](connection, ops) for kind, ops in groups]


def _insert(connection: sqlite3.Connection, ops: Sequence[Op[Write]]) -> list[str]:
    new = [cast(NewTask, op.data) for op in ops]
    plain = [task for task in new if task.idempotency_key is None]
    keyed = [task for task in new if task.idempotency_key is not None]
    if plain:
        values = [hot_sql.sqlite_insert_values(task) for task in plain]
        connection.executemany(hot_sql.SQLITE_INSERT, values)
    holders = _insert_keyed(connection, keyed) if keyed else {}
    limited = hot_sql.limit_keys(new)
    if limited:
        connection.executemany(hot_sql.SQLITE_SET_LIMIT_KEY, limited)
    return [holders.get(task.id, task.id) for task in new]


def _insert_keyed(connection: sqlite3.Connection, keyed: Sequence[NewTask]) -> dict[str, str]:
    """Insert tasks whose live key is free; for each task, the id holding its key (in
    one write transaction nothing else can end the holder in between). A ``promised``
    id that lost its key becomes an alias of the holder."""
    values = [hot_sql.sqlite_insert_values(task) for task in keyed]
    connection.executemany(hot_sql.SQLITE_INSERT_KEYED, values)
    keys = list({cast(str, task.idempotency_key) for task in keyed})
    holder_of: dict[str, str] = {}
    step = hot_sql.SQLITE_KEYS_PER_READ
    for start in range(0, len(keys), step):
        chunk = keys[start : start + step]
        statement = hot_sql.SQLITE_KEY_HOLDERS.format(marks=", ".join("?" * len(chunk)))
        holder_of.update(connection.execute(statement, chunk).fetchall())
    holders = {task.id: holder_of[cast(str, task.idempotency_key)] for task in keyed}
    aliases = [
        (task.id, holders[task.id])
        for task in keyed
        if task.promised and holders[task.id] != task.id
    ]
    if aliases:
        connection.executemany(
            "INSERT INTO taskflow_task_aliases (alias, task_id) VALUES (?, ?)", aliases
        )
    return holders


def _start(connection: sqlite3.Connection, ops: Sequence[Op[Write]]) -> list[int | None]:
    started: dict[str, int] = {}
    step = hot_sql.SQLITE_IDS_PER_START
    for instance, now, ids in hot_sql.group_starts(ops):
        for first in range(0, len(ids), step):
            chunk = ids[first : first + step]
            statement = hot_sql.SQLITE_START.format(marks=", ".join("?" * len(chunk)))
            rows = connection.execute(statement, (instance, sqlite_text(now), *chunk))
            started.update(rows.fetchall())
    return [started.get(cast(Start, op.data).id) for op in ops]


def _log(connection: sqlite3.Connection, ops: Sequence[Op[Write]]) -> list[None]:
    values = [hot_sql.sqlite_log_values(cast(NewLogLine, op.data)) for op in ops]
    connection.executemany(hot_sql.SQLITE_LOG, values)
    return [None] * len(ops)


def _progress(connection: sqlite3.Connection, ops: Sequence[Op[Write]]) -> list[None]:
    updates = [cast(ProgressUpdate, op.data) for op in ops]
    connection.executemany(hot_sql.SQLITE_PROGRESS, [(u.report, u.task_id) for u in updates])
    return [None] * len(ops)


def _finish(connection: sqlite3.Connection, ops: Sequence[Op[Write]]) -> list[None]:
    updates = [hot_sql.finish_params(cast(Outcome, op.data)) for op in ops]
    connection.executemany(
        hot_sql.SQLITE_FINISH, [hot_sql.sqlite_finish_values(params) for params in updates]
    )
    retried = [params for params in updates if params["b_status"] == "pending"]
    if retried:
        connection.executemany(
            hot_sql.SQLITE_RETRIED_ATTEMPT,
            [hot_sql.sqlite_retried_values(params) for params in retried],
        )
    return [None] * len(ops)


_KINDS: dict[str, Callable[[sqlite3.Connection, Sequence[Op[Write]]], Sequence[object]]] = {
    "insert": _insert,
    "start": _start,
    "log": _log,
    "progress": _progress,
    "finish": _finish,
}
