"""The engine keeps time by the database's clock.

Processes on several hosts compare times they wrote to the database (heartbeats and the
stale cut-off, schedule slots, when a task is due, retention cut-offs), so they must read
one clock. Each process measures how far the database's clock is from its host's
(PostgreSQL ``clock_timestamp()``, corrected by half the round trip) when it starts and
at every heartbeat; :func:`taskflow._engine.job.utcnow` adds that offset. On SQLite the
database is a file on this host, so the host's clock is the database's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from taskflow._engine.job import database_offset, set_database_offset
from taskflow._store.rows import ClockReading

logger = logging.getLogger("taskflow")

# A reading slower than this is too uncertain to replace the last one.
MAX_ROUND_TRIP = 1.0
# Offsets within the reading's uncertainty, and at least this small, count as zero: the
# two clocks agree as far as anyone can tell.
SAME_CLOCK = 0.005
# A change of the offset this large (seconds) is logged.
NOTABLE = 1.0


class ClockStore(Protocol):
    """What following the database's clock uses of the store."""

    async def read_clock(self) -> ClockReading | None:
        """The database's clock against this host's (None: they are the same clock)."""
        ...


async def follow(db: ClockStore, *, first: bool = False) -> timedelta:
    """Measure the database's clock and follow it from now on; returns the offset used.
    ``first``: the process is starting (a slow reading is taken anyway)."""
    reading = await db.read_clock()
    previous = database_offset()
    if reading is None:
        offset = timedelta(0)
    elif reading.round_trip > MAX_ROUND_TRIP and not first:
        return previous
    else:
        uncertainty = max(reading.round_trip / 2, SAME_CLOCK)
        agree = abs(reading.offset.total_seconds()) <= uncertainty
        offset = timedelta(0) if agree else reading.offset
    set_database_offset(offset)
    if abs((offset - previous).total_seconds()) >= NOTABLE or (
        first and abs(offset.total_seconds()) >= NOTABLE
    ):
        seconds = offset.total_seconds()
        logger.warning(
            "this host's clock is %.3f s %s the database's; taskflow keeps time by the "
            "database's clock",
            abs(seconds),
            "behind" if seconds > 0 else "ahead of",
        )
    return offset
