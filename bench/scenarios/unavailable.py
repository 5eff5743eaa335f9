"""Scenarios not measured yet; listed so the table shows the gap."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.results import not_available


def cross_process_latency(_ctx: Context) -> dict[str, Any]:
    """Enqueue → start with a standalone worker process on PostgreSQL."""
    return not_available(
        "Latency, enqueue → start (cross-process, PostgreSQL standalone worker)",
        "not measured yet: `taskflow worker` and LISTEN/NOTIFY exist, the scenario does not",
    )


def dashboard(_ctx: Context) -> dict[str, Any]:
    """Dashboard page and API response times (SQLite and PostgreSQL)."""
    return not_available(
        "Dashboard (SQLite and PostgreSQL)",
        "not measured yet: TaskAdmin exists, the 1M-task / 5M-log scenario does not",
    )
