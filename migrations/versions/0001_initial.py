"""Initial schema: tasks, logs, attempts, aliases, schedules, instances and meta.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-24

Written out by hand (not ``metadata.create_all``) so this revision stays fixed when
schema.py changes later; later changes get their own revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import taskflow._store.schema

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("taskflow",)
depends_on: str | Sequence[str] | None = None

# An idempotency key is free again once its task failed, was cancelled or interrupted.
IDEMPOTENCY_WHERE = (
    "idempotency_key IS NOT NULL AND status NOT IN ('failed', 'cancelled', 'interrupted')"
)
# One task per (schedule, slot), but only for tasks the scheduler created.
SCHEDULE_SLOT_WHERE = "schedule_id IS NOT NULL AND source = 'scheduled'"


def upgrade() -> None:
    """Create every taskflow table and index."""
    create_tasks()
    create_task_logs()
    create_task_attempts()
    create_task_aliases()
    create_schedules()
    create_instances()
    create_meta()


def downgrade() -> None:
    """Drop everything :func:`upgrade` created, children before parents."""
    op.drop_table("taskflow_meta")
    op.drop_index("ix_taskflow_instances_heartbeat", table_name="taskflow_instances")
    op.drop_table("taskflow_instances")
    op.drop_index("ix_taskflow_schedules_due", table_name="taskflow_schedules")
    op.drop_table("taskflow_schedules")
    op.drop_table("taskflow_task_attempts")
    op.drop_index("ix_taskflow_task_aliases_task", table_name="taskflow_task_aliases")
    op.drop_table("taskflow_task_aliases")
    op.drop_index("ix_taskflow_task_logs_task", table_name="taskflow_task_logs")
    op.drop_table("taskflow_task_logs")
    for name in (
        "uq_taskflow_tasks_schedule_slot",
        "uq_taskflow_tasks_idempotency",
        "ix_taskflow_tasks_finished",
        "ix_taskflow_tasks_created",
        "ix_taskflow_tasks_owner",
        "ix_taskflow_tasks_claim",
    ):
        op.drop_index(name, table_name="taskflow_tasks")
    op.drop_table("taskflow_tasks")


def utc() -> taskflow._store.schema.UTCDateTime:
    """A fresh timestamp column type (timestamptz on PostgreSQL, UTC text on SQLite)."""
    return taskflow._store.schema.UTCDateTime()


def create_tasks() -> None:
    """The task table with its claim, retention and partial unique indexes."""
    op.create_table(
        "taskflow_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("func_name", sa.String(255), nullable=False),
        sa.Column("func_path", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay", sa.Float(), nullable=True),
        sa.Column("retry_max_delay", sa.Float(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("schedule_id", sa.String(32), nullable=True),
        sa.Column("schedule_slot", utc(), nullable=True),
        sa.Column("owner", sa.String(32), nullable=True),
        sa.Column("requeue_on_interrupt", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("started_at", utc(), nullable=True),
        sa.Column("finished_at", utc(), nullable=True),
        sa.Column("next_attempt_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_taskflow_tasks_claim", "taskflow_tasks", ["status", "queue", "next_attempt_at"]
    )
    op.create_index("ix_taskflow_tasks_owner", "taskflow_tasks", ["owner", "status"])
    op.create_index("ix_taskflow_tasks_created", "taskflow_tasks", ["created_at"])
    op.create_index("ix_taskflow_tasks_finished", "taskflow_tasks", ["finished_at"])
    op.create_index(
        "uq_taskflow_tasks_idempotency",
        "taskflow_tasks",
        ["idempotency_key"],
        unique=True,
        sqlite_where=sa.text(IDEMPOTENCY_WHERE),
        postgresql_where=sa.text(IDEMPOTENCY_WHERE),
    )
    op.create_index(
        "uq_taskflow_tasks_schedule_slot",
        "taskflow_tasks",
        ["schedule_id", "schedule_slot"],
        unique=True,
        sqlite_where=sa.text(SCHEDULE_SLOT_WHERE),
        postgresql_where=sa.text(SCHEDULE_SLOT_WHERE),
    )


def create_task_logs() -> None:
    """Per-task log lines, deleted with their task."""
    op.create_table(
        "taskflow_task_logs",
        # INTEGER PRIMARY KEY is SQLite's rowid alias; BIGINT would not autoincrement there.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("at", utc(), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["taskflow_tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_taskflow_task_logs_task", "taskflow_task_logs", ["task_id", "id"])


def create_task_attempts() -> None:
    """One row per attempt of a task, deleted with their task."""
    op.create_table(
        "taskflow_task_attempts",
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("instance", sa.String(32), nullable=True),
        sa.Column("started_at", utc(), nullable=False),
        sa.Column("finished_at", utc(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["taskflow_tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "attempt"),
    )


def create_task_aliases() -> None:
    """Ids promised to callers that lost an idempotency race, pointing at the winner."""
    op.create_table(
        "taskflow_task_aliases",
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["taskflow_tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("alias"),
    )
    op.create_index("ix_taskflow_task_aliases_task", "taskflow_task_aliases", ["task_id"])


def create_schedules() -> None:
    """Static and dynamic schedules, found by the scheduler through their due index."""
    op.create_table(
        "taskflow_schedules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("group_name", sa.String(255), nullable=True),
        sa.Column("func_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("every", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", utc(), nullable=True),
        sa.Column("last_run_at", utc(), nullable=True),
        sa.Column("last_task_id", sa.String(32), nullable=True),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # Unnamed like schema.py's ``unique=True``, so both dialects name it themselves.
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_taskflow_schedules_due", "taskflow_schedules", ["enabled", "next_run_at"])


def create_instances() -> None:
    """Live worker processes and their heartbeats."""
    op.create_table(
        "taskflow_instances",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("started_at", utc(), nullable=False),
        sa.Column("heartbeat_at", utc(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_taskflow_instances_heartbeat", "taskflow_instances", ["heartbeat_at"])


def create_meta() -> None:
    """Key/value settings taskflow keeps about itself."""
    op.create_table(
        "taskflow_meta",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
