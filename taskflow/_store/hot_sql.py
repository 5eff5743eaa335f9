"""The hot statements of group commit, run through the driver.

The inserts, starts, log lines and finishes of group commit run as fixed statements
with plain values, with no per-row parameter processing: about a quarter of a task's
CPU went there. On SQLite they are ``executemany`` with tuples (on a file, on the
writer thread: :mod:`taskflow._store.sqlite_writer`); on PostgreSQL one statement per
batch over arrays (``unnest``), as asyncpg's ``executemany`` would still run one
statement per row (the statements of the other kinds are in
:mod:`taskflow._store.pg_batch`). The values are converted here exactly as the column types convert
them (``sqlite_text`` for SQLite timestamps, ``json.dumps`` for JSON), so a row reads
back the same whichever way it was written; the store tests compare the paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from taskflow._store.batch import Op
from taskflow._store.rows import NewLogLine, NewTask, Outcome, ProgressUpdate
from taskflow._store.schema import sqlite_text


@dataclass(frozen=True, slots=True)
class Start:
    """pending → running for ``id`` on ``owner``, as of ``started_at``."""

    id: str
    owner: str
    started_at: datetime


#: What group commit carries: one record per kind of write.
Write = NewTask | Start | NewLogLine | Outcome | ProgressUpdate

# The predicate of the partial unique index on idempotency keys: queries that spell it
# literally (not with bound parameters) can use that index.
LIVE_KEY_PREDICATE = (
    "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
)


def group_starts(ops: Sequence[Op[Write]]) -> list[tuple[str, datetime, list[str]]]:
    """The starts of a batch by instance: ``(instance, started_at, task ids)``."""
    groups: dict[str, tuple[datetime, list[str]]] = {}
    for op in ops:
        start = cast(Start, op.data)
        groups.setdefault(start.owner, (start.started_at, []))[1].append(start.id)
    return [(instance, now, ids) for instance, (now, ids) in groups.items()]


def finish_params(outcome: Outcome) -> dict[str, object]:
    """The values of one finish, by bind name."""
    status = outcome.status
    return {
        "b_id": outcome.id,
        "b_attempt": outcome.attempt,
        "b_status": status,
        "b_result": outcome.result,
        "b_error": outcome.error,
        "b_traceback": outcome.traceback,
        "b_finished_at": outcome.finished_at,
        "b_task_finished_at": None if status == "pending" else outcome.finished_at,
        "b_next_attempt_at": outcome.next_attempt_at or outcome.finished_at,
        "b_owner": outcome.owner,
    }


# -- SQLite ------------------------------------------------------------------------------

# Both inserts name the columns in this order.
_INSERT_TASK = """
INSERT INTO taskflow_tasks (
    id, func_name, func_path, status, payload, encrypted, attempts, max_retries, priority,
    queue, tags, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
    requeue_on_interrupt, cancel_requested, created_at, next_attempt_at, retry_delay,
    retry_max_delay, error, finished_at, trace_context)
"""

SQLITE_INSERT = (
    _INSERT_TASK
    + """\
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)
"""
)

# A task with an idempotency key is inserted unless a live task holds the key (the
# conflict target is the partial unique index, named by its own predicate).
_ON_KEY_CONFLICT = f"ON CONFLICT (idempotency_key) WHERE {LIVE_KEY_PREDICATE} DO NOTHING"
SQLITE_INSERT_KEYED = SQLITE_INSERT.rstrip() + "\n" + _ON_KEY_CONFLICT
SQLITE_KEYS_PER_READ = 500  # well under SQLite's limit of bound parameters
SQLITE_KEY_HOLDERS = (
    "SELECT idempotency_key, id FROM taskflow_tasks"
    f" WHERE idempotency_key IN ({{marks}}) AND {LIVE_KEY_PREDICATE}"
)

SQLITE_FINISH = """
UPDATE taskflow_tasks
SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ?, next_attempt_at = ?
WHERE id = ? AND status = 'running' AND owner = ?
"""


def sqlite_insert_values(task: NewTask) -> tuple[object, ...]:
    """One row of :data:`SQLITE_INSERT`."""
    rejected = task.rejection is not None
    return (
        task.id,
        task.func_name,
        task.func_path,
        "rejected" if rejected else "pending",
        task.payload,
        task.encrypted,
        task.max_retries,
        task.priority,
        task.queue,
        json.dumps(task.tags),
        task.idempotency_key,
        task.source,
        task.schedule_id,
        sqlite_text(task.schedule_slot),
        task.run_key,
        task.owner,
        task.requeue_on_interrupt,
        sqlite_text(task.created_at),
        sqlite_text(task.next_attempt_at),
        task.retry_delay,
        task.retry_max_delay,
        task.rejection,
        sqlite_text(task.created_at) if rejected else None,
        task.trace_context,
    )


def sqlite_finish_values(params: dict[str, object]) -> tuple[object, ...]:
    """One row of :data:`SQLITE_FINISH`."""
    return (
        params["b_status"],
        params["b_result"],
        params["b_error"],
        params["b_traceback"],
        sqlite_text(cast("datetime | None", params["b_task_finished_at"])),
        sqlite_text(cast("datetime", params["b_next_attempt_at"])),
        params["b_id"],
        params["b_owner"],
    )


SQLITE_IDS_PER_START = 500  # ids per start statement, under SQLite's bound-parameter limit
# A start repeated by its owner with its own start time (its commit landed but the
# reply was lost, and the runner asked again) matches too and changes nothing: the
# task runs, at the attempt it already counted.
SQLITE_START = """
UPDATE taskflow_tasks
SET status = 'running', owner = ?1, started_at = ?2, finished_at = NULL,
    attempts = attempts + (CASE WHEN status = 'pending' THEN 1 ELSE 0 END)
WHERE id IN ({marks})
    AND (status = 'pending' OR (status = 'running' AND owner = ?1 AND started_at = ?2))
RETURNING id, attempts
"""

SQLITE_LOG = """
INSERT INTO taskflow_task_logs (task_id, at, level, message, extra) VALUES (?, ?, ?, ?, ?)
"""

# Keep the attempt that just failed, now that its task is pending again (see
# ``TaskSQL._retried_attempt``, the same statement for the other paths).
SQLITE_RETRIED_ATTEMPT = """
INSERT INTO taskflow_task_attempts (
    task_id, attempt, instance, started_at, finished_at, status, error, traceback)
SELECT id, attempts, owner, started_at, ?, 'failed', ?, ?
FROM taskflow_tasks
WHERE id = ? AND status = 'pending' AND owner = ? AND attempts = ?
ON CONFLICT (task_id, attempt) DO UPDATE SET
    finished_at = excluded.finished_at, status = excluded.status, error = excluded.error,
    traceback = excluded.traceback
"""


SQLITE_PROGRESS = "UPDATE taskflow_tasks SET progress = ? WHERE id = ?"

# The limit of tasks of limited functions (``concurrency=``, ``rate_limit=``), set in the
# insert's transaction: the inserts above stay as they are for every other task.
SQLITE_SET_LIMIT_KEY = "UPDATE taskflow_tasks SET limit_key = ? WHERE id = ?"
PG_SET_LIMIT_KEYS = """
UPDATE taskflow_tasks AS t SET limit_key = u.limit_key
FROM unnest($1::text[], $2::text[]) AS u(id, limit_key)
WHERE t.id = u.id
"""


def limit_keys(new: Sequence[NewTask]) -> list[tuple[str, str]]:
    """``(limit_key, id)`` of the tasks of ``new`` that count against a limit."""
    return [(task.limit_key, task.id) for task in new if task.limit_key is not None]


def sqlite_log_values(line: NewLogLine) -> tuple[object, ...]:
    """One row of :data:`SQLITE_LOG` (``extra`` as the JSON column stores it: ``None``
    becomes JSON ``null``)."""
    return (line.task_id, sqlite_text(line.at), line.level, line.message, json.dumps(line.extra))


def sqlite_retried_values(params: dict[str, object]) -> tuple[object, ...]:
    """One row of :data:`SQLITE_RETRIED_ATTEMPT`."""
    return (
        sqlite_text(cast("datetime", params["b_finished_at"])),
        params["b_error"],
        params["b_traceback"],
        params["b_id"],
        params["b_owner"],
        params["b_attempt"],
    )


# -- PostgreSQL --------------------------------------------------------------------------

PG_INSERT = (
    _INSERT_TASK
    + """\
SELECT id, func_name, func_path, status, payload, encrypted, 0, max_retries, priority,
    queue, tags::json, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
    requeue_on_interrupt, false, created_at, next_attempt_at, retry_delay,
    retry_max_delay, error, finished_at, trace_context
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::int[],
    $8::int[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::timestamptz[], $15::text[], $16::text[], $17::bool[], $18::timestamptz[],
    $19::timestamptz[], $20::float8[], $21::float8[], $22::text[], $23::timestamptz[],
    $24::text[])
    AS t(id, func_name, func_path, status, payload, encrypted, max_retries, priority, queue,
         tags, idempotency_key, source, schedule_id, schedule_slot, run_key, owner,
         requeue_on_interrupt, created_at, next_attempt_at, retry_delay, retry_max_delay,
         error, finished_at, trace_context)
"""
)

PG_INSERT_KEYED = PG_INSERT.rstrip() + "\n" + _ON_KEY_CONFLICT
PG_KEY_HOLDERS = (
    "SELECT idempotency_key, id FROM taskflow_tasks"
    f" WHERE idempotency_key = ANY($1::text[]) AND {LIVE_KEY_PREDICATE}"
)

PG_FINISH = """
UPDATE taskflow_tasks AS t
SET status = u.status, result = u.result, error = u.error, traceback = u.traceback,
    finished_at = u.finished_at, next_attempt_at = u.next_attempt_at
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::timestamptz[])
    AS u(id, owner, status, result, error, traceback, finished_at, next_attempt_at)
WHERE t.id = u.id AND t.status = 'running' AND t.owner = u.owner
"""


def pg_insert_arrays(new: Sequence[NewTask]) -> tuple[list[Any], ...]:
    """One array per column of :data:`PG_INSERT`, in its order."""
    for task in new:
        check_aware(task.created_at, task.next_attempt_at, task.schedule_slot)
    return (
        [task.id for task in new],
        [task.func_name for task in new],
        [task.func_path for task in new],
        ["pending" if task.rejection is None else "rejected" for task in new],
        [task.payload for task in new],
        [task.encrypted for task in new],
        [task.max_retries for task in new],
        [task.priority for task in new],
        [task.queue for task in new],
        [json.dumps(task.tags) for task in new],
        [task.idempotency_key for task in new],
        [task.source for task in new],
        [task.schedule_id for task in new],
        [task.schedule_slot for task in new],
        [task.run_key for task in new],
        [task.owner for task in new],
        [task.requeue_on_interrupt for task in new],
        [task.created_at for task in new],
        [task.next_attempt_at for task in new],
        [task.retry_delay for task in new],
        [task.retry_max_delay for task in new],
        [task.rejection for task in new],
        [task.created_at if task.rejection is not None else None for task in new],
        [task.trace_context for task in new],
    )


def pg_finish_arrays(updates: Sequence[dict[str, Any]]) -> tuple[list[Any], ...]:
    """One array per column of :data:`PG_FINISH`, in its order."""
    for params in updates:
        check_aware(params["b_task_finished_at"], params["b_next_attempt_at"])
    names = ("b_id", "b_owner", "b_status", "b_result", "b_error", "b_traceback")
    times = ("b_task_finished_at", "b_next_attempt_at")
    return tuple([params[name] for params in updates] for name in (*names, *times))


def check_aware(*moments: datetime | None) -> None:
    """Refuse a naive timestamp, as the column type does (asyncpg would read it as UTC
    without a word)."""
    for moment in moments:
        if moment is not None and moment.tzinfo is None:
            raise ValueError("taskflow timestamps must be timezone-aware")
