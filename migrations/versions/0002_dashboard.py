"""Dashboard: audit log, login sessions and the indexes behind the dashboard's lists.

Revision ID: 0002_dashboard
Revises: 0001_initial
Create Date: 2025-11-24

Written out by hand, like 0001, so it stays fixed when the models change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import taskflow._store.schema

revision: str = "0002_dashboard"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_INDEXES = {
    "ix_taskflow_tasks_status_created": ["status", "created_at", "id"],
    "ix_taskflow_tasks_func_created": ["func_name", "created_at", "id"],
    "ix_taskflow_tasks_status_finished": ["status", "finished_at"],
    "ix_taskflow_tasks_func_finished": ["func_name", "finished_at"],
}


def utc() -> taskflow._store.schema.UTCDateTime:
    """A fresh timestamp column type (timestamptz on PostgreSQL, UTC text on SQLite)."""
    return taskflow._store.schema.UTCDateTime()


def upgrade() -> None:
    """Create the audit and session tables and the dashboard's indexes."""
    create_audit()
    create_sessions()
    for name, columns in TASK_INDEXES.items():
        op.create_index(name, "taskflow_tasks", columns)
    op.create_index("ix_taskflow_task_logs_at", "taskflow_task_logs", ["at"])


def downgrade() -> None:
    """Drop everything :func:`upgrade` created."""
    op.drop_index("ix_taskflow_task_logs_at", table_name="taskflow_task_logs")
    for name in reversed(TASK_INDEXES):
        op.drop_index(name, table_name="taskflow_tasks")
    op.drop_index("ix_taskflow_admin_sessions_expires", table_name="taskflow_admin_sessions")
    op.drop_table("taskflow_admin_sessions")
    for name in (
        "ix_taskflow_admin_audit_target",
        "ix_taskflow_admin_audit_action",
        "ix_taskflow_admin_audit_at",
    ):
        op.drop_index(name, table_name="taskflow_admin_audit")
    op.drop_table("taskflow_admin_audit")


def create_audit() -> None:
    """Who did what to which task or schedule, and when."""
    op.create_table(
        "taskflow_admin_audit",
        # INTEGER PRIMARY KEY is SQLite's rowid alias; BIGINT would not autoincrement there.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", utc(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_taskflow_admin_audit_at", "taskflow_admin_audit", ["at"])
    op.create_index("ix_taskflow_admin_audit_action", "taskflow_admin_audit", ["action", "at"])
    op.create_index("ix_taskflow_admin_audit_target", "taskflow_admin_audit", ["target", "at"])


def create_sessions() -> None:
    """Dashboard logins, shared by every process."""
    op.create_table(
        "taskflow_admin_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("expires_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_taskflow_admin_sessions_expires", "taskflow_admin_sessions", ["expires_at"])
