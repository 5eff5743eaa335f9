"""Text search: indexes for the error text of tasks and the message and fields of log lines.

Revision ID: 0006_text_search
Revises: 0005_once_run_key
Create Date: 2026-12-07

The dashboard's searches look for text anywhere inside a task's error or a log line's
message or structured fields (a case-insensitive substring). A B-tree index cannot serve
``LIKE '%text%'``, so without these a search reads rows one by one: seconds on a million
tasks when the text is rare (bench/analysis.md, "Text search"). Written out by hand, like
0001 to 0005.

SQLite: two FTS5 tables with the ``trigram`` tokenizer (SQLite 3.34+) and ``detail=none``
(no positions: a text is looked up by its trigrams and checked in the rows found, which
makes the tables a third of the size). ``taskflow_task_logs_fts`` (contentless, kept by
triggers on the log table) holds the message and the structured fields of each log line
(its rowid is the line's id): the key and the value of every top-level field whose
value is a string, number or boolean. ``taskflow_tasks_fts`` holds the error of each
finished task that has one (its rowid is the task's rowid). The task table gets no
trigger, since on SQLite any trigger makes every insert and finish of a task keep a
statement journal (a no-op task then costs a third more CPU): the searches add the
errors of the tasks finished since the last one (taskflow._store.search), and the
finish time they have reached is kept in ``taskflow_meta``. A SQLite built without FTS5
or the trigram tokenizer gets no tables (a warning says so) and searches read rows.

PostgreSQL: the ``pg_trgm`` extension (a trusted extension: the database owner may
create it) and trigram GIN indexes on ``error`` where it is not NULL, on ``message``, and
on the JSON text of ``extra``. Without the extension (not installed
on the server, or no right to create it) the indexes are skipped with a warning, and
searches read rows.

Existing rows are indexed by the upgrade: on SQLite about a minute per 2,500,000 log
lines, on PostgreSQL about three minutes for 5,000,000 (bench/analysis.md), during which
the tables are locked for writes. The downgrade drops the tables, triggers and indexes;
it leaves the ``pg_trgm`` extension installed, since other objects may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_text_search"
down_revision: str | Sequence[str] | None = "0005_once_run_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("taskflow")

# The names below are those of taskflow._store.schema (TEXT_SEARCH_*), frozen here.
TASKS_FTS = "taskflow_tasks_fts"
LOGS_FTS = "taskflow_task_logs_fts"
ERROR_INDEX = "ix_taskflow_tasks_error_trgm"
MESSAGE_INDEX = "ix_taskflow_task_logs_message_trgm"
FIELDS_INDEX = "ix_taskflow_task_logs_fields_trgm"
# SQLite: the taskflow_meta key holding the finish time up to which the errors of
# finished tasks are in TASKS_FTS, and the statuses whose tasks carry one.
ERRORS_INDEXED_UNTIL = "text_search_errors_until"
ERROR_STATUSES = "('failed', 'cancelled', 'interrupted', 'rejected')"


def sqlite_fields(extra: str) -> str:
    """SQLite: the keys and values of the top-level scalar fields of the JSON object in
    column ``extra``, one per line (NULL when there are none). The same text as
    taskflow._store.search's, frozen at this revision."""
    return (
        f"CASE WHEN json_valid({extra}) THEN (SELECT group_concat(f.key || char(10) || "
        "CASE f.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE f.value END, "
        f"char(10)) FROM json_each({extra}) AS f "
        "WHERE f.type IN ('text', 'integer', 'real', 'true', 'false')) END"
    )


# name -> CREATE TRIGGER body of the log lines' index (a contentless FTS5 table forgets
# a row when given the values it indexed: 'delete'). The task table has no trigger: on
# SQLite any trigger makes every insert and update of a task keep a statement journal,
# which costs a no-op task a third more CPU; its index is brought up to date by the
# searches instead (taskflow._store.search.ERRORS_INDEXED_UNTIL).
SQLITE_TRIGGERS = {
    f"{LOGS_FTS}_insert": (
        "AFTER INSERT ON taskflow_task_logs BEGIN "
        f"INSERT INTO {LOGS_FTS}(rowid, message, fields) "
        f"VALUES (new.id, new.message, {sqlite_fields('new.extra')}); END"
    ),
    f"{LOGS_FTS}_update": (
        "AFTER UPDATE OF message, extra ON taskflow_task_logs BEGIN "
        f"INSERT INTO {LOGS_FTS}({LOGS_FTS}, rowid, message, fields) "
        f"VALUES ('delete', old.id, old.message, {sqlite_fields('old.extra')}); "
        f"INSERT INTO {LOGS_FTS}(rowid, message, fields) "
        f"VALUES (new.id, new.message, {sqlite_fields('new.extra')}); END"
    ),
    f"{LOGS_FTS}_delete": (
        "AFTER DELETE ON taskflow_task_logs BEGIN "
        f"INSERT INTO {LOGS_FTS}({LOGS_FTS}, rowid, message, fields) "
        f"VALUES ('delete', old.id, old.message, {sqlite_fields('old.extra')}); END"
    ),
}

# name -> (table, indexed expression, partial index predicate)
PG_INDEXES = {
    ERROR_INDEX: ("taskflow_tasks", "error", "error IS NOT NULL"),
    MESSAGE_INDEX: ("taskflow_task_logs", "message", None),
    # Not partial: PostgreSQL keeps statistics of an index's expression, and estimates
    # from a partial index's are far off (a field in a quarter of the lines was
    # estimated at 0.01 %, and read through the index: 26 s instead of 0.1).
    FIELDS_INDEX: ("taskflow_task_logs", "CAST(extra AS TEXT)", None),
}


def upgrade() -> None:
    """Create the text indexes of this dialect and index the rows already stored."""
    if op.get_context().dialect.name == "sqlite":
        upgrade_sqlite()
    else:
        upgrade_postgresql()


def downgrade() -> None:
    """Drop them again (PostgreSQL keeps the ``pg_trgm`` extension)."""
    if op.get_context().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for table in (TASKS_FTS, LOGS_FTS):
            op.execute(f"DROP TABLE IF EXISTS {table}")
        op.execute(f"DELETE FROM taskflow_meta WHERE key = '{ERRORS_INDEXED_UNTIL}'")
        return
    for name in PG_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def upgrade_sqlite() -> None:
    """FTS5 trigram tables and their triggers, then every existing error and log line."""
    if not sqlite_has_trigram():
        logger.warning(
            "taskflow: this SQLite (%s) has no FTS5 trigram tokenizer (SQLite 3.34+ with "
            "FTS5); text search will read rows one by one",
            op.get_bind().exec_driver_sql("SELECT sqlite_version()").scalar(),
        )
        return
    op.execute(
        f"CREATE VIRTUAL TABLE {TASKS_FTS} "
        "USING fts5(error, columnsize=0, detail=none, tokenize='trigram')"
    )
    op.execute(
        f"CREATE VIRTUAL TABLE {LOGS_FTS} "
        "USING fts5(message, fields, content='', columnsize=0, detail=none, tokenize='trigram')"
    )
    finished_with_error = f"status IN {ERROR_STATUSES} AND error IS NOT NULL"
    op.execute(
        f"INSERT INTO {TASKS_FTS}(rowid, error) "
        f"SELECT rowid, error FROM taskflow_tasks WHERE {finished_with_error}"
    )
    op.execute(
        "INSERT INTO taskflow_meta (key, value, updated_at) "
        f"SELECT '{ERRORS_INDEXED_UNTIL}', max(finished_at), "
        "strftime('%Y-%m-%d %H:%M:%f000', 'now') "
        f"FROM taskflow_tasks WHERE {finished_with_error} HAVING max(finished_at) IS NOT NULL"
    )
    op.execute(
        f"INSERT INTO {LOGS_FTS}(rowid, message, fields) "
        f"SELECT id, message, {sqlite_fields('extra')} FROM taskflow_task_logs"
    )
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def sqlite_has_trigram() -> bool:
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


def upgrade_postgresql() -> None:
    """``pg_trgm`` and the trigram indexes (built from the rows)."""
    schema = pg_trgm_schema()
    if schema is None:
        logger.warning(
            "taskflow: the pg_trgm extension is not available and could not be created; "
            "text search will read rows one by one (a superuser can run CREATE EXTENSION "
            "pg_trgm, then taskflow db downgrade --revision 0005_once_run_key and upgrade)"
        )
        return
    opclass = f'"{schema}".gin_trgm_ops'
    for name, (table, expression, where) in PG_INDEXES.items():
        partial = f" WHERE {where}" if where else ""
        op.execute(f"CREATE INDEX {name} ON {table} USING gin (({expression}) {opclass}){partial}")


def pg_trgm_schema() -> str | None:
    """The schema of the ``pg_trgm`` extension, created here if need be; None when it
    cannot be (the transaction stays usable: the attempt runs in a savepoint)."""
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
