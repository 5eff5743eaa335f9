"""Retention: deleting old finished tasks in small batches."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Protocol

from taskflow._engine.job import utcnow
from taskflow._store.protocol import MetaStore, TaskStore

logger = logging.getLogger("taskflow")

LAST_RUN_KEY = "retention.last_run"
BATCH_SIZE = 500


class RetentionStore(TaskStore, MetaStore, Protocol):
    """What retention uses of the store: tasks, and the meta table for its last run."""


async def run_if_due(db: RetentionStore, *, days: float, interval: float) -> int:
    """Prune tasks that finished more than ``days`` ago, if the last pass (stored in the
    database, shared by all processes) is older than ``interval`` seconds. Returns how
    many tasks were deleted."""
    now = utcnow()
    last = await db.get_meta(LAST_RUN_KEY)
    if last is not None and datetime.fromisoformat(last) > now - timedelta(seconds=interval):
        return 0
    await db.set_meta(LAST_RUN_KEY, now.isoformat(), now=now)
    deleted = await prune(db, before=now - timedelta(days=days))
    if deleted:
        logger.info("retention deleted %d tasks finished before %s days ago", deleted, days)
    return deleted


async def prune(db: TaskStore, *, before: datetime) -> int:
    """Delete every final task that finished before ``before``, one batch per
    transaction so no single transaction holds the write lock for long."""
    total = 0
    while True:
        deleted = await db.prune_finished(before=before, batch_size=BATCH_SIZE)
        total += deleted
        if deleted < BATCH_SIZE:
            return total
