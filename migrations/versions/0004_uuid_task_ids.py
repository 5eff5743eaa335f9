"""Task ids as UUID strings: widen the task id columns from 32 to 36 characters.

Revision ID: 0004_uuid_task_ids
Revises: 0003_dashboard_indexes
Create Date: 2026-12-06

New task ids are canonical UUID strings (``str(uuid.uuid4())``, 36 characters) like
fastapi-taskflow's; existing rows keep their 32-hex-digit ids (taskflow/ids.py finds a
task by either shape). Written out by hand, like 0001 to 0003.

PostgreSQL gets a plain ``ALTER COLUMN ... TYPE VARCHAR(36)`` (no table rewrite).
SQLite is left alone: it does not enforce VARCHAR lengths, and batch mode would rebuild
``taskflow_tasks``, whose DROP deletes every log line, attempt and alias through their
``ON DELETE CASCADE`` keys (foreign keys are on in taskflow's connections).
schema.py declares length 32 for SQLite to match.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_uuid_task_ids"
down_revision: str | Sequence[str] | None = "0003_dashboard_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, nullable) of every column holding a task id.
TASK_ID_COLUMNS = (
    ("taskflow_tasks", "id", False),
    ("taskflow_task_logs", "task_id", False),
    ("taskflow_task_attempts", "task_id", False),
    ("taskflow_task_aliases", "alias", False),
    ("taskflow_task_aliases", "task_id", False),
    ("taskflow_schedules", "last_task_id", True),
)
# The tables whose task_id references taskflow_tasks.id, and PostgreSQL's names for
# those (unnamed in 0001) foreign keys.
CHILD_TABLES = ("taskflow_task_logs", "taskflow_task_attempts", "taskflow_task_aliases")


def upgrade() -> None:
    """Widen the task id columns to 36 characters (PostgreSQL only, see above)."""
    if op.get_context().dialect.name == "sqlite":
        return
    resize(old=32, new=36)


def downgrade() -> None:
    """Rewrite UUID-string ids as 32 hex digits, then narrow the columns back to 32.

    The foreign keys to ``taskflow_tasks.id`` are dropped while the ids change (parent
    and children cannot change in one statement) and created again afterwards.
    """
    if op.get_context().dialect.name == "sqlite":
        return
    for child in CHILD_TABLES:
        op.drop_constraint(f"{child}_task_id_fkey", child, type_="foreignkey")
    for table, column, _nullable in TASK_ID_COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = replace({column}, '-', '') WHERE length({column}) = 36"
        )
    for child in CHILD_TABLES:
        op.create_foreign_key(
            f"{child}_task_id_fkey",
            child,
            "taskflow_tasks",
            ["task_id"],
            ["id"],
            ondelete="CASCADE",
        )
    resize(old=36, new=32)


def resize(*, old: int, new: int) -> None:
    """Change every task id column from ``VARCHAR(old)`` to ``VARCHAR(new)``."""
    for table, column, nullable in TASK_ID_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                type_=sa.String(new),
                existing_type=sa.String(old),
                existing_nullable=nullable,
            )
