"""Group commit's writes on PostgreSQL, straight through asyncpg.

:class:`~taskflow._store.pg_writer.PGWriter` runs :func:`write_batch` on a
connection it keeps for group commit: every kind of write of a batch, in order, in one
transaction, one statement per kind over arrays (``unnest``), which asyncpg prepares
once and caches by its text. Each kind returns one result per operation, as the SQLite
writer's do (:mod:`taskflow._store.sqlite_batch`).

Plain inserts and finishes carry their notification in a ``WITH``, so a batch of one
kind (the usual batch when tasks arrive one at a time) is one statement between
``BEGIN`` and ``COMMIT``: three round trips. The statement is not left to commit by
itself (which would save two): a connection lost while it runs must leave nothing
written, so that only a lost ``COMMIT`` can hide whether a batch landed (see
``test_partition.py``).

Values are passed as the column types would convert them (JSON as text, cast in the
statement; timestamps timezone-aware), so a row reads back the same whichever path
wrote it; ``tests/test_store.py`` compares them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from taskflow._store import hot_sql
from taskflow._store.batch import Groups, Op
from taskflow._store.database import NOTIFY_CHANNEL
from taskflow._store.hot_sql import Start, Write
from taskflow._store.rows import NewLogLine, NewTask, Outcome, ProgressUpdate, ended_notification

# asyncpg's Connection, untyped here (the package ships no type information).
Connection = Any

# As ``SQLITE_START``: a start repeated by its owner with its own start time matches
# and changes nothing.
PG_START = """
UPDATE taskflow_tasks
SET status = 'running', owner = $1, started_at = $2, finished_at = NULL,
    attempts = attempts + (CASE WHEN status = 'pending' THEN 1 ELSE 0 END)
WHERE id = ANY($3::text[])
    AND (status = 'pending' OR (status = 'running' AND owner = $1 AND started_at = $2))
RETURNING id, attempts
"""

# ``WITH ORDINALITY`` and ``ORDER BY``: the lines take their ids in the order written,
# so a live tail reading ``id > last`` never skips one.
PG_LOG = """
INSERT INTO taskflow_task_logs (task_id, at, level, message, extra)
SELECT task_id, at, level, message, extra::json
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[])
    WITH ORDINALITY AS u(task_id, at, level, message, extra, n)
ORDER BY n
"""

PG_PROGRESS = """
UPDATE taskflow_tasks AS t SET progress = u.progress
FROM unnest($1::text[], $2::text[]) AS u(id, progress)
WHERE t.id = u.id
"""

# Keep the attempt that just failed, now that its task is pending again, where the
# finish was applied (see ``SQLITE_RETRIED_ATTEMPT``).
PG_RETRIED_ATTEMPT = """
INSERT INTO taskflow_task_attempts (
    task_id, attempt, instance, started_at, finished_at, status, error, traceback)
SELECT t.id, t.attempts, t.owner, t.started_at, u.finished_at, 'failed', u.error, u.traceback
FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::text[])
    AS u(id, owner, attempt, finished_at, error, traceback)
JOIN taskflow_tasks AS t ON t.id = u.id
WHERE t.status = 'pending' AND t.owner = u.owner AND t.attempts = u.attempt
ON CONFLICT (task_id, attempt) DO UPDATE SET
    finished_at = excluded.finished_at, status = excluded.status, error = excluded.error,
    traceback = excluded.traceback
"""

PG_ALIASES = """
INSERT INTO taskflow_task_aliases (alias, task_id)
SELECT alias, task_id FROM unnest($1::text[], $2::text[]) AS u(alias, task_id)
"""

PG_NOTIFY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS u(payload)"

# A statement and a notification as one statement: PostgreSQL runs a data-modifying
# ``WITH`` to completion whether or not the query reads it. ``first`` and ``second``
# number the two parameters after the statement's own.
_WITH_NOTIFY = """
WITH written AS ({statement})
SELECT pg_notify(${first}, payload) FROM unnest(${second}::text[]) AS u(payload)
"""
PG_INSERT_NOTIFY = _WITH_NOTIFY.format(statement=hot_sql.PG_INSERT, first=25, second=26)
PG_FINISH_NOTIFY = _WITH_NOTIFY.format(statement=hot_sql.PG_FINISH, first=9, second=10)


async def write_batch(connection: Connection, groups: Groups[Write]) -> list[Sequence[object]]:
    """Run each group of operations (``(kind, ops)``, in order) in one transaction; one
    result list each."""
    async with connection.transaction():
        return [await _KINDS[kind](connection, ops) for kind, ops in groups]


async def _insert(connection: Connection, ops: Sequence[Op[Write]]) -> list[str]:
    new = [cast(NewTask, op.data) for op in ops]
    plain = [task for task in new if task.idempotency_key is None]
    keyed = [task for task in new if task.idempotency_key is not None]
    queues = {task.queue for task in new if task.owner is None}
    if plain:
        arrays = hot_sql.pg_insert_arrays(plain)
        if queues:  # the notification rides on the insert
            await connection.execute(PG_INSERT_NOTIFY, *arrays, NOTIFY_CHANNEL, sorted(queues))
            queues = set()
        else:
            await connection.execute(hot_sql.PG_INSERT, *arrays)
    holders = await _insert_keyed(connection, keyed) if keyed else {}
    limited = hot_sql.limit_keys(new)
    if limited:
        keys, ids = [key for key, _ in limited], [task_id for _, task_id in limited]
        await connection.execute(hot_sql.PG_SET_LIMIT_KEYS, ids, keys)
    await _notify(connection, queues)
    return [holders.get(task.id, task.id) for task in new]


async def _insert_keyed(connection: Connection, keyed: Sequence[NewTask]) -> dict[str, str]:
    """Insert tasks whose live key is free; for each task, the id holding its key. A
    holder that ended between the insert and the read (another transaction failed or
    cancelled it) frees its key: those tasks are inserted again. A ``promised`` id that
    lost its key becomes an alias of the holder."""
    holder_of: dict[str, str] = {}
    left = list(keyed)
    while left:
        await connection.execute(hot_sql.PG_INSERT_KEYED, *hot_sql.pg_insert_arrays(left))
        keys = list({cast(str, task.idempotency_key) for task in left})
        holder_of.update(
            (key, task_id) for key, task_id in await connection.fetch(hot_sql.PG_KEY_HOLDERS, keys)
        )
        left = [task for task in left if task.idempotency_key not in holder_of]
    holders = {task.id: holder_of[cast(str, task.idempotency_key)] for task in keyed}
    aliases = [task for task in keyed if task.promised and holders[task.id] != task.id]
    if aliases:
        await connection.execute(
            PG_ALIASES, [task.id for task in aliases], [holders[task.id] for task in aliases]
        )
    return holders


async def _start(connection: Connection, ops: Sequence[Op[Write]]) -> list[int | None]:
    started: dict[str, int] = {}
    for instance, now, ids in hot_sql.group_starts(ops):
        hot_sql.check_aware(now)
        started.update(await connection.fetch(PG_START, instance, now, ids))
    return [started.get(cast(Start, op.data).id) for op in ops]


async def _log(connection: Connection, ops: Sequence[Op[Write]]) -> list[None]:
    lines = [cast(NewLogLine, op.data) for op in ops]
    hot_sql.check_aware(*(line.at for line in lines))
    await connection.execute(
        PG_LOG,
        [line.task_id for line in lines],
        [line.at for line in lines],
        [line.level for line in lines],
        [line.message for line in lines],
        [json.dumps(line.extra) for line in lines],  # None is stored as JSON null
    )
    return [None] * len(ops)


async def _progress(connection: Connection, ops: Sequence[Op[Write]]) -> list[None]:
    # One row per task, its latest report: an UPDATE … FROM applies one of several
    # matching source rows, not the last.
    latest = {u.task_id: u.report for u in (cast(ProgressUpdate, op.data) for op in ops)}
    await connection.execute(PG_PROGRESS, list(latest), list(latest.values()))
    return [None] * len(ops)


async def _finish(connection: Connection, ops: Sequence[Op[Write]]) -> list[None]:
    updates = [hot_sql.finish_params(cast(Outcome, op.data)) for op in ops]
    arrays = hot_sql.pg_finish_arrays(updates)
    ended = [cast(str, params["b_id"]) for params in updates if params["b_status"] != "pending"]
    if ended:  # one notification per commit, for whoever waits on these tasks
        payload = [ended_notification(ended)]
        await connection.execute(PG_FINISH_NOTIFY, *arrays, NOTIFY_CHANNEL, payload)
    else:
        await connection.execute(hot_sql.PG_FINISH, *arrays)
    retried = [params for params in updates if params["b_status"] == "pending"]
    if retried:
        columns = ("b_id", "b_owner", "b_attempt", "b_finished_at", "b_error", "b_traceback")
        await connection.execute(
            PG_RETRIED_ATTEMPT, *([params[name] for params in retried] for name in columns)
        )
    return [None] * len(ops)


async def _notify(connection: Connection, payloads: set[str]) -> None:
    """Tell listening instances, at commit (see ``Database._notify``)."""
    if payloads:
        await connection.execute(PG_NOTIFY, NOTIFY_CHANNEL, sorted(payloads))


_Kind = Callable[[Connection, Sequence[Op[Write]]], Awaitable[Sequence[object]]]

_KINDS: dict[str, _Kind] = {
    "insert": _insert,
    "start": _start,
    "log": _log,
    "progress": _progress,
    "finish": _finish,
}
