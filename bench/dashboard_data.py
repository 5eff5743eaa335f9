"""The dashboard scenario's dataset: many tasks and log lines written with bulk SQL.

The database is migrated with taskflow's own Alembic history first, so every row lands in
the real tables. The indexes of the task and log tables (as declared in
``taskflow/_store/schema.py`` and ``admin_schema.py``) are dropped for the load and
created again from the same declarations afterwards, which is much faster than
maintaining eleven indexes row by row. The load happens one revision before the text
search indexes; upgrading to the head (:func:`index_text`) then indexes the rows, as
it would a user's database. Nothing goes through the taskflow API.

Every value is a function of the row number, computed inside the database (a recursive
CTE on SQLite, ``generate_series`` on PostgreSQL): no rows travel from Python. Task ids
are 32 hex characters that look random (like ``uuid4().hex``) but encode the row number
in their last 8 characters, so log lines can name their task without a join.

The mix (see :data:`FUNCTIONS`): 13 functions on 5 queues with weights, spread evenly
over ``days`` days up to now; about 84 % success, 6 % failed (error and traceback, up to
3 attempts), 2 % cancelled, 1 % interrupted, and among the newest 1 % a backlog of
pending tasks and some running ones. Tags (tenant, region), idempotency keys on payment
tasks, priorities, retries, scheduled runs linked to static and dynamic schedules, one
attempt row per attempt, and live worker instances. Log lines are spread over the
started tasks (about 5 each, levels debug to error, a quarter with structured fields, a
rare customer in 0.002 %, a rare phrase in 0.2 %), plus a few tasks with
``big_log_lines`` lines each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.databases import pg_params

MODULE = "bench.dashboard_app"
# The dataset is loaded at this revision; the next one (0006_text_search) indexes it.
BEFORE_TEXT_SEARCH = "0005_once_run_key"
# Task columns of later revisions: absent while the dataset is loaded.
LATER_COLUMNS = frozenset(
    {
        "retry_of",
        "resolution",
        "resolved_at",
        "trace_context",
        "progress",
        "unique_key",
        "workflow_id",
        "on_dependency_failure",
        "limit_key",
    }
)
TASKS_TABLE = "taskflow_tasks"
LOGS_TABLE = "taskflow_task_logs"
RARE_PHRASE = "quota exceeded"  # in about 0.2 % of the log lines
COMMON_WORD = "batch"  # in about 12 % of the log lines
RARE_FIELD = "cust-40"  # the value of a structured field of about 0.002 % of the lines
CUSTOMERS = 97  # the "customer" field of 0.2 % of the lines is one of cust-0 ... cust-96
HASH_MULTIPLIERS = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 1597334677)
MASK32 = 4294967296
BUCKETS = 4096  # hashes are 0..4095 (the top 12 bits of a 32-bit product)


@dataclass(frozen=True)
class Func:
    """A task function of the dataset: its name, queue, share and typical behaviour."""

    name: str
    queue: str
    weight: int  # per mille of the tasks
    base_ms: int  # typical duration
    error: str  # the error of its failed runs
    priority: int = 0
    scheduled: bool = False  # every run comes from a schedule
    keyed: bool = False  # runs carry an idempotency key


FUNCTIONS: tuple[Func, ...] = (
    Func(
        "send_email", "emails", 300, 350, "SMTPServerDisconnected: Connection unexpectedly closed"
    ),
    Func("send_sms", "emails", 80, 250, "HTTPError: 429 Too Many Requests"),
    Func(
        "resize_image", "default", 150, 1200, "UnidentifiedImageError: cannot identify image file"
    ),
    Func(
        "sync_account",
        "default",
        120,
        2500,
        "ConnectionResetError: [Errno 104] Connection reset by peer",
    ),
    Func("notify_webhook", "webhooks", 100, 600, "TimeoutError: webhook did not answer in 10 s"),
    Func("charge_card", "billing", 80, 900, "CardDeclined: insufficient funds", 10, keyed=True),
    Func("refund_order", "billing", 20, 800, "ValueError: refund exceeds the captured amount", 10),
    Func("generate_report", "reports", 50, 25_000, "MemoryError: report too large"),
    Func(
        "import_csv",
        "reports",
        40,
        40_000,
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0",
    ),
    Func("cleanup_sessions", "default", 20, 3000, "OperationalError: lock timeout", scheduled=True),
    Func("rebuild_search_index", "reports", 10, 90_000, "KeyError: 'document_id'", scheduled=True),
    Func("nightly_digest", "emails", 10, 5000, "SMTPDataError: message too big", scheduled=True),
    Func(
        "reports.tenant_digest",
        "reports",
        20,
        8000,
        "PermissionError: tenant export is disabled",
        scheduled=True,
    ),
)


@dataclass(frozen=True)
class Schedule:
    """A schedule row of the dataset (static ones are also declared by the app)."""

    name: str
    func: str
    kind: str  # "static" or "dynamic"
    cron: str | None = None
    every: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    description: str | None = None

    @property
    def id(self) -> str:
        """A stable 32-hex id (so task rows can point at it)."""
        return f"{abs(hash_text(self.name)):032x}"[-32:]


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("cleanup_sessions", "cleanup_sessions", "static", every=3600.0),
    Schedule("rebuild_search_index", "rebuild_search_index", "static", cron="0 3 * * *"),
    Schedule("nightly_digest", "nightly_digest", "static", cron="30 2 * * *"),
    *(
        Schedule(
            f"tenant-digest-t{tenant:02d}",
            "reports.tenant_digest",
            "dynamic",
            cron=f"{tenant % 60} 6 * * 1-5",
            kwargs={"tenant": f"t{tenant}"},
            enabled=tenant % 7 != 3,
            description=f"weekday digest of tenant t{tenant}",
        )
        for tenant in range(40)
    ),
)

# Live worker instances: (hostname, queues). Their ids are stable, see instance_id().
INSTANCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("web-1", ("default", "emails")),
    ("web-2", ("default", "emails")),
    ("worker-billing-1", ("billing",)),
    ("worker-reports-1", ("reports",)),
    ("worker-reports-2", ("reports",)),
    ("worker-webhooks-1", ("webhooks", "default")),
)
TENANTS = 40
HISTORY_INSTANCE_SPAN = 40_000  # consecutive tasks finished by one (now gone) instance
ATTEMPT_DAYS = 2.0  # attempt rows for the tasks of the last two days (and opened ones)


def hash_text(text: str) -> int:
    """A stable 128-bit number for ``text`` (Python's hash() varies per process)."""
    import hashlib

    return int.from_bytes(hashlib.md5(text.encode()).digest(), "big")  # noqa: S324 - ids


def instance_id(index: int) -> str:
    """The id of live instance ``index``."""
    return f"{hash_text(f'instance-{index}'):032x}"


@dataclass(frozen=True)
class Dataset:
    """How much to write."""

    tasks: int
    logs: int
    days: float = 14.0
    big_log_tasks: int = 3
    big_log_lines: int = 10_000
    tail_share: float = 0.01  # the newest tasks, where pending and running ones are


@dataclass
class Seeded:
    """What was written, how long each phase took, and tasks worth opening."""

    database: str
    tasks: int = 0
    logs: int = 0
    attempts: int = 0
    schedules: int = 0
    instances: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Every phase together."""
        return round(sum(self.seconds.values()), 1)


# -- SQL of each dialect -------------------------------------------------------------------


class Sql:
    """The few expressions that differ between SQLite and PostgreSQL."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.pg = dialect == "postgresql"

    def series(self, count: int, name: str = "n") -> tuple[str, str]:
        """``(prefix, source)``: rows ``name`` = 0 … count-1."""
        if self.pg:
            return "", f"generate_series(0::bigint, {count - 1}::bigint) AS seq({name})"
        return (
            f"WITH RECURSIVE seq({name}) AS (SELECT 0 UNION ALL SELECT {name} + 1 FROM seq "
            f"WHERE {name} + 1 < {count}) ",
            "seq",
        )

    @staticmethod
    def mix32(expr: str, salt: int) -> str:
        """A bijective 32-bit scramble of ``expr`` (0 ≤ expr < 2**32)."""
        multiplier = HASH_MULTIPLIERS[salt % len(HASH_MULTIPLIERS)]
        return f"((({expr}) + {salt * 1000003}) * {multiplier} % {MASK32})"

    def mix(self, expr: str, salt: int) -> str:
        """A pseudo-random number 0 … 4095 from ``expr``."""
        return f"({self.mix32(expr, salt)} / {MASK32 // BUCKETS})"

    def hex8(self, expr: str) -> str:
        """``expr`` as 8 lowercase hex digits."""
        if self.pg:
            return f"lpad(to_hex({expr}), 8, '0')"
        return f"printf('%08x', {expr})"

    def task_id(self, n: str) -> str:
        """The id of task ``n`` (see :func:`task_id`)."""
        parts = [self.hex8(self.mix32(n, salt)) for salt in (11, 12, 13)]
        return " || ".join([*parts, self.hex8(n)])

    def ts(self, microseconds: str) -> str:
        """A timestamp column value from microseconds since the epoch (UTC)."""
        if self.pg:
            return f"(TIMESTAMPTZ 'epoch' + ({microseconds}) * INTERVAL '1 microsecond')"
        return (
            f"(strftime('%Y-%m-%d %H:%M:%S', ({microseconds}) / 1000000, 'unixepoch') "
            f"|| printf('.%06d', ({microseconds}) % 1000000))"
        )

    def json(self, text: str) -> str:
        """A JSON column value from JSON text."""
        return f"({text})::json" if self.pg else text

    @staticmethod
    def text(value: str | None) -> str:
        """A SQL string literal."""
        if value is None:
            return "NULL"
        return "'" + value.replace("'", "''") + "'"


def task_id(n: int) -> str:
    """The id of task ``n``, as :meth:`Sql.task_id` computes it."""

    def mix32(salt: int) -> int:
        multiplier = HASH_MULTIPLIERS[salt % len(HASH_MULTIPLIERS)]
        return (n + salt * 1000003) * multiplier % MASK32

    return "".join(f"{mix32(salt):08x}" for salt in (11, 12, 13)) + f"{n:08x}"


def task_number(task_id_text: str) -> int:
    """The row number ``n`` encoded in a dataset task id."""
    return int(task_id_text[24:], 16)


def _case(subject: str, values: list[str], default: str = "NULL") -> str:
    branches = " ".join(f"WHEN {index} THEN {value}" for index, value in enumerate(values))
    return f"CASE {subject} {branches} ELSE {default} END"


def _traceback(func: Func) -> str:
    short = func.name.rsplit(".", 1)[-1]
    exc = func.error.split(":", 1)[0]
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/.venv/lib/python3.12/site-packages/taskflow/runner.py", line 212, '
        "in _call\n    result = await self._invoke(job)\n"
        '  File "/srv/app/.venv/lib/python3.12/site-packages/taskflow/runner.py", line 248, '
        "in _invoke\n    return await func(*args, **kwargs)\n"
        f'  File "/srv/app/app/tasks.py", line 87, in {short}\n'
        f"    response = await client.{short}(payload, timeout=10)\n"
        '  File "/srv/app/app/clients.py", line 143, in request\n'
        "    raise " + exc + "(message)\n" + func.error + "\n"
    )


@dataclass
class TaskSql:
    """The INSERT … SELECT statements of one dataset on one dialect."""

    sql: Sql
    dataset: Dataset
    now_us: int

    @property
    def step_us(self) -> int:
        """Microseconds between two consecutive tasks' creation."""
        return int(self.dataset.days * 86400e6) // self.dataset.tasks

    @property
    def tail_start(self) -> int:
        """The first of the newest tasks (pending and running ones are among them)."""
        return self.dataset.tasks - max(1, int(self.dataset.tasks * self.dataset.tail_share))

    def function_index(self, h: str) -> str:
        """The function of a task from a hash 0 … 4095, by the functions' weights."""
        total = sum(func.weight for func in FUNCTIONS)
        branches, upto = [], 0
        for index, func in enumerate(FUNCTIONS[:-1]):
            upto += func.weight
            branches.append(f"WHEN {h} < {upto * BUCKETS // total} THEN {index}")
        return f"CASE {' '.join(branches)} ELSE {len(FUNCTIONS) - 1} END"

    def status(self, n: str, h2: str, h3: str) -> str:
        """A task's status from its number and two hashes."""
        q2, q3 = f"({h2} * 1000 / {BUCKETS})", f"({h3} * 1000 / {BUCKETS})"
        tail = f"{n} >= {self.tail_start}"
        return (
            f"CASE WHEN {tail} AND {q2} < 30 THEN 'running' "
            f"WHEN {tail} AND {q2} < 400 THEN 'pending' "
            f"WHEN {q3} < 60 THEN 'failed' WHEN {q3} < 80 THEN 'cancelled' "
            f"WHEN {q3} < 90 THEN 'interrupted' ELSE 'success' END"
        )

    def created_us(self, n: str, h4: str) -> str:
        """When task ``n`` was created, in microseconds (evenly spread, some jitter)."""
        start = self.now_us - self.dataset.tasks * self.step_us
        return f"({start} + {n} * {self.step_us} + {h4} * {self.step_us} / {2 * BUCKETS})"

    def base_rows(self) -> str:
        """Per task: n, its hashes, function, status and creation time."""
        sql = self.sql
        hashes = ", ".join(f"{sql.mix('n', salt)} AS h{salt}" for salt in (1, 2, 3, 4))
        _, source = sql.series(self.dataset.tasks)
        return (
            f"SELECT n, h1, h3, h4, {self.function_index('h1')} AS f, "
            f"{self.status('n', 'h2', 'h3')} AS st, {self.created_us('n', 'h4')} AS c_us "
            f"FROM (SELECT n, {hashes} FROM {source}) hashed"
        )

    def insert_tasks(self) -> str:
        """One statement that writes every task row."""
        sql = self.sql
        text = sql.text
        funcs = FUNCTIONS
        base_us = _case("f", [str(func.base_ms * 1000) for func in funcs])
        start = "(c_us + (h1 % 64) * 20000)"
        finish = f"({start} + {base_us} * (512 + h3) / 1024)"
        live = len(INSTANCES)
        history = " || ".join(
            sql.hex8(sql.mix32(f"(n / {HISTORY_INSTANCE_SPAN})", salt)) for salt in (21, 22, 23, 24)
        )
        owner = (
            f"CASE WHEN st = 'pending' THEN NULL WHEN st = 'running' THEN "
            f"{_case(f'(h4 % {live})', [text(instance_id(i)) for i in range(live)])} "
            f"ELSE {history} END"
        )
        schedule_id = _case(
            "f",
            [
                _case(
                    f"(h4 % {len(own)})", [text(s.id) for s in own], "NULL"
                )  # its schedules, round robin
                if (own := [s for s in SCHEDULES if s.func == func.name])
                else "NULL"
                for func in funcs
            ],
        )
        scheduled = " OR ".join(f"f = {i}" for i, func in enumerate(funcs) if func.scheduled)
        keyed = " OR ".join(f"f = {i}" for i, func in enumerate(funcs) if func.keyed)
        region = _case("(h3 % 3)", ["'eu'", "'us'", "'ap'"])
        tags = sql.json(
            f'\'{{"tenant": "t\' || (h4 % {TENANTS}) || \'", "region": "\' || {region} || \'"}}\''
        )
        payload = (
            f'\'{{"args": [\' || n || \'], "kwargs": {{"tenant": "t\' || (h4 % {TENANTS}) '
            "|| '\"}}'"
        )
        result = _case("f", [text(json.dumps({"ok": True, "fn": func.name})) for func in funcs])
        error = _case("f", [text(func.error) for func in funcs])
        traceback = _case("f", [text(_traceback(func)) for func in funcs])
        columns = {
            "id": sql.task_id("n"),
            "func_name": _case("f", [text(func.name) for func in funcs]),
            "func_path": _case(
                "f", [text(f"{MODULE}:{function_attr(func.name)}") for func in funcs]
            ),
            "status": "st",
            "payload": payload,
            "encrypted": "FALSE",
            "result": f"CASE WHEN st = 'success' THEN {result} END",
            "error": (
                f"CASE st WHEN 'failed' THEN {error} "
                "WHEN 'cancelled' THEN 'cancelled before start' "
                "WHEN 'interrupted' THEN 'instance stopped while it ran' END"
            ),
            "traceback": f"CASE WHEN st = 'failed' THEN {traceback} END",
            "attempts": (
                "CASE st WHEN 'pending' THEN 0 WHEN 'cancelled' THEN 0 "
                "WHEN 'failed' THEN 1 + h4 % 3 ELSE 1 END"
            ),
            "max_retries": "2",
            "priority": _case("f", [str(func.priority) for func in funcs]),
            "queue": _case("f", [text(func.queue) for func in funcs]),
            "tags": tags,
            "idempotency_key": f"CASE WHEN {keyed} THEN 'order-' || n END",
            "source": (
                f"CASE WHEN {scheduled} THEN 'scheduled' WHEN h3 % 50 = 7 THEN 'retry' "
                "ELSE 'manual' END"
            ),
            "schedule_id": schedule_id,
            "schedule_slot": f"CASE WHEN {scheduled} THEN {sql.ts('c_us')} END",
            "owner": owner,
            "requeue_on_interrupt": "FALSE",
            "cancel_requested": "FALSE",
            "created_at": sql.ts("c_us"),
            "started_at": (
                f"CASE WHEN st IN ('pending', 'cancelled') THEN NULL ELSE {sql.ts(start)} END"
            ),
            "finished_at": (
                f"CASE WHEN st IN ('success', 'failed', 'interrupted') THEN {sql.ts(finish)} "
                f"WHEN st = 'cancelled' THEN {sql.ts(start)} END"
            ),
            "next_attempt_at": sql.ts("c_us"),
        }
        prefix, _ = sql.series(self.dataset.tasks)
        return (
            f"{prefix}INSERT INTO {TASKS_TABLE} ({', '.join(columns)}) "
            f"SELECT {', '.join(columns.values())} FROM ({self.base_rows()}) base"
        )

    def spread_count(self) -> int:
        """Log lines to generate over all tasks (those of never-started tasks are
        filtered out, so a few more are generated than kept)."""
        spread = self.dataset.logs - self.dataset.big_log_tasks * self.dataset.big_log_lines
        return max(1, round(max(spread, 0) / 0.975))

    def insert_spread_logs(self, anchors: list[int]) -> str:
        """Log lines spread over the started tasks, in creation order.

        ``anchors``: the positions where the big tasks' lines go; ids leave room there,
        so that ids keep following time as they do when lines are really written."""
        sql, dataset = self.sql, self.dataset
        spread = self.spread_count()
        n = f"(m * {dataset.tasks} / {spread})"
        h1, h2, h3, h4 = (sql.mix(n, salt) for salt in (1, 2, 3, 4))
        status = self.status(n, h2, h3)
        start = f"({self.created_us(n, h4)} + ({h1} % 64) * 20000)"
        base_us = _case(self.function_index(h1), [str(func.base_ms * 1000) for func in FUNCTIONS])
        k = "(m % 7)"
        at = f"({start} + {k} * ({base_us} / 8))"
        x = sql.mix("m", 5)
        levels = f"CASE WHEN {x} < 120 THEN 'error' WHEN {x} < 400 THEN 'warning' " + (
            f"WHEN {x} < 800 THEN 'debug' ELSE 'info' END"
        )
        y = sql.mix("m", 6)
        messages = [
            f"'fetched ' || ({y} % 500) || ' rows from upstream in ' || ({y} % 90 + 3) || ' ms'",
            f"'processing {COMMON_WORD} ' || ({n} % 1000) || ' item ' || {k}",
            f"'POST https://api.example.com/v2/accounts/' || ({y} * 7) || ' answered 200'",
            f"'cache miss for key tenant:t' || ({y} % {TENANTS}) || ':profile'",
            f"'wrote ' || ({y} % 64 + 1) || ' KiB to object storage'",
            f"'retrying after connection reset (attempt ' || ({k} % 3 + 1) || ')'",
            f"'validated payload against schema v' || ({y} % 4 + 1)",
            f"'checkpoint saved at offset ' || ({y} * 37)",
        ]
        message = (
            f"CASE WHEN {y} % 500 = 11 THEN 'upstream {RARE_PHRASE} for tenant t' || "
            f"({y} % {TENANTS}) ELSE {_case(f'({y} % 8)', messages)} END"
        )
        extra = (
            f"CASE WHEN {y} % 4 = 0 THEN "
            + sql.json(f"'{{\"elapsed_ms\": ' || ({y} % 900) || ', \"step\": ' || {k} || '}}'")
            + f" WHEN {y} % 500 = 13 THEN "
            + sql.json(f"'{{\"customer\": \"cust-' || (m % {CUSTOMERS}) || '\"}}'")
            + " END"
        )
        shift = " + ".join(
            [
                f"CASE WHEN m >= {anchor} THEN {dataset.big_log_lines} ELSE 0 END"
                for anchor in anchors
            ]
            or ["0"]
        )
        prefix, source = sql.series(spread, "m")
        return (
            f"{prefix}INSERT INTO {LOGS_TABLE} (id, task_id, at, level, message, extra) "
            f"SELECT m + 1 + {shift}, {sql.task_id(n)}, {sql.ts(at)}, {levels}, {message}, "
            f"{extra} FROM {source} WHERE {status} NOT IN ('pending', 'cancelled')"
        )

    def insert_big_logs(self, index: int, anchor: int, task: str, start_us: int) -> str:
        """The lines of big task ``index`` (at ``anchor`` among the spread lines)."""
        sql, lines = self.sql, self.dataset.big_log_lines
        first_id = anchor + 1 + lines * index
        prefix, source = sql.series(lines)
        level = "CASE WHEN n % 97 = 5 THEN 'warning' ELSE 'info' END"
        message = f"'imported row ' || n || ' of {lines} (' || (n * 13 % 400 + 20) || ' fields)'"
        extra = sql.json("'{\"row\": ' || n || '}'")
        return (
            f"{prefix}INSERT INTO {LOGS_TABLE} (id, task_id, at, level, message, extra) "
            f"SELECT {first_id} + n, {sql.text(task)}, {sql.ts(f'{start_us} + n * 15000')}, "
            f"{level}, {message}, CASE WHEN n % 10 = 0 THEN {extra} END FROM {source}"
        )

    def insert_attempts(self, opened: list[str]) -> str:
        """One row per attempt (earlier attempts failed) of every started task created in
        the last ``ATTEMPT_DAYS`` days, and of the ``opened`` tasks. Older tasks have
        none: only a task's own page reads its attempts, by primary key, so their number
        does not change what is measured."""
        sql = self.sql
        numbers = (
            "(VALUES (1), (2), (3)) AS attempt(k)"
            if sql.pg
            else "(SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) AS attempt"
        )
        last = "attempt.k = t.attempts"
        since = sql.ts(str(self.now_us - int(ATTEMPT_DAYS * 86400e6)))
        ids = ", ".join(sql.text(task) for task in opened) or "''"
        return (
            "INSERT INTO taskflow_task_attempts (task_id, attempt, instance, started_at, "
            "finished_at, status, error, traceback) "
            "SELECT t.id, attempt.k, t.owner, t.started_at, "
            f"CASE WHEN {last} THEN t.finished_at ELSE t.started_at END, "
            f"CASE WHEN {last} THEN t.status ELSE 'failed' END, "
            f"CASE WHEN {last} THEN t.error ELSE 'TimeoutError: attempt timed out' END, "
            f"CASE WHEN {last} THEN t.traceback END "
            f"FROM {TASKS_TABLE} t JOIN {numbers} ON attempt.k <= t.attempts "
            f"WHERE t.started_at IS NOT NULL AND (t.created_at >= {since} OR t.id IN ({ids}))"
        )


def function_attr(func_name: str) -> str:
    """The attribute name of a function in :mod:`bench.dashboard_app`."""
    return func_name.replace(".", "_")


# -- rows written through SQLAlchemy's types -------------------------------------------


def schedule_rows(now: datetime) -> list[dict[str, Any]]:
    """The schedules, as taskflow's own schedule_row() builds them."""
    from taskflow._payloads.payloads import Payloads
    from taskflow._schedules.scheduler import schedule_row
    from taskflow._schedules.triggers import Trigger

    payloads = Payloads(None)
    rows = []
    for spec in SCHEDULES:
        trigger = Trigger(every=spec.every, cron=spec.cron, timezone="UTC")
        row = schedule_row(
            name=spec.name,
            task_name=spec.func,
            trigger=trigger,
            kind=spec.kind,
            payload=payloads.encode_call((), spec.kwargs),
            now=now - timedelta(days=30),
            group_name="reports" if spec.kind == "dynamic" else None,
            description=spec.description,
        )
        # Next runs lie ahead (none fires while the dashboard is measured).
        row = dataclasses.replace(
            row,
            id=spec.id,
            enabled=spec.enabled,
            next_run_at=trigger.first_after(now + timedelta(hours=1)),
        )
        rows.append(row.columns())
    return rows


def instance_rows(now: datetime) -> list[dict[str, Any]]:
    """Live instances (their heartbeat is fresh when the dataset is written)."""
    return [
        {
            "id": instance_id(index),
            "hostname": hostname,
            "pid": 1000 + index,
            "queues": list(queues),
            "started_at": now - timedelta(hours=20 + index),
            "heartbeat_at": now,
            "info": {
                "running": 50,
                "waiting": 0,
                "threads": 8,
                "processes": 0,
                "max_concurrent_tasks": None,
            },
        }
        for index, (hostname, queues) in enumerate(INSTANCES)
    ]


# -- the load ------------------------------------------------------------------------------

TABLES_COUNTED = (
    TASKS_TABLE,
    LOGS_TABLE,
    "taskflow_task_attempts",
    "taskflow_schedules",
    "taskflow_instances",
)
# Tasks the scenario opens: name -> conditions tried in turn (with their order); the
# first three get ``big_log_lines`` log lines each.
SAMPLES = {
    "big_running": (
        "func_name = 'import_csv' AND status = 'running' ORDER BY created_at DESC",
        "status = 'running' ORDER BY created_at DESC",
    ),
    "big_failed": ("func_name = 'import_csv' AND status = 'failed' ORDER BY created_at DESC",),
    "big_success": (
        "func_name = 'import_csv' AND status = 'success' ORDER BY created_at LIMIT 1 OFFSET 200",
        "func_name = 'import_csv' AND status = 'success' ORDER BY created_at",
    ),
    "failed": ("func_name = 'sync_account' AND status = 'failed' ORDER BY created_at DESC",),
    "page_two": (
        "1 = 1 ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 4999",
        "1 = 1 ORDER BY created_at, id LIMIT 1",
    ),
}
BIG_SAMPLES = ("big_running", "big_failed", "big_success")
LINK_SCHEDULES = (
    "UPDATE taskflow_schedules SET "
    "last_task_id = (SELECT t.id FROM taskflow_tasks t WHERE t.source = 'scheduled' "
    "AND t.schedule_id IS NOT NULL AND t.schedule_id = taskflow_schedules.id "
    "ORDER BY t.schedule_slot DESC LIMIT 1), "
    "last_run_at = (SELECT t.created_at FROM taskflow_tasks t WHERE t.source = 'scheduled' "
    "AND t.schedule_id IS NOT NULL AND t.schedule_id = taskflow_schedules.id "
    "ORDER BY t.schedule_slot DESC LIMIT 1)"
)


def _ddl(dialect: Any) -> tuple[list[str], dict[str, list[str]]]:
    """``(drop, create by table)``: the task and log tables' secondary indexes, from the
    declarations in taskflow's schema modules."""
    from taskflow._store.schema import task_logs, tasks

    drops: list[str] = []
    creates: dict[str, list[str]] = {}
    for table in (tasks, task_logs):
        for index in sorted(table.indexes, key=lambda item: item.name or ""):
            clause = index.dialect_options["postgresql"]["where"]
            where = "" if clause is None else str(clause)
            named = {column.name for column in index.columns} | set(where.replace("(", " ").split())
            if named & LATER_COLUMNS:
                continue  # made by its own revision during the upgrade to the head
            drops.append(f"DROP INDEX IF EXISTS {index.name}")
            creates.setdefault(table.name, []).append(
                str(sa.schema.CreateIndex(index).compile(dialect=dialect))
            )
    return drops, creates


def _sample_query(condition: str, pg: bool) -> str:
    if pg:
        micros = "CAST(EXTRACT(EPOCH FROM {0}) * 1000000 AS BIGINT)"
    else:
        micros = "CAST(round((julianday({0}) - 2440587.5) * 86400000000) AS INTEGER)"
    limit = "" if "LIMIT" in condition else " LIMIT 1"
    return (
        f"SELECT id, {micros.format('started_at')}, {micros.format('created_at')} "
        f"FROM {TASKS_TABLE} WHERE {condition}{limit}"
    )


def _sample(row: Any) -> dict[str, Any]:
    return {"id": row[0], "started_us": row[1], "created_us": row[2]}


def _big(samples: dict[str, Any], plan: TaskSql) -> list[tuple[int, str, int]]:
    """``(anchor, task id, start µs)`` of each big-log task, by anchor: the anchor is the
    position of the task's first spread line, where its many lines are slotted in."""
    spread = plan.spread_count()
    found = []
    for name in BIG_SAMPLES[: plan.dataset.big_log_tasks]:
        task = samples[name]["id"]
        anchor = -(-task_number(task) * spread // plan.dataset.tasks)
        found.append((anchor, task, samples[name]["started_us"]))
    return sorted(found)


class Clock:
    """Times the phases of a load into ``seeded.seconds`` (wall) and
    ``seeded.cpu_seconds`` (what ``cpu()`` counts: the CPU time of whoever does the
    work, which tells how long the load takes on an idle machine)."""

    def __init__(self, seeded: Seeded, log: Callable[[str], None]) -> None:
        self.seeded = seeded
        self.log = log
        self.cpu: Callable[[], float] | None = time.thread_time  # None: not measurable

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record how long the block took under ``name``."""
        cpu = self.cpu
        began, cpu_began = time.monotonic(), cpu() if cpu else 0.0
        yield
        seconds = round(time.monotonic() - began, 2)
        self.seeded.seconds[name] = seconds
        text = f"{self.seeded.database} seed: {name} {seconds:.1f}s"
        if cpu is not None:
            self.seeded.cpu_seconds[name] = round(cpu() - cpu_began, 2)
            text += f" (CPU {self.seeded.cpu_seconds[name]:.1f}s)"
        self.log(text)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def migrate_sqlite(path: Path) -> None:
    """Create taskflow's schema in a new SQLite file with its Alembic migrations, up to
    the revision before the text search indexes (:func:`index_text` adds them after
    the load).

    Alembic is not thread-safe: migrate every database before loading any in parallel."""
    from taskflow._store import migrate

    migrate.upgrade(f"sqlite:///{path}", BEFORE_TEXT_SEARCH)


def migrate_postgres(url: str) -> None:
    """Create taskflow's schema in an empty PostgreSQL database (see :func:`migrate_sqlite`)."""
    from taskflow._store import migrate

    migrate.upgrade(url, BEFORE_TEXT_SEARCH)


def index_text(targets: dict[str, str], log: Callable[[str], None] = print) -> dict[str, float]:
    """Upgrade each loaded database (name -> SQLite path or PostgreSQL URL) to the head
    revision, whose text search migration indexes every row already stored, as it does
    for a user upgrading a big database. One process per database, in parallel (Alembic
    keeps global state); PostgreSQL is analyzed afterwards, as autovacuum would, so its
    planner has statistics of the new index expressions. Returns the seconds of each."""
    script = (
        "import sys, time\n"
        "from taskflow._store import migrate\n"
        "began = time.monotonic()\n"
        "migrate.upgrade(sys.argv[1])\n"
        "print(round(time.monotonic() - began, 2))\n"
    )
    running = {}
    for name, target in targets.items():
        url = target if "://" in target else f"sqlite:///{target}"
        running[name] = subprocess.Popen(
            [sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True
        )
    seconds = {}
    for name, process in running.items():
        out, _ = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"{name}: upgrade to the text search revision failed")
        seconds[name] = float(out.strip().splitlines()[-1])
        log(f"{name} seed: text search index (upgrade) {seconds[name]:.1f}s")
    for target in targets.values():
        if "://" in target:
            asyncio.run(_analyze(target))
    return seconds


async def _analyze(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**pg_params(url), timeout=10)
    try:
        await conn.execute(f"ANALYZE {TASKS_TABLE}, {LOGS_TABLE}")
    finally:
        await conn.close()


def seed_sqlite(path: Path, dataset: Dataset, log: Callable[[str], None] = print) -> Seeded:
    """Write the dataset into the migrated SQLite file ``path``."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from taskflow._store.schema import instances, schedules

    seeded = Seeded("SQLite")
    clock = Clock(seeded, log)
    now = datetime.now(UTC)
    plan = TaskSql(Sql("sqlite"), dataset, int(now.timestamp() * 1e6))
    drops, creates = _ddl(sqlite_dialect.dialect())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000"):
            conn.execute(f"PRAGMA {pragma}")
        for statement in drops:
            conn.execute(statement)
        with clock.phase("tasks"):
            conn.execute("BEGIN")
            conn.execute(plan.insert_tasks())
            conn.execute("COMMIT")
        with clock.phase("task indexes"):
            for statement in creates[TASKS_TABLE]:
                conn.execute(statement)
        for name, conditions in SAMPLES.items():
            for condition in conditions:
                row = conn.execute(_sample_query(condition, pg=False)).fetchone()
                if row is not None:
                    seeded.samples[name] = _sample(row)
                    break
        big = _big(seeded.samples, plan)
        with clock.phase("logs"):
            conn.execute("BEGIN")
            conn.execute(plan.insert_spread_logs([anchor for anchor, _, _ in big]))
            for index, (anchor, task, start_us) in enumerate(big):
                conn.execute(plan.insert_big_logs(index, anchor, task, start_us))
            conn.execute("COMMIT")
        with clock.phase("log indexes"):
            for statement in creates[LOGS_TABLE]:
                conn.execute(statement)
        with clock.phase("attempts"):
            conn.execute("BEGIN")
            conn.execute(plan.insert_attempts(_opened(seeded.samples)))
            conn.execute("COMMIT")
        for sample in seeded.samples.values():
            query = f"SELECT max(id) FROM {LOGS_TABLE} WHERE task_id = ?"
            sample["last_log_id"] = conn.execute(query, (sample["id"],)).fetchone()[0]
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with clock.phase("schedules, instances"), engine.begin() as sa_conn:
            sa_conn.execute(schedules.insert(), schedule_rows(now))
            sa_conn.execute(instances.insert(), instance_rows(now))
            sa_conn.execute(sa.text(LINK_SCHEDULES))
        with engine.connect() as sa_conn:
            counts = [
                int(sa_conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
                for table in TABLES_COUNTED
            ]
    finally:
        engine.dispose()
    seeded.tasks, seeded.logs, seeded.attempts, seeded.schedules, seeded.instances = counts
    return seeded


def _opened(samples: dict[str, Any]) -> list[str]:
    return [sample["id"] for sample in samples.values()]


def seed_postgres(url: str, dataset: Dataset, log: Callable[[str], None] = print) -> Seeded:
    """Write the dataset into the migrated PostgreSQL database at ``url``."""
    seeded = Seeded("PostgreSQL")
    asyncio.run(_seed_postgres(url, dataset, seeded, Clock(seeded, log)))
    return seeded


async def _seed_postgres(url: str, dataset: Dataset, seeded: Seeded, clock: Clock) -> None:
    import asyncpg
    from sqlalchemy.dialects import postgresql as pg_dialect
    from sqlalchemy.ext.asyncio import create_async_engine

    from taskflow._store.migrate import async_url
    from taskflow._store.schema import instances, schedules

    now = datetime.now(UTC)
    plan = TaskSql(Sql("postgresql"), dataset, int(now.timestamp() * 1e6))
    drops, creates = _ddl(pg_dialect.dialect())
    conn = await asyncpg.connect(**pg_params(url), timeout=10)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        if Path(f"/proc/{backend}/stat").exists():  # the server runs on this host
            clock.cpu = lambda: process_cpu(backend)
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        # No foreign-key triggers during the load: every row is consistent by design.
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("SET session_replication_role = replica")
        for statement in drops:
            await conn.execute(statement)
        with clock.phase("tasks"):
            await conn.execute(plan.insert_tasks())
        with clock.phase("task indexes"):
            for statement in creates[TASKS_TABLE]:
                await conn.execute(statement)
        for name, conditions in SAMPLES.items():
            for condition in conditions:
                row = await conn.fetchrow(_sample_query(condition, pg=True))
                if row is not None:
                    seeded.samples[name] = _sample(row)
                    break
        big = _big(seeded.samples, plan)
        with clock.phase("logs"):
            async with conn.transaction():
                await conn.execute(plan.insert_spread_logs([anchor for anchor, _, _ in big]))
                for index, (anchor, task, start_us) in enumerate(big):
                    await conn.execute(plan.insert_big_logs(index, anchor, task, start_us))
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('taskflow_task_logs', 'id'), "
                "(SELECT max(id) FROM taskflow_task_logs))"
            )
        with clock.phase("log indexes"):
            for statement in creates[LOGS_TABLE]:
                await conn.execute(statement)
        with clock.phase("attempts"):
            await conn.execute(plan.insert_attempts(_opened(seeded.samples)))
        for sample in seeded.samples.values():
            query = f"SELECT max(id) FROM {LOGS_TABLE} WHERE task_id = $1"
            sample["last_log_id"] = await conn.fetchval(query, sample["id"])
    finally:
        await conn.close()
        clock.cpu = None  # later phases run on other backends
    engine = create_async_engine(async_url(url))
    try:
        with clock.phase("schedules, instances"):
            async with engine.begin() as sa_conn:
                await sa_conn.execute(schedules.insert(), schedule_rows(now))
                await sa_conn.execute(instances.insert(), instance_rows(now))
                await sa_conn.execute(sa.text(LINK_SCHEDULES))
        with clock.phase("vacuum analyze"):
            async with engine.connect() as sa_conn:
                await sa_conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in (TASKS_TABLE, LOGS_TABLE, "taskflow_task_attempts"):
                    await sa_conn.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        async with engine.connect() as sa_conn:
            counts = [
                int(await sa_conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
                for table in TABLES_COUNTED
            ]
    finally:
        await engine.dispose()
    seeded.tasks, seeded.logs, seeded.attempts, seeded.schedules, seeded.instances = counts
