"""Table definitions shared by the store and the Alembic migrations.

Every table is prefixed ``taskflow_`` so taskflow can live in an application's own
database. Timestamps are timezone-aware UTC on both dialects (see :class:`UTCDateTime`).
Every table, the dashboard's included, is defined here on the one :data:`metadata`, so
the Alembic environment and ``compare_metadata`` see all of them whatever was imported.

The dashboard's part (revisions ``0002_dashboard`` and ``0003_dashboard_indexes``):

* ``taskflow_admin_audit``: who did what to which task or schedule, and when.
* ``taskflow_admin_sessions``: dashboard logins, so every process accepts them and a
  logout invalidates the session everywhere.
* indexes on the task and log tables that keep the dashboard's lists and charts off
  full scans (keyset pagination by status or function, charts by finish or start time,
  log search by time).

Revision ``0006_text_search`` adds the text search's tables and indexes, which are not on
``metadata``: their names are at the end of this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

# Statuses that end a task's life. An idempotency key is free again once its task ends
# in one of FAILED_STATUSES (spec 002: "if a non-failed task with the same key exists").
TERMINAL_STATUSES = ("success", "failed", "cancelled", "interrupted", "rejected")
# What ``on_dependency_failure`` may say (revision 0009_workflows).
DEPENDENCY_FAILURE_MODES = ("cancel", "run")
FAILED_STATUSES = ("failed", "cancelled", "interrupted")
# Failed and interrupted tasks nobody has retried or discarded yet: the Failures list.
UNRESOLVED_FAILURE_WHERE = "resolution IS NULL AND status IN ('failed', 'interrupted')"
# How a failed or interrupted task was dealt with (``taskflow_tasks.resolution``): run
# again as a new task (retry or replay), or acknowledged without running it again.
RESOLUTIONS = ("retried", "discarded")
# A one-off firing (``schedule_once``) is pending until its first attempt starts; a
# fired one keeps its run_key as a record, and a retry copy has another source.
ONCE_PENDING_WHERE = (
    "run_key IS NOT NULL AND status = 'pending' AND attempts = 0 AND source = 'scheduled'"
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    PostgreSQL stores ``timestamptz``. SQLite has no timestamp type, so the value is
    stored as naive UTC text, which sorts correctly and compares with bound parameters.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("taskflow timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A string comes from raw SQL paths on SQLite.
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sqlite_text(value: datetime | None) -> str | None:
    """The text a timestamp is stored as on SQLite, exactly as :class:`UTCDateTime` and
    SQLAlchemy's SQLite ``DATETIME`` store it (naive UTC, microseconds always shown), for
    statements that bypass the column types. Stored timestamps compare as text, so the
    two must never differ."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("taskflow timestamps must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# Task ids: canonical UUID strings (36 characters) since migration 0004; older rows keep
# 32 hex digits (taskflow/ids.py). SQLite ignores VARCHAR lengths, so its columns keep the
# declared length 32 (widening them would rebuild the tasks table, whose DROP cascades
# to the logs): the variant keeps schema comparisons clean on both dialects.
TaskId = sa.String(36).with_variant(sa.String(32), "sqlite")

tasks = sa.Table(
    "taskflow_tasks",
    metadata,
    sa.Column("id", TaskId, primary_key=True),
    sa.Column("func_name", sa.String(255), nullable=False),
    sa.Column("func_path", sa.String(500), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("encrypted", sa.Boolean, nullable=False, default=False),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_retries", sa.Integer, nullable=False, default=0),
    # Per-task overrides of the function's retry delays (set by dynamic schedules).
    sa.Column("retry_delay", sa.Float),
    sa.Column("retry_max_delay", sa.Float),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("queue", sa.String(100), nullable=False, default="default"),
    sa.Column("tags", sa.JSON, nullable=False, default=dict),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("source", sa.String(16), nullable=False, default="manual"),
    sa.Column("schedule_id", sa.String(32)),
    sa.Column("schedule_slot", UTCDateTime),
    # Identity of a one-off firing (``schedule_once``); see ONCE_PENDING_WHERE.
    sa.Column("run_key", sa.String(255)),
    sa.Column("owner", sa.String(32)),
    sa.Column("requeue_on_interrupt", sa.Boolean, nullable=False, default=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    # Revision 0007_operator: the task a retry or replay runs again; how and when a failed
    # task was dealt with (RESOLUTIONS); the W3C trace context of the enqueueing code.
    sa.Column("retry_of", TaskId),
    sa.Column("resolution", sa.String(16)),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("trace_context", sa.Text),
    # Revision 0008_progress_unique: the last ``task_progress`` report (JSON text), and
    # the digest a ``unique_for`` enqueue is matched by.
    sa.Column("progress", sa.Text),
    sa.Column("unique_key", sa.String(64)),
    # Revision 0009_workflows: the workflow a task belongs to, and (only on a task that
    # depends on others) what happens when a dependency does not succeed.
    sa.Column("workflow_id", sa.String(36)),
    sa.Column("on_dependency_failure", sa.String(8)),
    # Also 0009: the concurrency or rate limit a task counts against (its function's
    # name, plus the key of ``limit_key=``); NULL for functions without limits.
    sa.Column("limit_key", sa.String(255)),
    # Retry claim: pending tasks by queue, best priority first, oldest first.
    sa.Index("ix_taskflow_tasks_claim", "status", "queue", "next_attempt_at"),
    sa.Index("ix_taskflow_tasks_owner", "owner", "status"),
    sa.Index("ix_taskflow_tasks_created", "created_at"),
    # Retention prunes terminal tasks by age.
    sa.Index("ix_taskflow_tasks_finished", "finished_at"),
    sa.Index(
        "uq_taskflow_tasks_idempotency",
        "idempotency_key",
        unique=True,
        sqlite_where=sa.text(
            "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
        ),
        postgresql_where=sa.text(
            "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
        ),
    ),
    sa.Index(
        "uq_taskflow_tasks_schedule_slot",
        "schedule_id",
        "schedule_slot",
        unique=True,
        sqlite_where=sa.text("schedule_id IS NOT NULL AND source = 'scheduled'"),
        postgresql_where=sa.text("schedule_id IS NOT NULL AND source = 'scheduled'"),
    ),
    # From a task to its retries (revision 0007_operator).
    sa.Index(
        "ix_taskflow_tasks_retry_of",
        "retry_of",
        sqlite_where=sa.text("retry_of IS NOT NULL"),
        postgresql_where=sa.text("retry_of IS NOT NULL"),
    ),
    # The Failures list's pages and counts, from the index alone (revision 0007_operator).
    sa.Index(
        "ix_taskflow_tasks_unresolved_failures",
        "status",
        "created_at",
        "id",
        sqlite_where=sa.text(UNRESOLVED_FAILURE_WHERE),
        postgresql_where=sa.text(UNRESOLVED_FAILURE_WHERE),
    ),
    # Tasks enqueued with ``unique_for``, by digest and age (revision 0008_progress_unique).
    sa.Index(
        "ix_taskflow_tasks_unique_key",
        "unique_key",
        "created_at",
        sqlite_where=sa.text("unique_key IS NOT NULL"),
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    ),
    # A workflow's tasks (revision 0009_workflows).
    sa.Index(
        "ix_taskflow_tasks_workflow",
        "workflow_id",
        "created_at",
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    ),
    # Running and recent starts of a limit, counted before a start (revision 0009).
    sa.Index(
        "ix_taskflow_tasks_limit",
        "limit_key",
        "status",
        "started_at",
        sqlite_where=sa.text("limit_key IS NOT NULL"),
        postgresql_where=sa.text("limit_key IS NOT NULL"),
    ),
    # At most one pending one-off firing per run_key (revision 0005_once_run_key).
    sa.Index(
        "uq_taskflow_tasks_run_key",
        "run_key",
        unique=True,
        sqlite_where=sa.text(ONCE_PENDING_WHERE),
        postgresql_where=sa.text(ONCE_PENDING_WHERE),
    ),
)

task_logs = sa.Table(
    "taskflow_task_logs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column(
        "task_id",
        TaskId,
        sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("extra", sa.JSON),
    sa.Index("ix_taskflow_task_logs_task", "task_id", "id"),
)

task_attempts = sa.Table(
    "taskflow_task_attempts",
    metadata,
    sa.Column(
        "task_id",
        TaskId,
        sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("instance", sa.String(32)),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
)

# The row of an attempt is written when the attempt ends and the task row stops
# describing it (a retry, a settled instance): see taskflow._store.rows.attempt_history.
# Ending an attempt whose row an earlier version wrote at its start sets these columns.
ATTEMPT_END_COLUMNS = ("finished_at", "status", "error", "traceback")

schedules = sa.Table(
    "taskflow_schedules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("group_name", sa.String(255)),
    sa.Column("func_name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # "static" or "dynamic"
    sa.Column("cron", sa.String(255)),
    sa.Column("every", sa.Float),
    sa.Column("timezone", sa.String(64), nullable=False, default="UTC"),
    sa.Column("payload", sa.Text, nullable=False, default="{}"),
    sa.Column("options", sa.JSON, nullable=False, default=dict),
    sa.Column("description", sa.Text),
    sa.Column("tags", sa.JSON, nullable=False, default=list),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("next_run_at", UTCDateTime),
    sa.Column("last_run_at", UTCDateTime),
    sa.Column("last_task_id", TaskId),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_taskflow_schedules_due", "enabled", "next_run_at"),
)

instances = sa.Table(
    "taskflow_instances",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queues", sa.JSON, nullable=False, default=list),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("info", sa.JSON, nullable=False, default=dict),
    sa.Index("ix_taskflow_instances_heartbeat", "heartbeat_at"),
)

meta = sa.Table(
    "taskflow_meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Ids handed out for a task that lost an idempotency race to another process: each
# points at the task that holds the key, so the id the caller got still resolves.
task_aliases = sa.Table(
    "taskflow_task_aliases",
    metadata,
    sa.Column("alias", TaskId, primary_key=True),
    sa.Column(
        "task_id",
        TaskId,
        sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Index("ix_taskflow_task_aliases_task", "task_id"),
)

# Dependencies (revision 0009_workflows): ``task_id`` waits for ``depends_on``, the
# ``position``-th of its ``depends_on``. No foreign key on ``depends_on``: a dependency
# may be deleted (it ended first), and a dependent reads a missing one as not succeeded.
task_deps = sa.Table(
    "taskflow_task_deps",
    metadata,
    sa.Column(
        "task_id",
        TaskId,
        sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("depends_on", TaskId, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("ix_taskflow_task_deps_depends_on", "depends_on"),
)

# One row per workflow (revision 0009_workflows); its tasks carry its id.
workflows = sa.Table(
    "taskflow_workflows",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_taskflow_workflows_created", "created_at"),
)

# A paused queue (revision 0007_operator): no process starts its tasks until it resumes.
queue_pauses = sa.Table(
    "taskflow_queue_pauses",
    metadata,
    sa.Column("queue", sa.String(100), primary_key=True),
    sa.Column("paused_at", UTCDateTime, nullable=False),
    sa.Column("paused_by", sa.String(255), nullable=False),
)

# -- the dashboard's tables and indexes ------------------------------------------------------

# Task counts per minute for the Overview's charts (revision 0007_operator), filled from
# the task rows once a minute is closed (taskflow._store.stats_minutes). ``queue`` and
# ``func_name`` are "" in the rows that count every queue or every function, so any
# filter reads one row per minute. ``wait_buckets`` is a JSON object of wait-time
# histogram counts by bucket number.
stats_minutes = sa.Table(
    "taskflow_stats_minutes",
    metadata,
    sa.Column("queue", sa.String(100), primary_key=True),
    sa.Column("func_name", sa.String(255), primary_key=True),
    sa.Column("minute", UTCDateTime, primary_key=True),
    sa.Column("enqueued", sa.Integer, nullable=False),
    sa.Column("started", sa.Integer, nullable=False),
    sa.Column("processed", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("cancelled", sa.Integer, nullable=False),
    sa.Column("interrupted", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("ended_unstarted", sa.Integer, nullable=False),
    sa.Column("wait_sum", sa.Float, nullable=False),
    sa.Column("wait_min", sa.Float),
    sa.Column("wait_max", sa.Float),
    sa.Column("wait_buckets", sa.Text, nullable=False),
    sa.Index("ix_taskflow_stats_minutes_minute", "minute"),
)


audit = sa.Table(
    "taskflow_admin_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_taskflow_admin_audit_at", "at"),
    # Login rate limiting counts recent failures by user name and by address.
    sa.Index("ix_taskflow_admin_audit_action", "action", "at"),
    sa.Index("ix_taskflow_admin_audit_target", "target", "at"),
)

# Failed dashboard logins, one row per user name and one per address (revision
# 0010_login_failures): the lockout counts ``failures`` since ``first_at``. The table is
# bounded: expired rows go, and past a cap the rows with the fewest failures, oldest
# first (the index), make room.
login_failures = sa.Table(
    "taskflow_admin_login_failures",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Index("ix_taskflow_admin_login_failures_evict", "failures", "last_at"),
)

sessions = sa.Table(
    "taskflow_admin_sessions",
    metadata,
    # SHA-256 of the session token: a stolen database does not hand out sessions.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("read_only", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_taskflow_admin_sessions_expires", "expires_at"),
)

# Keyset pages of one status or one function, newest first.
sa.Index("ix_taskflow_tasks_status_created", tasks.c.status, tasks.c.created_at, tasks.c.id)
sa.Index("ix_taskflow_tasks_func_created", tasks.c.func_name, tasks.c.created_at, tasks.c.id)
# One function in one status (runs and failures filtered by function): keyset pages and
# capped counts read one index range, without a table lookup per row (revision 0003).
sa.Index(
    "ix_taskflow_tasks_func_status_created",
    tasks.c.func_name,
    tasks.c.status,
    tasks.c.created_at,
    tasks.c.id,
)
# Runs sorted by start time (revision 0003).
sa.Index("ix_taskflow_tasks_started", tasks.c.started_at)
# Throughput charts (count by status over a time range) and per-function statistics.
sa.Index("ix_taskflow_tasks_status_finished", tasks.c.status, tasks.c.finished_at)
sa.Index("ix_taskflow_tasks_func_finished", tasks.c.func_name, tasks.c.finished_at)
# Log search by time window.
sa.Index("ix_taskflow_task_logs_at", task_logs.c.at)

# -- text search (revision 0006_text_search) ---------------------------------------------
# Not on `metadata`: SQLite's FTS5 tables and PostgreSQL's trigram GIN indexes exist on one
# dialect each and have no declaration that schema comparison understands. The revision
# creates them (see its docstring); these names are for the store's queries and for
# schema comparisons, which skip them (is_text_search_object).

# SQLite FTS5 (trigram): the error of finished tasks that have one, rowid = task rowid,
# brought up to date by the searches (no trigger: see revision 0006); the taskflow_meta
# key ERRORS_INDEXED_UNTIL holds the finish time it has reached.
TASKS_FTS = "taskflow_tasks_fts"
ERRORS_INDEXED_UNTIL = "text_search_errors_until"
# SQLite FTS5 (trigram, contentless): log message and fields, rowid = the line's id.
LOGS_FTS = "taskflow_task_logs_fts"
# SQLite FTS5 (trigram, contentless, revision 0007_operator): the stored arguments of
# tasks that are not encrypted, rowid = task rowid, filled by the searches that look at
# arguments (no trigger); the taskflow_meta key ARGS_INDEXED_UNTIL holds how far.
ARGS_FTS = "taskflow_task_args_fts"
ARGS_INDEXED_UNTIL = "text_search_args_until"
# PostgreSQL (revision 0007_operator): the stored arguments of tasks that are not
# encrypted, one row per task (task_id, a foreign key ON DELETE CASCADE, and text), filled
# by the searches that look at arguments (no trigger, no index on the task table); the
# taskflow_meta key ARGS_INDEXED_UNTIL holds the creation time reached.
ARGS_SEARCH = "taskflow_task_args_search"
# PostgreSQL: trigram GIN indexes on error, message and the JSON text of extra, and
# (revision 0007_operator) on the text of ARGS_SEARCH.
TEXT_SEARCH_INDEXES = (
    "ix_taskflow_tasks_error_trgm",
    "ix_taskflow_task_logs_message_trgm",
    "ix_taskflow_task_logs_fields_trgm",
    "ix_taskflow_task_args_search_trgm",
)


def is_text_search_object(name: str | None) -> bool:
    """True for a table, shadow table or index of the text search: FTS5 keeps each
    virtual table's data in tables named after it (``<name>_data``, ``_idx``, ...)."""
    if name is None:
        return False
    if name in TEXT_SEARCH_INDEXES or name == ARGS_SEARCH:
        return True
    return name.startswith((TASKS_FTS, LOGS_FTS, ARGS_FTS))
