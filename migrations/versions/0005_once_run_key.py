"""One-off firings: a ``run_key`` column on tasks, unique among pending firings.

Revision ID: 0005_once_run_key
Revises: 0004_uuid_task_ids
Create Date: 2026-12-06

``schedule_once`` stores a one-off firing as a deferred pending task carrying its
``run_key``; the partial unique index keeps at most one pending firing per key, whatever
number of processes schedule at once. Written out by hand, like 0001 to 0004.

A plain ``ADD COLUMN`` on both dialects: batch mode would rebuild ``taskflow_tasks`` on
SQLite, and dropping the old table deletes every log line and attempt through their
``ON DELETE CASCADE`` keys. SQLite (3.35+) drops the column again just as plainly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_once_run_key"
down_revision: str | Sequence[str] | None = "0004_uuid_task_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same text as taskflow._store.schema.ONCE_PENDING_WHERE, frozen at this revision.
ONCE_PENDING_WHERE = (
    "run_key IS NOT NULL AND status = 'pending' AND attempts = 0 AND source = 'scheduled'"
)


def upgrade() -> None:
    """Add ``taskflow_tasks.run_key`` and its partial unique index."""
    op.add_column("taskflow_tasks", sa.Column("run_key", sa.String(255), nullable=True))
    op.create_index(
        "uq_taskflow_tasks_run_key",
        "taskflow_tasks",
        ["run_key"],
        unique=True,
        sqlite_where=sa.text(ONCE_PENDING_WHERE),
        postgresql_where=sa.text(ONCE_PENDING_WHERE),
    )


def downgrade() -> None:
    """Drop the index and the column (pending one-offs become ordinary deferred tasks)."""
    op.drop_index("uq_taskflow_tasks_run_key", table_name="taskflow_tasks")
    op.drop_column("taskflow_tasks", "run_key")
