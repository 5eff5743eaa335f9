"""Dashboard indexes: one function in one status, and sorting by start time.

Revision ID: 0003_dashboard_indexes
Revises: 0002_dashboard
Create Date: 2026-11-24

With a million tasks, the Runs and Failures pages filtered by function and status, and
the Runs page sorted by start time, read far more rows than they show without these
(bench/analysis.md, "Dashboard"). Written out by hand, like 0001 and 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_dashboard_indexes"
down_revision: str | Sequence[str] | None = "0002_dashboard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_INDEXES = {
    "ix_taskflow_tasks_func_status_created": ["func_name", "status", "created_at", "id"],
    "ix_taskflow_tasks_started": ["started_at"],
}


def upgrade() -> None:
    """Create the two task indexes."""
    for name, columns in TASK_INDEXES.items():
        op.create_index(name, "taskflow_tasks", columns)


def downgrade() -> None:
    """Drop them again."""
    for name in reversed(TASK_INDEXES):
        op.drop_index(name, table_name="taskflow_tasks")
