"""Text search on SQLite and PostgreSQL: tasks by error, function name, id and arguments,
log lines by message and structured field, through the indexes of revisions
0006_text_search and 0007_operator.

Every search is compared with its documented meaning written in Python (a substring,
ignoring case), in each shape the store can give it: few matches read through the index,
many matches read in page order. The shapes are forced by lowering the store's
thresholds, so a handful of rows exercises both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from taskflow._store import log_queries, search, task_search
from taskflow._store.dashboard import DashboardStore, TaskFilter
from taskflow._store.log_queries import LogFilter
from taskflow._store.schema import (
    ARGS_FTS,
    ARGS_SEARCH,
    LOGS_FTS,
    TASKS_FTS,
    TEXT_SEARCH_INDEXES,
    task_logs,
    tasks,
)
from taskflow.admin._redact import Redactor
from tests.admin_support import (
    admin_fail,
    admin_ok,
    admin_report,
    build,
    call,
    insert_rows,
    task_row,
    wait_status,
)

pytestmark = pytest.mark.anyio

BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ERRORS = [
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "CardDeclined: insufficient funds",
    "ValueError: Disk 50% FULL_now",
    "KeyError: 'document_id'",
    'it\'s "quoted" and back\\slashed',
    "Überweisung abgelehnt: Konto gesperrt",
]
FUNCTIONS = ["send_email", "generate_report", "reports.tenant_digest", "charge_card"]
SEARCHES = [
    "ConnectionResetError",
    "connection",  # case
    "reset by",
    "ERROR",
    "report",  # function names and an error
    "50% full",  # wildcards are literal
    "50%_",
    '"quoted"',
    "back\\slash",
    "'document_id'",
    "Konto",
    "nowhere at all",
    "er",  # shorter than a trigram: rows are read
    "e",
]
SHAPES = {
    # few: every search reads its candidates through the index and sorts them
    "few": {"FEW_MATCHES": 10_000, "MANY_MATCHES": 10_000},
    # walk: pages are read in page order, checking rows against the index's list
    "walk": {"FEW_MATCHES": 0, "MANY_MATCHES": 10_000},
    # common: pages are read in page order, checking the text in each row
    "common": {"FEW_MATCHES": 0, "MANY_MATCHES": 0},
}


async def started(manager_factory: Any) -> tuple[Any, DashboardStore]:
    manager = manager_factory()
    await manager.startup()
    return manager, DashboardStore(manager.db)


def shape(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the store pick one shape whatever the number of matches."""
    for constant, value in SHAPES[name].items():
        module = task_search if constant == "FEW_MATCHES" else search
        monkeypatch.setattr(module, constant, value)


def expected(rows: list[dict[str, Any]], text: str, statuses: tuple[str, ...] = ()) -> set[str]:
    """The documented meaning of a task search, in Python."""
    text = text.strip().lower()
    return {
        row["id"]
        for row in rows
        if (not statuses or row["status"] in statuses)
        and (
            text in row["func_name"].lower()
            or text in (row["error"] or "").lower()
            or row["id"].startswith(text)
        )
    }


def history() -> list[dict[str, Any]]:
    """Tasks of four functions, a third of them failed with one of ERRORS."""
    rows = []
    for n in range(60):
        status = ("failed", "success", "interrupted")[n % 3]
        error = ERRORS[n % len(ERRORS)] if status != "success" else None
        created = BASE + timedelta(seconds=n // 2)  # ties on created_at: the id breaks them
        rows.append(
            task_row(
                func_name=FUNCTIONS[n % len(FUNCTIONS)],
                status=status,
                error=error,
                created_at=created,
            )
        )
    return rows


async def every_page(queries: DashboardStore, filters: TaskFilter) -> list[str]:
    """The ids of every page of ``filters``, in order."""
    found: list[str] = []
    cursor = None
    while True:
        page = await queries.page_tasks(filters, after=cursor, limit=7)
        found += [row.id for row in page.rows]
        if page.older is None:
            return found
        cursor = page.older


@pytest.mark.parametrize("name", list(SHAPES))
async def test_task_search_finds_what_it_documents_in_every_shape(
    manager_factory: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    manager, queries = await started(manager_factory)
    rows = history()
    await insert_rows(manager, rows)
    shape(monkeypatch, name)
    newest_first = sorted(rows, key=lambda row: (row["created_at"], row["id"]), reverse=True)
    for text in SEARCHES:
        for statuses in ((), ("failed", "interrupted")):
            filters = TaskFilter(search=text, statuses=statuses)
            want = expected(rows, text, statuses)
            found = await every_page(queries, filters)
            assert found == [row["id"] for row in newest_first if row["id"] in want], text
            cap = queries.count_cap(filters, 10_000)
            assert await queries.count_tasks(filters, cap=cap) == min(len(want), cap + 1), text


async def test_task_search_by_id_start_and_sorted_by_duration(manager_factory: Any) -> None:
    manager, queries = await started(manager_factory)
    rows = history()
    await insert_rows(manager, rows)
    target = rows[7]["id"]
    for text in (target[:3], target[:12], target.upper()):
        page = await queries.page_tasks(TaskFilter(search=text), limit=100)
        assert target in {row.id for row in page.rows}, text
        assert {row.id for row in page.rows} == expected(rows, text), text
    page = await queries.page_tasks(TaskFilter(search="CardDeclined"), sort="duration", limit=100)
    assert {row.id for row in page.rows} == expected(rows, "CardDeclined")


async def test_errors_of_finished_tasks_are_found_and_forgotten(manager_factory: Any) -> None:
    """The index follows the rows: errors written when tasks fail (before and after a
    search), an error replaced when a task finishes again, a deleted task."""
    manager, queries = await started(manager_factory)
    manager.task()(admin_fail)
    manager.task()(admin_ok)
    first = await manager.enqueue(admin_fail, 41)
    ok = await manager.enqueue(admin_ok, 1)
    for task_id in (first, ok):
        await wait_for_final(manager, task_id)

    async def ids(text: str) -> set[str]:
        page = await queries.page_tasks(TaskFilter(search=text), limit=50)
        return {row.id for row in page.rows}

    assert await ids("broke on 41") == {first}
    second = await manager.enqueue(admin_fail, 42)
    await wait_for_final(manager, second)
    assert await ids("broke on 42") == {second}
    assert await ids("admin_fail broke") == {first, second}
    later = datetime.now(UTC) + timedelta(seconds=30)
    async with manager.db.write() as conn:
        await conn.execute(
            tasks.update()
            .where(tasks.c.id == first)
            .values(error="PermissionError: nope", finished_at=later)
        )
    assert await ids("broke on 41") == set()
    assert await ids("permissionerror") == {first}
    assert await manager.db.delete_task(first)
    assert await ids("permissionerror") == set()
    assert await ids("admin_ok") == {ok}


async def wait_for_final(manager: Any, task_id: str) -> None:
    """Wait until the task has finished (its final row is committed)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        record = await manager.get_task(task_id)
        if record is not None and record.status.is_final:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish")


async def test_search_reads_the_text_index(manager_factory: Any) -> None:
    """A task or log search of three characters or more goes through the trigram index:
    on SQLite a statement reads the FTS5 table, on PostgreSQL the plan of the search
    uses the trigram index."""
    manager, queries = await started(manager_factory)
    rows = history()
    await insert_rows(manager, rows)
    for row in rows[:5]:
        await add_log(manager, row["id"], f"upstream said {row['id'][:6]}", {"customer": "c-1"})
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = manager.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        await queries.page_tasks(TaskFilter(search="CardDeclined"), limit=10)
        await queries.count_tasks(TaskFilter(search="CardDeclined"), cap=1000)
        await queries.page_logs(LogFilter(text="upstream said"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    if queries.dialect == "sqlite":
        assert any(f"{TASKS_FTS} MATCH" in statement for statement in statements)
        assert any(f"{LOGS_FTS} MATCH" in statement for statement in statements)
        return
    plans = []
    async with manager.db.read() as conn:
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        for statement in (
            "SELECT id FROM taskflow_tasks WHERE error ILIKE '%CardDeclined%'",
            "SELECT id FROM taskflow_task_logs WHERE message ILIKE '%upstream said%'",
            "SELECT id FROM taskflow_task_logs WHERE extra IS NOT NULL "
            "AND CAST(extra AS TEXT) ILIKE '%c-1%'",
            f"SELECT task_id FROM {ARGS_SEARCH} WHERE text ILIKE '%c-1%'",
        ):
            plan = await conn.execute(sa.text("EXPLAIN " + statement))
            plans.append("\n".join(str(row[0]) for row in plan))
        # The arguments' index is on a table of its own: storing or updating a task
        # maintains no index of its arguments.
        indexes = await conn.scalars(
            sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = 'taskflow_tasks'")
        )
        assert not [index for index in indexes if "payload" in index]
    for plan, index in zip(plans, TEXT_SEARCH_INDEXES, strict=True):
        assert index in plan, plan


async def add_log(manager: Any, task_id: str, message: str, extra: dict[str, Any] | None) -> int:
    async with manager.db.write() as conn:
        result = await conn.execute(
            task_logs.insert().values(
                task_id=task_id, at=datetime.now(UTC), level="info", message=message, extra=extra
            )
        )
        return int(result.inserted_primary_key[0])


LINES = [
    ("charged the card", {"customer": "cust-40", "amount": 12.5, "retry": False}),
    ("charged the card", {"customer": "cust-400", "api_token": "tok-s3cr3t-99"}),
    ("refund sent to cust-41", None),
    ("nested fields are not searched", {"request": {"customer": "cust-77"}}),
    ("Übermittlung fehlgeschlagen", {"Ort": "Zürich", "note": 'say "hi"'}),
    ("plain line", {"db-Password": "hunter2-long"}),
]
LOG_SEARCHES = {
    "cust-40": {0, 1},
    "CUST-4": {0, 1, 2},
    "customer": {0, 1},  # a key
    "12.5": {0},
    "false": {0},
    "cust-77": set(),  # nested: not a top-level value
    "tok-s3cr3t": set(),  # hidden: the key holds "token"
    "hunter2": set(),  # hidden: "db-Password" holds "password"
    "Zürich": {4},
    '"hi"': {4},
    "Übermittlung": {4},
    "card": {0, 1},
    "nowhere at all": set(),
    "ch": {0, 1, 3, 4},  # shorter than a trigram
}


@pytest.mark.parametrize("few", [True, False])
async def test_log_search_finds_messages_and_visible_fields(
    manager_factory: Any, monkeypatch: pytest.MonkeyPatch, few: bool
) -> None:
    manager, queries = await started(manager_factory)
    row = task_row()
    await insert_rows(manager, [row])
    ids = [await add_log(manager, row["id"], message, extra) for message, extra in LINES]
    monkeypatch.setattr(log_queries, "FEW_LINES", 10_000 if few else 0)
    hidden = ("password", "token")
    for text, want in LOG_SEARCHES.items():
        lines, _ = await queries.page_logs(LogFilter(text=text, hidden_fields=hidden))
        assert {line.id for line in lines} == {ids[n] for n in want}, text
    revealed, _ = await queries.page_logs(LogFilter(text="tok-s3cr3t"))
    assert [line.id for line in revealed] == [ids[1]]  # only hidden when asked


async def test_log_lines_leave_the_index_with_their_task(manager_factory: Any) -> None:
    manager, queries = await started(manager_factory)
    gone, kept = task_row(status="failed", error="boom"), task_row()
    await insert_rows(manager, [gone, kept])
    await add_log(manager, gone["id"], "line of the deleted task", {"customer": "cust-9"})
    await add_log(manager, kept["id"], "line of the kept task", {"customer": "cust-9"})
    assert await manager.db.delete_task(gone["id"])
    lines, _ = await queries.page_logs(LogFilter(text="cust-9"))
    assert [line.task_id for line in lines] == [kept["id"]]
    lines, _ = await queries.page_logs(LogFilter(text="deleted task"))
    assert lines == []


async def test_successful_tasks_without_logs_never_reach_the_index(manager_factory: Any) -> None:
    """The hot path of a no-op task writes nothing for the text indexes: SQLite has no
    trigger on the task table (any trigger costs every insert and finish a statement
    journal) and indexes errors only; PostgreSQL's error index is partial."""
    manager, queries = await started(manager_factory)
    async with manager.db.read() as conn:
        if queries.dialect == "postgresql":
            definition = await conn.scalar(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                {"name": TEXT_SEARCH_INDEXES[0]},
            )
            assert "WHERE (error IS NOT NULL)" in definition
            return
        triggers = await conn.scalar(
            sa.text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
            {"t": tasks.name},
        )
    assert triggers == 0
    await insert_rows(manager, [task_row() for _ in range(20)])  # success, no error
    await insert_rows(manager, [task_row(status="failed", error="now one")])
    assert len(await every_page(queries, TaskFilter(search="now one"))) == 1
    async with manager.db.read() as conn:
        entries = await conn.scalar(sa.text(f"SELECT count(*) FROM {TASKS_FTS}"))
    assert entries == 1


async def test_search_without_the_text_index_reads_rows(manager_factory: Any) -> None:
    """A SQLite without FTS5 trigrams gets no tables from the migration: searches then
    read rows, with the same results."""
    manager, queries = await started(manager_factory)
    rows = history()
    arguments = argument_rows()
    await insert_rows(manager, [*rows, *arguments.values()])
    if queries.dialect == "sqlite":
        async with manager.db.write() as conn:
            for suffix in ("insert", "update", "delete"):
                await conn.execute(sa.text(f"DROP TRIGGER {LOGS_FTS}_{suffix}"))
            for table in (TASKS_FTS, LOGS_FTS, ARGS_FTS):
                await conn.execute(sa.text(f"DROP TABLE {table}"))
        queries = DashboardStore(manager.db)
    for text in ("ConnectionResetError", "report", "er"):
        assert set(await every_page(queries, TaskFilter(search=text))) == expected(rows, text)
    shown = DashboardStore(manager.db, search_arguments=True, hidden_keys=Redactor().keys)
    want = {arguments[name]["id"] for name in ("plain", "memory")}
    assert set(await every_page(shown, TaskFilter(search=ARGUMENT))) == want
    assert await shown.count_tasks(TaskFilter(search=ARGUMENT), cap=1000) == len(want)
    await add_log(manager, rows[0]["id"], "still found", {"customer": "cust-40"})
    lines, _ = await queries.page_logs(LogFilter(text="cust-40"))
    assert len(lines) == 1


def test_logs_page_finds_fields_but_not_masked_ones(db_url: str) -> None:
    """Over HTTP: the Logs page searches structured fields and, like its display, not
    the fields it masks (redact_keys)."""
    built = build(db_url, poll_interval=2.0)
    with TestClient(built.app) as client:
        manager = built.manager
        task_id = call(client, manager.enqueue, admin_ok, 5)
        wait_status(client, manager, task_id)
        call(client, add_log, manager, task_id, "charged", {"customer": "cust-40"})
        call(client, add_log, manager, task_id, "signed in", {"session_id": "sess-" + "9" * 6})
        page = client.get("/tasks/dashboard/logs", params={"q": "cust-40"})
        assert page.status_code == 200 and "charged" in page.text
        page = client.get("/tasks/dashboard/logs", params={"q": "sess-999"})
        assert page.status_code == 200 and "signed in" not in page.text
        page = client.get("/tasks/dashboard/logs", params={"q": "step"})  # admin_ok's field
        assert "working" in page.text


# -- arguments ----------------------------------------------------------------------------

ARGUMENT = "invoice-7781"


def argument_rows() -> dict[str, dict[str, Any]]:
    """Tasks whose stored arguments hold ARGUMENT (or not), in each stored shape."""
    shapes = {
        "plain": '{"args":["invoice-7781"],"kwargs":{"city":"Z\\u00fcrich"}}',
        "memory": 'memory:{"args":["<function <lambda>> for invoice-7781"],"kwargs":{}}',
        # The stored text of an encrypted task is never searched, whatever it holds.
        "encrypted": "gAAAAABinvoice-7781",
        "masked": '{"args":[],"kwargs":{"api_token":"invoice-7781-live"}}',
        # A masked key inside a dict the codec stores as pairs (it has an int key).
        "masked_pairs": (
            '{"args":[{"__tf__":"dict","v":[[1,"x"],["db-Password","invoice-7781"]]}],"kwargs":{}}'
        ),
        "other": '{"args":["invoice-9"],"kwargs":{}}',
    }
    rows = {}
    for n, (name, payload) in enumerate(shapes.items()):
        row = task_row(created_at=BASE + timedelta(seconds=n))
        row.update(payload=payload, encrypted=name == "encrypted")
        rows[name] = row
    return rows


@pytest.mark.parametrize("name", list(SHAPES))
async def test_task_search_finds_shown_arguments_only(
    manager_factory: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Arguments are searched when the store is asked to (the dashboard shows them),
    never those of an encrypted task nor any holding a masked key."""
    manager, hidden = await started(manager_factory)
    rows = argument_rows()
    await insert_rows(manager, list(rows.values()))
    shape(monkeypatch, name)
    shown = DashboardStore(manager.db, search_arguments=True, hidden_keys=Redactor().keys)
    searches = {
        ARGUMENT: {"plain", "memory"},
        "INVOICE-77": {"plain", "memory"},  # case
        "Zürich": {"plain"},  # stored as a JSON escape
        "live": set(),  # only in a masked value
        "nowhere at all": set(),
    }
    for text, want in searches.items():
        ids = {rows[name]["id"] for name in want}
        filters = TaskFilter(search=text)
        assert set(await every_page(shown, filters)) == ids, text
        assert await shown.count_tasks(filters, cap=1000) == len(ids), text
        assert await every_page(hidden, filters) == [], text
        assert await hidden.count_tasks(filters, cap=1000) == 0, text
    failed = TaskFilter(search=ARGUMENT, statuses=("failed",))
    assert await every_page(shown, failed) == []


async def test_arguments_of_tasks_stored_after_a_search_are_found(manager_factory: Any) -> None:
    """SQLite fills the arguments' index at search time: tasks stored after a search,
    and one given the rowid of a deleted task, are found by the next one."""
    manager, _ = await started(manager_factory)
    queries = DashboardStore(manager.db, search_arguments=True)

    async def stored(text: str) -> str:
        row = task_row()
        row["payload"] = json.dumps({"args": [text], "kwargs": {}})
        await insert_rows(manager, [row])
        return str(row["id"])

    async def found(text: str) -> set[str]:
        return set(await every_page(queries, TaskFilter(search=text)))

    first = await stored("walrus-one")
    assert await found("walrus") == {first}
    second = await stored("walrus-two")
    assert await found("walrus") == {first, second}
    assert await manager.db.delete_task(second)  # the newest: its rowid may come back
    third = await stored("walrus-three")
    assert await found("walrus") == {first, third}
    assert await found("walrus-two") == set()


async def test_tasks_stored_with_an_earlier_creation_time_are_found(
    manager_factory: Any,
) -> None:
    """The index of arguments is filled at search time, on PostgreSQL by creation time:
    a task stored after a search with a creation time before the newest one indexed
    (stamped by another process before its insert committed) is found by the next
    search, as are the tasks stored later, and a deleted task is not."""
    manager, _ = await started(manager_factory)
    queries = DashboardStore(manager.db, search_arguments=True)
    now = datetime.now(UTC)

    async def stored(text: str, created_at: datetime) -> str:
        row = task_row(created_at=created_at)
        row["payload"] = json.dumps({"args": [text], "kwargs": {}})
        await insert_rows(manager, [row])
        return str(row["id"])

    async def found(text: str) -> set[str]:
        return set(await every_page(queries, TaskFilter(search=text)))

    newest = await stored("narwhal-new", now)
    assert await found("narwhal") == {newest}
    late = await stored("narwhal-late", now - timedelta(seconds=5))
    later = await stored("narwhal-later", now + timedelta(seconds=1))
    assert await found("narwhal") == {newest, late, later}
    assert await queries.count_tasks(TaskFilter(search="narwhal-la"), cap=1000) == 2
    assert await manager.db.delete_task(late)
    assert await found("narwhal") == {newest, later}


def test_runs_page_searches_arguments_it_shows(db_url: str) -> None:
    """Over HTTP: the Runs page finds a task by an argument with display_func_args, not
    without it, and never by the value of a masked key (admin_ok's ``password``)."""
    for display in (True, False):
        built = build(db_url, display_func_args=display)
        with TestClient(built.app) as client:
            manager = built.manager
            task_id = call(client, manager.enqueue, admin_ok, 7, password="pw-okapi-31")
            report = call(client, manager.enqueue, admin_report, "team-quokka")
            for each in (task_id, report):
                wait_status(client, manager, each)
            page = client.get("/tasks/dashboard/runs", params={"q": "team-quokka"})
            assert page.status_code == 200
            assert (report in page.text) is display
            page = client.get("/tasks/dashboard/runs", params={"q": "okapi"})
            assert page.status_code == 200 and task_id not in page.text
