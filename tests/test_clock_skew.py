"""Clock skew: three real server processes whose clocks are 30 s behind, right, and 30 s
ahead (libfaketime), on one PostgreSQL database.

The engine keeps time by the database's clock (``taskflow/_engine/dbclock.py``), so the
promises hold as if the clocks agreed: each schedule slot fires once, never early and
at most ``LATENESS`` late; no live instance is declared dead although the skew is far
longer than ``instance_timeout``; retention deletes only tasks that ended more than its
keep ago, never a task that has not ended.

Every judgement uses times read from the database's clock by the test itself (the test
process is not shifted): a row first seen by a read that ended at database time ``t``
was written before ``t``; a task seen unfinished by a read that began at ``t`` ended
after ``t``. Nothing relies on a time written by a shifted process.

libfaketime comes from the Debian package ``faketime`` (``scripts/test`` installs it);
without it the test skips, and fails with ``CI=true``.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from taskflow._engine import dbclock
from taskflow._engine.job import database_offset, set_database_offset, utcnow
from taskflow._store.protocol import Store
from taskflow._store.rows import ClockReading
from tests.apps.web import RETENTION_ENV, SCHEDULE_EVERY_ENV
from tests.servers import Database, Server, poll, start_all

SKEWS = {"behind": "-30s", "right": "+0s", "ahead": "+30s"}
KEEP = 8.0  # retention: seconds a finished task is kept
HEARTBEAT, INSTANCE_TIMEOUT = 0.5, 3.0  # the timeout is a tenth of the skew
LATENESS = 5.0  # seconds: the bound the test allows a slot (docs/reliability.md)
EARLY = 0.5  # seconds: a slot seen this long before its time fired early
SLOTS = 20  # slots judged after every instance is up
FINAL = ("success", "failed", "cancelled", "interrupted")
SERVER_ENV = {SCHEDULE_EVERY_ENV: "1", RETENTION_ENV: str(KEEP), "TASKFLOW_POOL_SIZE": "4"}


def libfaketime() -> str:
    """The preload library of libfaketime, or a skip (a failure with ``CI=true``)."""
    found = os.environ.get("TASKFLOW_LIBFAKETIME") or next(
        iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None
    )
    if found and os.path.isfile(found):
        return found
    missing = "libfaketime is not installed (apt-get install faketime; scripts/test does it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the clock skew test needs libfaketime in CI: {missing}")
    pytest.skip(f"clock skew test skipped: {missing}")


def shifted(library: str, skew: str) -> dict[str, str]:
    """Environment that shifts a process's wall clock by ``skew`` and leaves its
    monotonic clock (asyncio's) alone; file times are not shifted (``.pyc`` checks)."""
    return {
        "LD_PRELOAD": library,
        "FAKETIME": skew,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "NO_FAKE_STAT": "1",
    }


def check_shift(library: str) -> None:
    """A Python process with the shift really sees its wall clock 30 s ahead, and its
    monotonic clock unshifted."""
    code = "import time; print(time.time(), time.monotonic())"
    env = {**os.environ, **shifted(library, "+30s")}
    before = (time.time(), time.monotonic())
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    after = (time.time(), time.monotonic())
    wall, monotonic = (float(value) for value in out.stdout.split())
    assert before[0] + 29 <= wall <= after[0] + 31, (before, wall, after, out.stderr)
    assert before[1] <= monotonic <= after[1], (before, monotonic, after)


class Watch:
    """What the test sees of the database, each read bracketed by the database's clock."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.first_seen: dict[str, datetime] = {}  # task id -> end of the first read with it
        self.slot_of: dict[str, datetime] = {}  # scheduled task id -> its slot
        self.unfinished_at: dict[str, datetime] = {}  # task id -> last moment it had not ended
        self.gone_at: dict[str, datetime] = {}  # task id -> end of the first read without it
        self.instances: list[set[str]] = []
        self.last_began: datetime | None = None  # when the last read began

    def now(self) -> datetime:
        return ts(self.db.rows("SELECT clock_timestamp() AS now")[0]["now"])

    def read(self) -> None:
        began = self.now()
        rows = self.db.rows(
            "SELECT t.id, t.status, t.schedule_slot, t.source FROM taskflow_tasks t"
        )
        ids = {row["id"] for row in self.db.rows("SELECT id FROM taskflow_instances")}
        ended = self.now()
        self.last_began = began
        self.instances.append(ids)
        present = set()
        for row in rows:
            task_id = row["id"]
            present.add(task_id)
            self.first_seen.setdefault(task_id, ended)
            if row["source"] == "scheduled" and row["schedule_slot"] is not None:
                self.slot_of[task_id] = ts(row["schedule_slot"])
            if row["status"] not in FINAL:
                self.unfinished_at[task_id] = began
        for task_id in self.first_seen:
            if task_id not in present:
                self.gone_at.setdefault(task_id, ended)

    def unfinished(self, task_ids: list[str]) -> bool:
        """Whether any of ``task_ids`` had not ended at the last read."""
        return any(self.unfinished_at.get(task_id) == self.last_began for task_id in task_ids)

    def slots(self) -> list[tuple[datetime, str]]:
        return sorted((slot, task_id) for task_id, slot in self.slot_of.items())


def ts(value: Any) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def enqueue(server: Server, watch: Watch, path: str, **params: Any) -> list[str]:
    """POST an enqueue route; the tasks it made had not ended before this moment."""
    before = watch.now()
    response = httpx.post(f"{server.url}{path}", params=params, timeout=30.0)
    assert response.status_code == 200, response.text
    body = response.json()
    ids = body.get("task_ids") or [body["task_id"]]
    for task_id in ids:
        watch.unfinished_at.setdefault(task_id, before)
    return ids


@pytest.mark.slow
def test_three_instances_with_clocks_30s_apart(db_url: str, db: Database, spawn: Any) -> None:
    """Clocks -30 s, 0 and +30 s: every slot fires once, none early, none more than
    ``LATENESS`` late, no gap; no live instance is declared dead (the skew is ten
    times ``instance_timeout``); retention keeps every task until ``KEEP`` seconds after
    it ended, and every enqueued task ends."""
    if not db_url.startswith("postgresql"):
        pytest.skip(
            "SQLite: every process runs on the database's host, whose clock is the truth; "
            "processes on hosts with different clocks need PostgreSQL"
        )
    library = libfaketime()
    check_shift(library)

    def server(name: str) -> Server:
        return spawn(
            name,
            heartbeat=HEARTBEAT,
            instance_timeout=INSTANCE_TIMEOUT,
            extra_env={**SERVER_ENV, **shifted(library, SKEWS[name])},
        )

    right = server("right").start()  # creates the schedule row before the others start
    behind, ahead = start_all([server("behind"), server("ahead")])
    watch = Watch(db)
    poll(
        lambda: len(db.rows("SELECT id FROM taskflow_instances")) == 3,
        timeout=15,
        what="three instances",
    )
    up = watch.now()

    enqueued: list[str] = []
    for target in (behind, right, ahead):
        enqueued += enqueue(target, watch, "/batch", count=10)
        enqueued += enqueue(target, watch, "/slow", seconds=KEEP + 2)

    def judged() -> bool:
        watch.read()
        fresh = [slot for slot, _ in watch.slots() if slot > up + timedelta(seconds=2)]
        pruned = any(task_id in watch.gone_at for task_id in enqueued)
        return len(fresh) >= SLOTS and pruned and not watch.unfinished(enqueued)

    poll(judged, timeout=75, what=f"{SLOTS} slots, every task ended and retention", interval=0.25)
    last_read = watch.now()

    # Schedule: never early; once per slot, consecutive and not late over the judged window.
    for slot, task_id in watch.slots():
        seen = watch.first_seen[task_id]
        assert seen >= slot - timedelta(seconds=EARLY), f"slot {slot} fired early (seen {seen})"
    window = [
        (slot, task_id)
        for slot, task_id in watch.slots()
        if up + timedelta(seconds=2) < slot < last_read - timedelta(seconds=LATENESS)
    ]
    slots = [slot for slot, _ in window]
    assert len(slots) >= SLOTS // 2, slots
    assert len(set(slots)) == len(slots), f"slots fired more than once: {slots}"
    gaps = [(a, b) for a, b in zip(slots, slots[1:], strict=False) if b - a != timedelta(seconds=1)]
    assert not gaps, f"slots skipped: {gaps}"
    for slot, task_id in window:
        late = (watch.first_seen[task_id] - slot).total_seconds()
        assert late <= LATENESS, f"slot {slot} fired {late:.2f}s late"

    # Heartbeats: nobody was declared dead, the three instances stayed the same three.
    changed = [ids for ids in watch.instances if ids != watch.instances[0]]
    assert not changed, f"the instances changed from {watch.instances[0]} to {changed[0]}"
    assert len(watch.instances[0]) == 3
    for process in (behind, right, ahead):
        assert process.running(), process.name
        log = process.log(tail=10**8)
        for marker in ("was declared dead", "took over tasks of stopped instance", "Traceback"):
            assert marker not in log, f"{process.name} logged {marker!r}:\n{log[-6000:]}"

    # Retention: a task is deleted only KEEP seconds after it ended (and so never before).
    deleted = [task_id for task_id in watch.gone_at if task_id in watch.unfinished_at]
    assert deleted, "retention deleted nothing"
    for task_id in deleted:
        kept = (watch.gone_at[task_id] - watch.unfinished_at[task_id]).total_seconds()
        assert kept >= KEEP - EARLY, f"task {task_id} deleted {kept:.2f}s after it was unfinished"
    statuses = {
        row["id"]: row["status"] for row in db.rows("SELECT id, status FROM taskflow_tasks")
    }
    for task_id in enqueued:
        assert task_id in watch.gone_at or statuses.get(task_id) == "success", task_id

    # The shift was real, and each process measured it against the database.
    assert "s behind the database's" in behind.log(tail=10**8), behind.log()
    assert "s ahead of the database's" in ahead.log(tail=10**8), ahead.log()


# -- the measurement itself ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_store_reads_the_database_clock(store: Store, store_url: str) -> None:
    """PostgreSQL gives its clock against this host's (the same host here: they agree
    within the round trip); SQLite and the memory store say the host's clock is theirs."""
    reading = await store.read_clock()
    if not store_url.startswith("postgresql"):
        assert reading is None
        return
    assert reading is not None
    assert 0 < reading.round_trip < 5
    assert abs(reading.offset.total_seconds()) <= reading.round_trip / 2 + 0.05


class Readings:
    """A store whose clock reads as given."""

    def __init__(self, *readings: ClockReading | None) -> None:
        self.readings = list(readings)

    async def read_clock(self) -> ClockReading | None:
        return self.readings.pop(0)


@pytest.fixture
def restore_offset() -> Any:
    yield
    set_database_offset(timedelta(0))


@pytest.mark.anyio
async def test_the_engine_clock_follows_the_database(restore_offset: None) -> None:
    """The engine's clock is the database's: an offset is applied, a slow reading does
    not replace a good one (except at start), a difference within the reading's
    uncertainty counts as none, and SQLite (no reading) means the host's clock."""
    ahead = timedelta(seconds=30)
    assert await dbclock.follow(Readings(ClockReading(ahead, 0.002)), first=True) == ahead
    assert abs((utcnow() - datetime.now(UTC)) - ahead) < timedelta(seconds=1)
    slow = ClockReading(timedelta(seconds=-5), dbclock.MAX_ROUND_TRIP + 1)
    assert await dbclock.follow(Readings(slow)) == ahead
    assert await dbclock.follow(Readings(slow), first=True) == slow.offset
    within = ClockReading(timedelta(milliseconds=40), 0.1)
    assert await dbclock.follow(Readings(within)) == timedelta(0)
    await dbclock.follow(Readings(ClockReading(ahead, 0.002)))
    assert await dbclock.follow(Readings(None)) == timedelta(0) == database_offset()
