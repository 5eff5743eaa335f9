"""The dashboard's queries (taskflow/_store/dashboard.py) on SQLite and PostgreSQL:
keyset pages that neither skip nor repeat rows, capped counts, filters, chart buckets,
log search, the shared secret race, and query plans that use the dashboard's indexes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from taskflow._store.admin_schema import login_failures
from taskflow._store.dashboard import DashboardStore, TaskFilter
from taskflow._store.log_queries import LogFilter
from taskflow._store.rows import (
    NewAuditEntry,
    SessionRow,
    TaskSummary,
    TaskSummaryWithPayload,
)
from tests.admin_support import insert_log, insert_rows, task_row

pytestmark = pytest.mark.anyio

BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


async def started(manager_factory):
    manager = manager_factory()
    await manager.startup()
    return manager, DashboardStore(manager.db)


async def walk(queries, filters, *, sort="created", limit=7):
    """All rows, page by page towards older ones; then back again towards newer ones."""
    pages, cursor = [], None
    while True:
        page = await queries.page_tasks(filters, sort=sort, after=cursor, limit=limit)
        pages.append([row.id for row in page.rows])
        if page.older is None:
            break
        cursor = page.older
    back, cursor = [], None
    page = await queries.page_tasks(filters, sort=sort, after=None, limit=limit)
    # Walk to the last page, then use "newer" cursors back to the first.
    while page.older is not None:
        page = await queries.page_tasks(filters, sort=sort, after=page.older, limit=limit)
    back.append([row.id for row in page.rows])
    while page.newer is not None:
        page = await queries.page_tasks(filters, sort=sort, before=page.newer, limit=limit)
        back.append([row.id for row in page.rows])
    return pages, list(reversed(back))


async def test_keyset_pages_cover_every_row_once_in_both_directions(manager_factory):
    manager, queries = await started(manager_factory)
    # Ties on created_at on purpose: the id breaks them.
    rows = [task_row(created_at=BASE + timedelta(seconds=i // 3)) for i in range(30)]
    await insert_rows(manager, rows)
    expected = [
        row["id"] for row in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    ]
    forward, backward = await walk(queries, TaskFilter())
    assert [task_id for page in forward for task_id in page] == expected
    assert backward == forward
    assert [len(page) for page in forward] == [7, 7, 7, 7, 2]


async def test_keyset_pages_of_several_statuses_merge_their_index_ranges(manager_factory):
    manager, queries = await started(manager_factory)
    rows = [
        task_row(status=status, created_at=BASE + timedelta(seconds=i // 2))
        for i, status in enumerate(["failed", "interrupted", "success"] * 8)
    ]
    await insert_rows(manager, rows)
    wanted = TaskFilter(statuses=("failed", "interrupted"))
    forward, backward = await walk(queries, wanted, limit=5)
    expected = [
        row["id"]
        for row in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
        if row["status"] != "success"
    ]
    assert [task_id for page in forward for task_id in page] == expected
    assert backward == forward
    assert await queries.count_tasks(wanted, cap=100) == 16
    assert await queries.count_tasks(wanted, cap=10) == 11


@pytest.mark.parametrize("sort", ["started", "finished", "duration"])
async def test_keyset_pages_by_other_sorts(manager_factory, sort):
    manager, queries = await started(manager_factory)
    rows = [
        task_row(created_at=BASE + timedelta(seconds=i), duration=(i % 4) * 0.25) for i in range(17)
    ]
    rows.append(task_row(status="pending", created_at=BASE))  # no start: not in these sorts
    await insert_rows(manager, rows)
    forward, backward = await walk(queries, TaskFilter(), sort=sort, limit=5)
    flat = [task_id for page in forward for task_id in page]
    assert sorted(flat) == sorted(row["id"] for row in rows[:-1])
    assert backward == forward
    key = {"started": "started_at", "finished": "finished_at"}.get(sort)
    by_id = {row["id"]: row for row in rows}
    values = [
        (by_id[i][key] if key else by_id[i]["finished_at"] - by_id[i]["started_at"]) for i in flat
    ]
    assert values == sorted(values, reverse=True)
    assert await queries.count_tasks(TaskFilter(), cap=100, sort=sort) == 17


async def test_pages_carry_payload_and_result_only_when_asked(manager_factory):
    manager, queries = await started(manager_factory)
    row = task_row(tags={"tenant": "acme"})
    await insert_rows(manager, [{**row, "result": '"done"'}])
    summary = (await queries.page_tasks(TaskFilter(), limit=5)).rows
    assert [type(found) for found in summary] == [TaskSummary]
    assert summary[0].id == row["id"]
    assert summary[0].tags == row["tags"]
    full = (await queries.page_tasks(TaskFilter(), limit=5, with_payload=True)).rows
    assert isinstance(full[0], TaskSummaryWithPayload)
    assert (full[0].payload, full[0].result) == (row["payload"], '"done"')


async def test_counts_are_capped(manager_factory):
    manager, queries = await started(manager_factory)
    await insert_rows(manager, [task_row(status="failed") for _ in range(12)])
    assert await queries.count_tasks(TaskFilter(), cap=10) == 11  # "10+"
    assert await queries.count_tasks(TaskFilter(statuses=("failed",)), cap=100) == 12
    counts = await queries.status_counts(("failed", "success"), cap=5)
    assert counts == {"failed": 6, "success": 0}


async def test_filters(manager_factory):
    manager, queries = await started(manager_factory)
    old = BASE - timedelta(days=2)
    rows = {
        "tagged": task_row(tags={"tenant": "acme", "plan": "pro"}),
        "other_tag": task_row(tags={"tenant": "zeta"}),
        "queue": task_row(queue="emails"),
        "scheduled": task_row(source="scheduled", func_name="nightly"),
        "error": task_row(status="failed", error="ValueError: Disk 50% FULL_now"),
        "old": task_row(created_at=old),
    }
    await insert_rows(manager, list(rows.values()))

    async def ids(**kwargs):
        page = await queries.page_tasks(TaskFilter(**kwargs), limit=50)
        return {row.id for row in page.rows}

    assert await ids(tag=("tenant", "acme")) == {rows["tagged"]["id"]}
    assert await ids(queue="emails") == {rows["queue"]["id"]}
    assert await ids(source="scheduled") == {rows["scheduled"]["id"]}
    assert await ids(func_name="nightly") == {rows["scheduled"]["id"]}
    assert await ids(statuses=("failed",)) == {rows["error"]["id"]}
    # Search: case-insensitive text in the error, with LIKE wildcards taken literally.
    assert await ids(search="disk 50%") == {rows["error"]["id"]}
    assert await ids(search="50%_") == set()
    assert await ids(search="full_now") == {rows["error"]["id"]}
    assert await ids(search=rows["queue"]["id"][:10]) == {rows["queue"]["id"]}
    assert await ids(search="NIGHT") == {rows["scheduled"]["id"]}
    assert await ids(until=BASE - timedelta(days=1)) == {rows["old"]["id"]}
    assert rows["old"]["id"] not in await ids(since=BASE - timedelta(days=1))


async def test_finished_buckets_count_by_status(manager_factory):
    manager, queries = await started(manager_factory)
    start = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    rows = [
        task_row(status="success", created_at=start + timedelta(minutes=1, seconds=5)),
        task_row(status="success", created_at=start + timedelta(minutes=1, seconds=50)),
        task_row(status="failed", created_at=start + timedelta(minutes=3)),
        task_row(status="interrupted", created_at=start + timedelta(minutes=3, seconds=1)),
        task_row(status="success", created_at=start - timedelta(minutes=5)),  # before the window
        task_row(status="pending", created_at=start + timedelta(minutes=2)),
    ]
    await insert_rows(manager, rows)
    buckets = await queries.finished_buckets(
        start=start, size=60, count=5, statuses=("success", "failed", "interrupted")
    )
    assert buckets.counts["success"] == [0, 2, 0, 0, 0]
    assert buckets.counts["failed"] == [0, 0, 0, 1, 0]
    assert buckets.counts["interrupted"] == [0, 0, 0, 1, 0]


async def test_recent_finished_sample(manager_factory):
    manager, queries = await started(manager_factory)
    rows = [task_row(created_at=BASE + timedelta(seconds=i)) for i in range(5)]
    rows.append(task_row(func_name="other", status="failed"))
    await insert_rows(manager, rows)
    recent = await queries.recent_finished(statuses=("success",), limit=3)
    assert len(recent) == 3
    assert all(run.status == "success" for run in recent)
    of_other = await queries.recent_finished(statuses=("failed",), limit=10, func_name="other")
    assert [run.func_name for run in of_other] == ["other"]


async def test_log_search_and_tail(manager_factory):
    manager, queries = await started(manager_factory)
    first, second = task_row(func_name="alpha"), task_row(func_name="beta")
    await insert_rows(manager, [first, second])
    for n in range(5):
        await insert_log(manager, first["id"], f"alpha line {n}")
    await insert_log(manager, second["id"], "beta trouble", level="error")
    rows, older = await queries.page_logs(LogFilter(text="LINE"), limit=3)
    assert [line.message for line in rows] == ["alpha line 4", "alpha line 3", "alpha line 2"]
    rest, none = await queries.page_logs(LogFilter(text="line"), before_id=older, limit=3)
    assert [line.message for line in rest] == ["alpha line 1", "alpha line 0"]
    assert none is None
    errors, _ = await queries.page_logs(LogFilter(level="ERROR"))
    assert [(line.message, line.func_name) for line in errors] == [("beta trouble", "beta")]
    by_function, _ = await queries.page_logs(LogFilter(func_name="beta"))
    assert len(by_function) == 1
    tail = await queries.task_logs(first["id"], limit=2)
    assert [line.message for line in tail] == ["alpha line 3", "alpha line 4"]
    after = await queries.task_logs(first["id"], after_id=tail[0].id)
    assert [line.message for line in after] == ["alpha line 4"]


async def test_meta_insert_if_absent_race_gives_everyone_the_first_value(manager_factory):
    managers = [manager_factory() for _ in range(3)]
    await asyncio.gather(*(manager.startup() for manager in managers))
    stores = [DashboardStore(manager.db) for manager in managers]
    values = await asyncio.gather(
        *(
            store.meta_insert_if_absent("race_key", f"value-{n}", now=datetime.now(UTC))
            for n, store in enumerate(stores)
        )
    )
    assert len(set(values)) == 1
    assert values[0].startswith("value-")
    again = await stores[0].meta_insert_if_absent("race_key", "late", now=datetime.now(UTC))
    assert again == values[0]


async def test_sessions_expire_and_delete(manager_factory):
    manager, queries = await started(manager_factory)
    now = datetime.now(UTC)
    session = SessionRow(
        id="a" * 64,
        username="ann",
        read_only=False,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    await queries.create_session(session, now=now)
    assert await queries.get_session("a" * 64, now=now) == session
    assert await queries.get_session("a" * 64, now=now + timedelta(hours=2)) is None
    assert await queries.delete_session("a" * 64)
    assert await queries.get_session("a" * 64, now=now) is None


async def test_audit_entries_page_newest_first_and_filter_by_target(manager_factory):
    manager, queries = await started(manager_factory)
    now = datetime.now(UTC)
    for n in range(5):
        target = "task-a" if n % 2 else "task-b"
        entry = NewAuditEntry(
            at=now, actor="ann", action="retry", target=target, detail={"n": n}, ip="10.0.0.1"
        )
        await queries.add_audit(entry)
    await queries.add_audit(NewAuditEntry(at=now, actor="bob", action="login", target="bob"))
    first, older = await queries.page_audit(limit=4)
    rest, none = await queries.page_audit(before_id=older, limit=4)
    assert [entry.target for entry in first] == ["bob", "task-b", "task-a", "task-b"]
    assert [entry.detail for entry in rest] == [{"n": 1}, {"n": 0}]
    assert none is None
    assert (first[0].detail, first[0].ip, rest[0].ip) == ({}, None, "10.0.0.1")
    of_a, _ = await queries.page_audit(target="task-a", actions=("retry",))
    assert [entry.detail["n"] for entry in of_a] == [3, 1]


async def test_failed_logins_count_in_a_window_and_the_table_stays_bounded(manager_factory):
    manager, queries = await started(manager_factory)
    now = datetime.now(UTC)
    window = timedelta(minutes=15)
    admin, address = ("user", "admin"), ("address", "10.0.0.9")
    for _ in range(4):
        await queries.add_login_failure([admin, address], now=now, since=now - window, cap=5)
    assert await queries.login_failures([admin, address], since=now - window) == {
        admin: 4,
        address: 4,
    }
    # A spray of new names fills the table past its cap: the names with the fewest
    # failures go first, so admin's count (close to its limit) is kept.
    for n in range(20):
        spray = ("user", f"guess-{n}")
        await queries.add_login_failure([spray], now=now, since=now - window, cap=5)

    async def rows() -> int:
        async with manager.db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(login_failures)))

    assert await rows() == 5
    assert (await queries.login_failures([admin], since=now - window))[admin] == 4
    # A failure after the window starts a new count; expired rows are deleted.
    later = now + window + timedelta(seconds=1)
    await queries.add_login_failure([admin], now=later, since=later - window, cap=5)
    assert await queries.login_failures([admin, address], since=later - window) == {admin: 1}
    assert await rows() == 1
    # A name longer than the column counts by its first 255 characters.
    long_name = ("user", "x" * 300)
    await queries.add_login_failure([long_name], now=later, since=later - window, cap=5)
    assert await queries.login_failures([long_name], since=later - window) == {
        ("user", "x" * 255): 1
    }


def _plan_text(rows) -> str:
    return "\n".join(" ".join(str(part) for part in row) for row in rows)


async def test_default_views_use_indexes(manager_factory):
    """The queries behind the default views read an index range, not the whole table."""
    manager, queries = await started(manager_factory)
    await insert_rows(manager, [task_row(status="failed") for _ in range(50)])
    dialect = queries.dialect
    statements = {
        "status page": "SELECT id FROM taskflow_tasks WHERE status = 'failed' "
        "ORDER BY created_at DESC, id DESC LIMIT 51",
        "function page": "SELECT id FROM taskflow_tasks WHERE func_name = 'admin_ok' "
        "ORDER BY created_at DESC, id DESC LIMIT 51",
        "chart": "SELECT count(*) FROM taskflow_tasks WHERE status = 'success' "
        "AND finished_at >= '2025-01-01'",
        "logs by time": "SELECT id FROM taskflow_task_logs WHERE at >= '2025-01-01' "
        "ORDER BY at DESC LIMIT 10",
    }
    async with manager.db.read() as conn:
        if dialect == "postgresql":
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            await conn.execute(sa.text("ANALYZE taskflow_tasks"))
        for what, statement in statements.items():
            prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
            plan = _plan_text(await conn.execute(sa.text(prefix + statement)))
            assert "ix_taskflow_" in plan, f"{what} does not use an index:\n{plan}"
            assert "SCAN taskflow_tasks\n" not in plan + "\n", f"{what} scans the table:\n{plan}"
