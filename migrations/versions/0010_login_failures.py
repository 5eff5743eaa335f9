"""Failed dashboard logins in a bounded table of their own.

Revision ID: 0010_login_failures
Revises: 0009_workflows
Create Date: 2026-12-07

``taskflow_admin_login_failures`` holds one row per user name and one per client
address that failed to log in recently: how many failures since the first one of the
window. The login lockout reads it instead of counting audit entries, and keeps it
bounded (expired rows are deleted; past a cap, those with the fewest failures, oldest
first). Failed logins are still recorded in the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskflow._store.schema import UTCDateTime

revision: str = "0010_login_failures"
down_revision: str | Sequence[str] | None = "0009_workflows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table and its eviction index."""
    op.create_table(
        "taskflow_admin_login_failures",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_at", UTCDateTime, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_taskflow_admin_login_failures_evict",
        "taskflow_admin_login_failures",
        ["failures", "last_at"],
    )


def downgrade() -> None:
    """Drop it (the lockout then starts from no failures)."""
    op.drop_index(
        "ix_taskflow_admin_login_failures_evict", table_name="taskflow_admin_login_failures"
    )
    op.drop_table("taskflow_admin_login_failures")
