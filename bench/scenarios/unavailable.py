"""Scenarios of features that do not exist yet; listed so the table shows the gap."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.results import not_available


def cross_process_latency(_ctx: Context) -> dict[str, Any]:
    """Enqueue → start with a standalone worker process on PostgreSQL."""
    return not_available(
        "Latency, enqueue → start (cross-process, PostgreSQL standalone worker)",
        "standalone workers and LISTEN/NOTIFY wake-ups are a later issue",
    )


def dashboard(_ctx: Context) -> dict[str, Any]:
    """Dashboard page and API response times (SQLite and PostgreSQL)."""
    return not_available(
        "Dashboard (SQLite and PostgreSQL)",
        "the TaskAdmin dashboard is a later issue",
    )
