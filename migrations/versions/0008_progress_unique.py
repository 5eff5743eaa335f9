"""What a running task reports, and tasks unique within a time window.

Revision ID: 0008_progress_unique
Revises: 0007_operator
Create Date: 2026-12-07

* ``taskflow_tasks.progress``: the last progress a task reported (``task_progress``), as
  JSON text (``done``, ``total``, ``message``, ``at``); NULL for a task that never
  reported any.
* ``taskflow_tasks.unique_key``: for a task enqueued with ``unique_for``, a digest of its
  function and arguments (or its idempotency key); a second enqueue with the same digest
  within the window returns the first task. A partial index on (``unique_key``,
  ``created_at``) holds those tasks only, so tasks without ``unique_for`` cost nothing.

Plain ``ADD COLUMN`` on both dialects, as in 0005: batch mode would rebuild
``taskflow_tasks`` on SQLite and cascade-delete its logs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_progress_unique"
down_revision: str | Sequence[str] | None = "0007_operator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two task columns and the unique-window index."""
    op.add_column("taskflow_tasks", sa.Column("progress", sa.Text, nullable=True))
    op.add_column("taskflow_tasks", sa.Column("unique_key", sa.String(64), nullable=True))
    op.create_index(
        "ix_taskflow_tasks_unique_key",
        "taskflow_tasks",
        ["unique_key", "created_at"],
        sqlite_where=sa.text("unique_key IS NOT NULL"),
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop them again (reported progress is lost; unique windows no longer hold)."""
    op.drop_index("ix_taskflow_tasks_unique_key", table_name="taskflow_tasks")
    op.drop_column("taskflow_tasks", "unique_key")
    op.drop_column("taskflow_tasks", "progress")
