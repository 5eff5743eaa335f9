"""Tables and indexes of the TaskAdmin dashboard, on the shared ``metadata``.

Importing this module registers them on :data:`taskflow._store.schema.metadata`, so the
Alembic environment and ``compare_metadata`` see them (``taskflow/__init__.py`` imports
it through :mod:`taskflow.admin`). Revision ``0002_dashboard`` creates them.

* ``taskflow_admin_audit``: who did what to which task or schedule, and when.
* ``taskflow_admin_sessions``: dashboard logins, so every process accepts them and a
  logout invalidates the session everywhere.
* indexes on the task and log tables that keep the dashboard's lists and charts off
  full scans (keyset pagination by status or function, charts by finish time, log
  search by time); revision ``0003_dashboard_indexes`` adds function-and-status and
  start-time ones.
"""

from __future__ import annotations

import sqlalchemy as sa

from taskflow._store.schema import UTCDateTime, metadata, task_logs, tasks

audit = sa.Table(
    "taskflow_admin_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_taskflow_admin_audit_at", "at"),
    # Login rate limiting counts recent failures by user name and by address.
    sa.Index("ix_taskflow_admin_audit_action", "action", "at"),
    sa.Index("ix_taskflow_admin_audit_target", "target", "at"),
)

sessions = sa.Table(
    "taskflow_admin_sessions",
    metadata,
    # SHA-256 of the session token: a stolen database does not hand out sessions.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("read_only", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_taskflow_admin_sessions_expires", "expires_at"),
)

# Keyset pages of one status or one function, newest first.
sa.Index("ix_taskflow_tasks_status_created", tasks.c.status, tasks.c.created_at, tasks.c.id)
sa.Index("ix_taskflow_tasks_func_created", tasks.c.func_name, tasks.c.created_at, tasks.c.id)
# One function in one status (runs and failures filtered by function): keyset pages and
# capped counts read one index range, without a table lookup per row (revision 0003).
sa.Index(
    "ix_taskflow_tasks_func_status_created",
    tasks.c.func_name,
    tasks.c.status,
    tasks.c.created_at,
    tasks.c.id,
)
# Runs sorted by start time (revision 0003).
sa.Index("ix_taskflow_tasks_started", tasks.c.started_at)
# Throughput charts (count by status over a time range) and per-function statistics.
sa.Index("ix_taskflow_tasks_status_finished", tasks.c.status, tasks.c.finished_at)
sa.Index("ix_taskflow_tasks_func_finished", tasks.c.func_name, tasks.c.finished_at)
# Log search by time window.
sa.Index("ix_taskflow_task_logs_at", task_logs.c.at)
