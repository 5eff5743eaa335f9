"""What an operator does to tasks and queues: retry links, resolved failures, paused
queues, and the trace a task belongs to.

Revision ID: 0007_operator
Revises: 0006_text_search
Create Date: 2026-12-07

* ``taskflow_tasks.retry_of``: the task a retry or replay runs again, so each links to
  the other (indexed for the way back).
* ``taskflow_tasks.resolution`` and ``resolved_at``: how and when a failed or interrupted
  task was dealt with (``retried`` or ``discarded``); the Failures list shows the
  unresolved ones, and history keeps them all. A partial index holds the unresolved
  failures only, so the Failures page counts and pages them from the index alone
  (without it PostgreSQL reads each row to check ``resolution``).
* ``taskflow_tasks.trace_context``: the W3C trace context of the code that enqueued the
  task (with the OpenTelemetry extra), so its run joins the same trace.
* ``taskflow_queue_pauses``: one row per paused queue; every process reads it before it
  starts work from that queue.
* ``taskflow_stats_minutes``: the Overview's chart counts per minute, queue and
  function, created empty (filled from the task rows as the charts ask for them).
* Text search in task arguments (the dashboard's search, when it shows arguments), made
  per dialect as revision 0006 makes its text indexes. SQLite: a contentless FTS5
  trigram table ``taskflow_task_args_fts``, created empty; the searches that look at
  arguments fill it (the stored arguments of the tasks that are not encrypted, rowid =
  the task's rowid, added by rowid past the point kept in ``taskflow_meta``), so the
  task table gets no trigger and the upgrade reads no rows. PostgreSQL: the table
  ``taskflow_task_args_search`` (``task_id``, a foreign key to the task with ``ON DELETE
  CASCADE``, and ``text``) with a trigram GIN index on ``text``, created empty; the
  searches that look at arguments fill it the same way (tasks taken by creation time,
  past the point kept in ``taskflow_meta``), so inserting or updating a task maintains
  no index of its arguments, and the upgrade reads no rows. Skipped with a warning
  without ``pg_trgm``.

Plain ``ADD COLUMN`` on both dialects, as in 0005: batch mode would rebuild
``taskflow_tasks`` on SQLite and cascade-delete its logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskflow._store.schema import TaskId, UTCDateTime

# The same text as taskflow._store.schema.UNRESOLVED_FAILURE_WHERE, frozen at this revision.
UNRESOLVED_FAILURE_WHERE = "resolution IS NULL AND status IN ('failed', 'interrupted')"

revision: str = "0007_operator"
down_revision: str | Sequence[str] | None = "0006_text_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("taskflow")

# The names of taskflow._store.schema (ARGS_FTS, ARGS_SEARCH, ARGS_INDEXED_UNTIL, the
# last of TEXT_SEARCH_INDEXES), frozen here.
ARGS_FTS = "taskflow_task_args_fts"
ARGS_SEARCH = "taskflow_task_args_search"
ARGS_INDEXED_UNTIL = "text_search_args_until"
ARGS_SEARCH_INDEX = "ix_taskflow_task_args_search_trgm"


def upgrade() -> None:
    """Add the four task columns, the retry and unresolved-failure indexes, the
    paused-queue and per-minute tables and the argument search."""
    op.add_column("taskflow_tasks", sa.Column("retry_of", TaskId, nullable=True))
    op.add_column("taskflow_tasks", sa.Column("resolution", sa.String(16), nullable=True))
    op.add_column("taskflow_tasks", sa.Column("resolved_at", UTCDateTime, nullable=True))
    op.add_column("taskflow_tasks", sa.Column("trace_context", sa.Text, nullable=True))
    op.create_index(
        "ix_taskflow_tasks_retry_of",
        "taskflow_tasks",
        ["retry_of"],
        sqlite_where=sa.text("retry_of IS NOT NULL"),
        postgresql_where=sa.text("retry_of IS NOT NULL"),
    )
    op.create_index(
        "ix_taskflow_tasks_unresolved_failures",
        "taskflow_tasks",
        ["status", "created_at", "id"],
        sqlite_where=sa.text(UNRESOLVED_FAILURE_WHERE),
        postgresql_where=sa.text(UNRESOLVED_FAILURE_WHERE),
    )
    op.create_table(
        "taskflow_queue_pauses",
        sa.Column("queue", sa.String(100), primary_key=True),
        sa.Column("paused_at", UTCDateTime, nullable=False),
        sa.Column("paused_by", sa.String(255), nullable=False),
    )
    upgrade_stats_minutes()
    upgrade_argument_search()


def downgrade() -> None:
    """Drop them again (paused queues resume; retry links and resolutions are lost)."""
    downgrade_argument_search()
    op.drop_index("ix_taskflow_stats_minutes_minute", table_name="taskflow_stats_minutes")
    op.drop_table("taskflow_stats_minutes")
    op.drop_table("taskflow_queue_pauses")
    op.drop_index("ix_taskflow_tasks_unresolved_failures", table_name="taskflow_tasks")
    op.drop_index("ix_taskflow_tasks_retry_of", table_name="taskflow_tasks")
    for column in ("trace_context", "resolved_at", "resolution", "retry_of"):
        op.drop_column("taskflow_tasks", column)


def upgrade_stats_minutes() -> None:
    """The chart counts per minute, queue and function (empty: filled as charts ask)."""
    counts = (
        "enqueued",
        "started",
        "processed",
        "failed",
        "cancelled",
        "interrupted",
        "rejected",
        "ended_unstarted",
    )
    op.create_table(
        "taskflow_stats_minutes",
        sa.Column("queue", sa.String(100), primary_key=True),
        sa.Column("func_name", sa.String(255), primary_key=True),
        sa.Column("minute", UTCDateTime, primary_key=True),
        *(sa.Column(name, sa.Integer, nullable=False) for name in counts),
        sa.Column("wait_sum", sa.Float, nullable=False),
        sa.Column("wait_min", sa.Float),
        sa.Column("wait_max", sa.Float),
        sa.Column("wait_buckets", sa.Text, nullable=False),
    )
    op.create_index("ix_taskflow_stats_minutes_minute", "taskflow_stats_minutes", ["minute"])


def upgrade_argument_search() -> None:
    """The text index of task arguments on this dialect (as revision 0006 makes its own:
    nothing when SQLite has no FTS5 trigrams or PostgreSQL no ``pg_trgm``)."""
    if op.get_context().dialect.name == "sqlite":
        if _sqlite_has_trigram():
            op.execute(
                f"CREATE VIRTUAL TABLE {ARGS_FTS} USING fts5(payload, content='', "
                "columnsize=0, detail=none, tokenize='trigram')"
            )
        return
    schema = _pg_trgm_schema()
    if schema is None:
        logger.warning(
            "taskflow: the pg_trgm extension is not available; a search in task arguments "
            "will read rows one by one"
        )
        return
    op.create_table(
        ARGS_SEARCH,
        sa.Column(
            "task_id",
            TaskId,
            sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.execute(
        f"CREATE INDEX {ARGS_SEARCH_INDEX} ON {ARGS_SEARCH} "
        f'USING gin (text "{schema}".gin_trgm_ops)'
    )


def downgrade_argument_search() -> None:
    """Drop the text index of task arguments (PostgreSQL keeps ``pg_trgm``)."""
    table = ARGS_FTS if op.get_context().dialect.name == "sqlite" else ARGS_SEARCH
    op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute(f"DELETE FROM taskflow_meta WHERE key = '{ARGS_INDEXED_UNTIL}'")


def _sqlite_has_trigram() -> bool:
    """True when this SQLite can create an FTS5 table with the trigram tokenizer."""
    bind = op.get_bind()
    try:
        bind.exec_driver_sql(
            "CREATE VIRTUAL TABLE temp.taskflow_probe_fts USING fts5(x, tokenize='trigram')"
        )
    except sa.exc.OperationalError:
        return False
    bind.exec_driver_sql("DROP TABLE temp.taskflow_probe_fts")
    return True


def _pg_trgm_schema() -> str | None:
    """The schema of the ``pg_trgm`` extension, created here if need be (in a savepoint);
    None when it cannot be."""
    bind = op.get_bind()
    query = sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    )
    schema = bind.execute(query).scalar()
    if schema is None:
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError:
            return None
        schema = bind.execute(query).scalar()
    return None if schema is None else str(schema)
