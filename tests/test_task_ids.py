"""Task ids on both databases: new ids are UUID strings (fastapi-taskflow's shape), and
an id given as a UUID string or as 32 hex digits, in any case, finds its task whichever
shape it was stored in (rows from earlier releases keep 32 hex digits) -- through the
Python API, the JSON API and the dashboard. Also migration 0004 on existing rows."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from taskflow._store import migrate
from taskflow._store.ids import dashed, hex_prefix, task_id_forms
from taskflow._store.schema import task_aliases, task_attempts, task_logs, tasks
from tests.admin_support import (
    admin_ok,
    admin_parked,
    build,
    call,
    csrf,
    insert_log,
    insert_rows,
    task_row,
    wait_status,
)
from tests.conftest import wait_for_status
from tests.test_migrations import PG_ADMIN_URL, admin, on_connection

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def shapes(task_id: str) -> list[str]:
    """Every way a user may write ``task_id``: dashed and hex, lower and upper case."""
    hex_digits = uuid.UUID(task_id).hex
    forms = [str(uuid.UUID(hex_digits)), hex_digits]
    return forms + [form.upper() for form in forms]


def old_row(**fields: Any) -> dict[str, Any]:
    """A task row with a 32-hex-digit id, as earlier releases stored it."""
    row = task_row(**fields)
    assert re.fullmatch(r"[0-9a-f]{32}", row["id"])
    return row


# -- the id helpers -------------------------------------------------------------------


def test_id_forms_and_prefixes() -> None:
    task_id = str(uuid.uuid4())
    hex_digits = task_id.replace("-", "")
    for form in shapes(task_id):
        assert task_id_forms(form) == (task_id, hex_digits)
    for other in ("nope", "f" * 33, hex_digits[:31], task_id[:35] + "-", " " + hex_digits):
        assert task_id_forms(other) == (other,)
    # A dash out of place is not a UUID string.
    assert task_id_forms(hex_digits[:7] + "-" + hex_digits[7:]) == (
        hex_digits[:7] + "-" + hex_digits[7:],
    )
    assert dashed(hex_digits) == task_id
    assert dashed(hex_digits[:13]) == task_id[:15]
    assert hex_prefix(task_id[:14]) == hex_digits[:12]
    assert hex_prefix(task_id[:9]) == hex_digits[:8]
    assert hex_prefix(hex_digits[:10]) == hex_digits[:10]
    assert hex_prefix("0123-4567") is None
    assert hex_prefix("xyz") is None


# -- Python API -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_new_ids_are_canonical_uuid_strings(manager_factory) -> None:
    manager = manager_factory()
    manager.task()(admin_ok)
    await manager.startup()
    task_id = await manager.enqueue(admin_ok, 1)
    assert CANONICAL.fullmatch(task_id), task_id
    assert str(uuid.UUID(task_id)) == task_id
    record = await wait_for_status(manager, task_id)
    assert record.task_id == task_id
    assert record.status == "success"
    retried = await manager.retry(task_id)
    assert retried is not None and CANONICAL.fullmatch(retried)


@pytest.mark.anyio
async def test_python_api_accepts_either_shape_of_a_new_id(manager_factory) -> None:
    manager = manager_factory()
    manager.task()(admin_ok)
    manager.task(queue="parked")(admin_parked)
    await manager.startup()
    done = await manager.enqueue(admin_ok, 2)
    await wait_for_status(manager, done)
    for form in shapes(done):
        record = await manager.get_task(form)
        assert record is not None and record.task_id == done, form
        assert record.logs and record.history, form
    # The store-level reader used by fastapi-taskflow's TaskStore-style access too.
    assert (await manager.db.get_task(done.upper())).id == done

    retried = await manager.retry(uuid.UUID(done).hex)
    assert retried is not None and retried != done
    assert (await manager.get_task(retried)).source == "retry"

    parked = await manager.enqueue(admin_parked)  # its queue is not served: stays pending
    assert await manager.cancel(uuid.UUID(parked).hex.upper()) is True
    assert (await manager.get_task(parked)).status == "cancelled"

    # A deferred task waits in this process's memory, keyed by its stored id.
    deferred = await manager.enqueue(admin_ok, 3, defer=3600)
    assert await manager.cancel(uuid.UUID(deferred).hex) is True
    assert (await manager.get_task(deferred)).status == "cancelled"

    assert await manager.delete(str(uuid.UUID(parked)).upper()) is True
    for form in shapes(parked):
        assert await manager.get_task(form) is None


@pytest.mark.anyio
async def test_python_api_finds_an_old_32_hex_row_by_either_shape(manager_factory) -> None:
    manager = manager_factory()
    manager.task()(admin_ok)
    manager.task(queue="parked")(admin_parked)
    await manager.startup()
    finished, waiting = old_row(), old_row(func_name="admin_parked", status="pending")
    await insert_rows(manager, [finished, waiting])
    await insert_log(manager, finished["id"], "an old line")
    for form in shapes(finished["id"]):
        record = await manager.get_task(form)
        assert record is not None and record.task_id == finished["id"], form
        assert [line.message for line in record.logs] == ["an old line"]

    retried = await manager.retry(str(uuid.UUID(finished["id"])))
    assert retried is not None and CANONICAL.fullmatch(retried)

    assert await manager.cancel(str(uuid.UUID(waiting["id"])).upper()) is True
    assert (await manager.get_task(waiting["id"])).status == "cancelled"
    assert await manager.delete(str(uuid.UUID(waiting["id"]))) is True
    assert await manager.get_task(waiting["id"]) is None
    assert await manager.get_task("nope") is None
    assert await manager.get_task(uuid.uuid4().hex) is None


# -- JSON API and dashboard -----------------------------------------------------------


@pytest.fixture
def env(db_url: str) -> Iterator[Any]:
    built = build(db_url)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def test_json_api_finds_new_and_old_ids_by_either_shape(env) -> None:
    client = env.client
    headers = csrf(client)
    new_id = call(client, env.manager.enqueue, admin_ok, 4)
    wait_status(client, env.manager, new_id)
    old = old_row(status="failed", func_name="admin_ok", error="old boom")
    call(client, insert_rows, env.manager, [old])
    for task_id in (new_id, old["id"]):
        for form in shapes(task_id):
            response = client.get(f"/tasks/{form}")
            assert response.status_code == 200, (form, response.text)
            assert response.json()["task_id"] == task_id

    retried = client.post(f"/tasks/{uuid.UUID(old['id'])}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    assert CANONICAL.fullmatch(retried.json()["task_id"])

    parked = call(client, env.manager.enqueue, admin_parked)
    cancelled = client.post(f"/tasks/{uuid.UUID(parked).hex.upper()}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["task"]["status"] == "cancelled"
    deleted = client.delete(f"/tasks/{str(uuid.UUID(old['id'])).upper()}", headers=headers)
    assert deleted.status_code == 200, deleted.text
    assert client.get(f"/tasks/{old['id']}").status_code == 404
    # Audit entries name the task by its stored id, so its page finds them.
    audit = [(entry["action"], entry["target"]) for entry in client.get("/tasks/audit").json()]
    assert audit[:3] == [("delete", old["id"]), ("cancel", parked), ("retry", old["id"])]

    # Malformed ids still get a clean 404.
    for bad in ("nope", "g" * 32, str(uuid.uuid4())[:35], uuid.uuid4().hex):
        assert client.get(f"/tasks/{bad}").status_code == 404, bad
        assert client.post(f"/tasks/{bad}/cancel", headers=headers).status_code == 404, bad


def test_bulk_retry_accepts_either_shape(env) -> None:
    client = env.client
    old = old_row(status="failed", error="boom")
    call(client, insert_rows, env.manager, [old])
    given = str(uuid.UUID(old["id"])).upper()
    response = client.post("/tasks/bulk-retry", json={"task_ids": [given]}, headers=csrf(client))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dispatched"] == 1 and body["skipped"] == 0
    assert body["results"][0]["original_task_id"] == old["id"]
    assert CANONICAL.fullmatch(body["results"][0]["new_task_id"])


def test_search_by_id_or_its_start_in_either_shape(env) -> None:
    client = env.client
    new_id = call(client, env.manager.enqueue, admin_ok, 5)
    wait_status(client, env.manager, new_id)
    old = old_row()
    call(client, insert_rows, env.manager, [old])

    def found(text: str) -> set[str]:
        response = client.get("/tasks", params={"q": text, "limit": 500})
        assert response.status_code == 200, response.text
        return {item["task_id"] for item in response.json()}

    for task_id in (new_id, old["id"]):
        hex_digits = uuid.UUID(task_id).hex
        dashed_id = str(uuid.UUID(task_id))
        for text in (*shapes(task_id), hex_digits[:12], dashed_id[:13], dashed_id[:23].upper()):
            if re.search(r"[a-f]", text.lower().replace("-", "")) and re.search(r"\d", text):
                assert task_id in found(text), text


def test_dashboard_pages_and_actions_accept_either_shape(env) -> None:
    client = env.client
    headers = csrf(client)
    new_id = call(client, env.manager.enqueue, admin_ok, 6)
    wait_status(client, env.manager, new_id)
    old = old_row(status="success")
    call(client, insert_rows, env.manager, [old])
    call(client, insert_log, env.manager, old["id"], "kept from before")
    for task_id in (new_id, old["id"]):
        for form in shapes(task_id):
            page = client.get(f"/tasks/dashboard/runs/{form}")
            assert page.status_code == 200, (form, page.status_code)
            assert task_id in page.text
            assert client.get(f"/tasks/dashboard/_/runs/{form}").status_code == 200
    for form in shapes(old["id"]):
        logs = client.get(f"/tasks/dashboard/_/runs/{form}/logs")
        assert logs.status_code == 200 and "kept from before" in logs.text, form
        logs_page = client.get("/tasks/dashboard/logs", params={"task": form})
        assert logs_page.status_code == 200 and "kept from before" in logs_page.text, form

    other = str(uuid.UUID(old["id"])).upper()
    response = client.post(
        f"/tasks/dashboard/runs/{other}/delete", headers=headers, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert client.get(f"/tasks/{old['id']}").status_code == 404
    failed = old_row(status="failed", error="boom")
    call(client, insert_rows, env.manager, [failed])
    response = client.post(
        f"/tasks/dashboard/runs/{str(uuid.UUID(failed['id'])).upper()}/retry",
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303
    retried = response.headers["location"].rsplit("/", 1)[-1]  # the new task's page
    assert CANONICAL.fullmatch(retried), retried
    assert call(client, env.manager.get_task, retried).source == "retry"


# -- migration 0004 on existing rows --------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of each dialect, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}"
        return
    name = f"taskflow_ids_{secrets.token_hex(6)}"
    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        pytest.skip(f"PostgreSQL is unreachable: {exc}")
    yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def insert_task_with_children(conn: sa.Connection, task_id: str) -> None:
    """A task with a log line, an attempt and an alias."""
    now = datetime.now(UTC)
    row = {**task_row(), "id": task_id}
    conn.execute(tasks.insert().values(row))
    conn.execute(task_logs.insert().values(task_id=task_id, at=now, level="info", message="m"))
    conn.execute(
        task_attempts.insert().values(task_id=task_id, attempt=1, started_at=now, status="success")
    )
    alias = str(uuid.uuid4()) if len(task_id) == 36 else uuid.uuid4().hex  # same shape
    conn.execute(task_aliases.insert().values(alias=alias, task_id=task_id))


def stored(conn: sa.Connection) -> list[tuple[str, int, int, int]]:
    """Each task id with its number of log lines, attempts and aliases."""
    counts = []
    for task_id in conn.scalars(sa.select(tasks.c.id).order_by(tasks.c.id)):
        counts.append(
            (
                task_id,
                *(
                    conn.scalar(
                        sa.select(sa.func.count())
                        .select_from(table)
                        .where(table.c.task_id == task_id)
                    )
                    for table in (task_logs, task_attempts, task_aliases)
                ),
            )
        )
    return counts


def test_migration_keeps_old_rows_and_downgrade_rewrites_new_ids(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, "0003_dashboard_indexes")
    old_id = uuid.uuid4().hex
    on_connection(fresh_url, lambda conn: insert_task_with_children(conn, old_id), commit=True)
    migrate.upgrade(fresh_url)
    assert on_connection(fresh_url, stored) == [(old_id, 1, 1, 1)]

    new_id = str(uuid.uuid4())
    on_connection(fresh_url, lambda conn: insert_task_with_children(conn, new_id), commit=True)
    migrate.downgrade(fresh_url, "0003_dashboard_indexes")
    after = dict((row[0], row[1:]) for row in on_connection(fresh_url, stored))
    # PostgreSQL's columns are 32 characters again, so the new id lost its dashes;
    # SQLite's were never narrowed and keep it as it was.
    expected_new = new_id.replace("-", "") if "postgresql" in fresh_url else new_id
    assert after == {old_id: (1, 1, 1), expected_new: (1, 1, 1)}
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.head()
