"""Tasks that wait for other tasks: dependencies and workflows.

Revision ID: 0009_workflows
Revises: 0008_progress_unique
Create Date: 2026-12-07

* ``taskflow_tasks.workflow_id``: the workflow a task belongs to (a chain, a group with
  its callback, or tasks linked by ``depends_on``); indexed for the workflow's page.
* ``taskflow_tasks.on_dependency_failure``: set on a task that depends on others only:
  ``cancel`` (it ends ``cancelled`` when a dependency does not succeed) or ``run``.
* ``taskflow_task_deps``: one row per edge, the task and a task it waits for, with the
  dependency's position in ``depends_on``; indexed both ways. A task waiting for its
  dependencies has the status ``blocked``.
* ``taskflow_workflows``: one row per workflow (id, name, kind, creation time), so the
  dashboard lists workflows without grouping the task table.
* ``taskflow_tasks.limit_key``: the concurrency or rate limit a task counts against
  (``@task(concurrency=..., rate_limit=...)``: the function's name, plus the key of
  ``limit_key=``), NULL for functions without limits; the partial index
  ``ix_taskflow_tasks_limit`` on (limit_key, status, started_at) counts a limit's running
  tasks and recent starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskflow._store.schema import TaskId, UTCDateTime

revision: str = "0009_workflows"
down_revision: str | Sequence[str] | None = "0008_progress_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the task columns, their indexes and the two tables."""
    op.add_column("taskflow_tasks", sa.Column("workflow_id", sa.String(36), nullable=True))
    op.add_column("taskflow_tasks", sa.Column("on_dependency_failure", sa.String(8), nullable=True))
    op.create_index(
        "ix_taskflow_tasks_workflow",
        "taskflow_tasks",
        ["workflow_id", "created_at"],
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.create_table(
        "taskflow_task_deps",
        sa.Column(
            "task_id",
            TaskId,
            sa.ForeignKey("taskflow_tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("depends_on", TaskId, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_taskflow_task_deps_depends_on", "taskflow_task_deps", ["depends_on"])
    op.create_table(
        "taskflow_workflows",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_taskflow_workflows_created", "taskflow_workflows", ["created_at"])
    op.add_column("taskflow_tasks", sa.Column("limit_key", sa.String(255), nullable=True))
    op.create_index(
        "ix_taskflow_tasks_limit",
        "taskflow_tasks",
        ["limit_key", "status", "started_at"],
        sqlite_where=sa.text("limit_key IS NOT NULL"),
        postgresql_where=sa.text("limit_key IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop them again (blocked tasks stay blocked: release or cancel them first)."""
    op.drop_index("ix_taskflow_tasks_limit", table_name="taskflow_tasks")
    op.drop_column("taskflow_tasks", "limit_key")
    op.drop_index("ix_taskflow_workflows_created", table_name="taskflow_workflows")
    op.drop_table("taskflow_workflows")
    op.drop_index("ix_taskflow_task_deps_depends_on", table_name="taskflow_task_deps")
    op.drop_table("taskflow_task_deps")
    op.drop_index("ix_taskflow_tasks_workflow", table_name="taskflow_tasks")
    op.drop_column("taskflow_tasks", "on_dependency_failure")
    op.drop_column("taskflow_tasks", "workflow_id")
