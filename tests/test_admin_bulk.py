"""Failures get resolved, and bulk actions on Runs and Failures, over HTTP on SQLite and
PostgreSQL: a retry links both ways and resolves the original, a discard acknowledges a
failure, and cancel, delete, retry and discard act on a selection or on everything
matching a filter (after showing the count), with one audit entry each."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from taskflow.admin import _service
from tests.admin_support import (
    admin_fail,
    admin_slow,
    build,
    call,
    csrf,
    insert_rows,
    login,
    task_row,
    wait_status,
)

USERS = [("admin", "pw"), ("viewer", "look", "read-only")]


@pytest.fixture
def env(db_url):
    built = build(db_url, poll_interval=2.0)
    with TestClient(built.app) as client:
        built.client = client
        yield built


def total(client: TestClient, page: str, **params: Any) -> str:
    """The count a run list shows above its table."""
    text = client.get(f"/tasks/dashboard/{page}", params=params).text
    match = re.search(r'class="total">([\d,+]+) task', text)
    assert match, text[:2000]
    return match.group(1)


def said(client: TestClient, response: Any) -> tuple[str, str | None]:
    """The flash message of the page an action redirected to, as text, and its link."""
    page = client.get(response.headers["location"]).text
    match = re.search(r'<div class="flash (ok|error)" role="status">(.*?)</div>', page, re.S)
    assert match, page[:2000]
    link = re.search(r'<a href="([^"]+)"', match.group(2))
    text = html.unescape(re.sub(r"<[^>]+>", "", match.group(2)))
    return text, html.unescape(link.group(1)) if link else None


def flash(client: TestClient, response: Any) -> str:
    return said(client, response)[0]


def bulk(client: TestClient, action: str, page: str = "runs", **fields: Any) -> Any:
    data = {"csrf_token": csrf(client)["X-CSRF-Token"], "action": action, "page": page, **fields}
    return client.post("/tasks/dashboard/bulk", data=data, follow_redirects=False)


def status_of(client: TestClient, task_id: str) -> str | None:
    answer = client.get(f"/tasks/{task_id}")
    return answer.json()["status"] if answer.status_code == 200 else None


def audit_entries(client: TestClient, action: str) -> list[dict[str, Any]]:
    return [entry for entry in client.get("/tasks/audit").json() if entry["action"] == action]


def failed_rows(count: int, **options: Any) -> list[dict[str, Any]]:
    """Failed tasks of ``admin_parked``: a retry copy of one succeeds (or waits)."""
    return [
        task_row(status="failed", func_name="admin_parked", error="boom", **options)
        for _ in range(count)
    ]


# -- failures get resolved -----------------------------------------------------------------


def test_a_retry_resolves_the_original_and_links_both_ways(env):
    client = env.client
    failed = call(client, env.manager.enqueue, admin_fail, 1)
    wait_status(client, env.manager, failed, "failed")
    assert total(client, "failures", func="admin_fail") == "1"
    answer = client.post(f"/tasks/{failed}/retry", headers=csrf(client))
    new_id = answer.json()["task_id"]

    original = client.get(f"/tasks/{failed}").json()
    assert original["resolution"] == "retried" and original["resolved_at"]
    assert original["retried_as"] == [new_id]
    assert client.get(f"/tasks/{new_id}").json()["retry_of"] == failed
    original_page = client.get(f"/tasks/dashboard/runs/{failed}").text
    assert "retried as" in original_page and f"/tasks/dashboard/runs/{new_id}" in original_page
    copy_page = client.get(f"/tasks/dashboard/runs/{new_id}").text
    assert "retry of" in copy_page and f"/tasks/dashboard/runs/{failed}" in copy_page

    # The original leaves Failures (the copy, once it fails, is a failure of its own).
    wait_status(client, env.manager, new_id, "failed")
    listed = client.get("/tasks/dashboard/failures", params={"func": "admin_fail"}).text
    assert new_id in listed and failed not in listed
    assert total(client, "failures", func="admin_fail") == "1"
    shown = client.get("/tasks/dashboard/failures", params={"func": "admin_fail", "resolved": 1})
    assert failed in shown.text and 'class="pill resolved"' in shown.text
    assert total(client, "runs", func="admin_fail") == "2"

    # The Python API goes the same way.
    again = call(client, env.manager.retry, new_id)
    assert client.get(f"/tasks/{new_id}").json()["resolution"] == "retried"
    assert client.get(f"/tasks/{again}").json()["retry_of"] == new_id


def test_a_dashboard_retry_links_the_new_task(env):
    client = env.client
    (row,) = failed_rows(1)
    call(client, insert_rows, env.manager, [row])
    retried = client.post(
        f"/tasks/dashboard/runs/{row['id']}/retry",
        data={"csrf_token": csrf(client)["X-CSRF-Token"]},
        follow_redirects=False,
    )
    new_id = urlsplit(retried.headers["location"]).path.rsplit("/", 1)[-1]
    assert client.get(f"/tasks/{row['id']}").json()["retried_as"] == [new_id]
    assert total(client, "failures") == "0"


def test_a_failure_is_discarded_from_the_page_or_the_api(env):
    client = env.client
    rows = failed_rows(2)
    done = task_row(status="success", func_name="admin_parked")
    call(client, insert_rows, env.manager, [*rows, done])
    assert total(client, "failures") == "2"
    page = client.get(f"/tasks/dashboard/runs/{rows[0]['id']}").text
    assert f"/runs/{rows[0]['id']}/discard" in page

    discarded = client.post(
        f"/tasks/dashboard/runs/{rows[0]['id']}/discard",
        data={"csrf_token": csrf(client)["X-CSRF-Token"]},
        follow_redirects=False,
    )
    assert "Discarded" in flash(client, discarded)
    assert total(client, "failures") == "1"
    page = client.get(f"/tasks/dashboard/runs/{rows[0]['id']}").text
    assert 'id="discarded"' in page and "/discard" not in page

    failures = client.get("/tasks/dashboard/failures").text
    assert f'formaction="/tasks/dashboard/runs/{rows[1]["id"]}/discard"' in failures
    answer = client.post(f"/tasks/{rows[1]['id']}/discard", headers=csrf(client))
    assert answer.status_code == 200 and answer.json()["resolution"] == "discarded"
    assert total(client, "failures") == "0"
    assert total(client, "failures", resolved="1") == "2"
    again = client.post(f"/tasks/{rows[1]['id']}/discard", headers=csrf(client))
    assert again.status_code == 400 and "already" in again.json()["detail"]
    success = client.post(f"/tasks/{done['id']}/discard", headers=csrf(client))
    assert success.status_code == 400
    assert client.post("/tasks/nope/discard", headers=csrf(client)).status_code == 404
    targets = {entry["target"] for entry in audit_entries(client, "discard")}
    assert targets == {rows[0]["id"], rows[1]["id"]}


def test_a_failures_row_discards_and_goes_back_to_failures(env):
    client = env.client
    rows = failed_rows(2)
    call(client, insert_rows, env.manager, rows)
    back = "/tasks/dashboard/failures?func=admin_parked"
    discarded = client.post(
        f"/tasks/dashboard/runs/{rows[0]['id']}/discard",
        data={"csrf_token": csrf(client)["X-CSRF-Token"], "next": back, "task_id": rows[1]["id"]},
        follow_redirects=False,
    )
    assert discarded.headers["location"] == back
    assert total(client, "failures", func="admin_parked") == "1"
    assert client.get(f"/tasks/{rows[1]['id']}").json()["resolution"] is None


def test_replaying_everything_matching_leaves_resolved_failures_alone(env):
    client = env.client
    rows = failed_rows(4)
    call(client, insert_rows, env.manager, rows)
    client.post(f"/tasks/{rows[0]['id']}/discard", headers=csrf(client))
    client.post(f"/tasks/{rows[1]['id']}/retry", headers=csrf(client))
    replayed = client.post(
        "/tasks/dashboard/failures/replay",
        data={"csrf_token": csrf(client)["X-CSRF-Token"], "scope": "all", "func": "admin_parked"},
        follow_redirects=False,
    )
    assert "Replayed 2 task(s); see the new tasks." in flash(client, replayed)
    entry = audit_entries(client, "replay")[0]
    assert sorted(entry["detail"]["task_ids"]) == sorted([rows[2]["id"], rows[3]["id"]])
    assert total(client, "failures") == "0"
    # The API's "retry-failed" too: nothing unresolved is left to replay.
    assert (
        client.post("/tasks/retry-failed?since=all", headers=csrf(client)).json()["dispatched"] == 0
    )


# -- bulk actions on a selection ---------------------------------------------------------------


def test_bulk_actions_on_selected_rows(env):
    client = env.client
    pending = [task_row(status="pending", func_name="admin_parked") for _ in range(2)]
    success = task_row(status="success", func_name="admin_parked")
    failed = failed_rows(3)
    call(client, insert_rows, env.manager, [*pending, success, *failed])
    running = call(client, env.manager.enqueue, admin_slow, 30.0)
    wait_status(client, env.manager, running, "running")
    runs = client.get("/tasks/dashboard/runs").text
    assert 'id="bulk-cancel-selected"' in runs and 'name="task_id"' in runs

    ids = [pending[0]["id"], pending[1]["id"], running, success["id"]]
    cancelled = bulk(client, "cancel", scope="selected", task_id=ids)
    assert flash(client, cancelled) == ("Cancelled 3 tasks; skipped 1 (not pending or running).")
    assert status_of(client, pending[0]["id"]) == "cancelled"
    wait_status(client, env.manager, running, "cancelled")  # stopped where it ran

    retried = bulk(client, "retry", scope="selected", task_id=[failed[0]["id"], "nope"])
    text, link = said(client, retried)
    new_id = client.get(f"/tasks/{failed[0]['id']}").json()["retried_as"][0]
    assert text == f"Retried 1 task as {new_id[:8]}; skipped 1 (not failed, interrupted, " + (
        "cancelled or rejected)."
    )
    assert link == f"/tasks/dashboard/runs/{new_id}"

    discarded = bulk(
        client, "discard", page="failures", scope="selected", task_id=[f["id"] for f in failed]
    )
    assert flash(client, discarded) == (
        "Discarded 2 tasks; skipped 1 (not unresolved failed or interrupted)."
    )
    assert total(client, "failures") == "0"

    deleted = bulk(client, "delete", scope="selected", task_id=[success["id"], pending[0]["id"]])
    assert flash(client, deleted) == "Deleted 2 tasks."
    assert status_of(client, success["id"]) is None

    entry = audit_entries(client, "bulk_cancel")[0]
    assert entry["target"] == "selection"
    assert entry["detail"]["cancelled"] == 3 and entry["detail"]["skipped"] == 1
    assert set(entry["detail"]["task_ids"]) == set(ids[:3])
    retry_entry = audit_entries(client, "bulk_retry")[-1]
    assert retry_entry["detail"]["new_task_ids"] == [new_id]
    assert audit_entries(client, "bulk_delete")[0]["detail"]["deleted"] == 2
    audit_page = client.get("/tasks/dashboard/audit").text
    assert "cancel (bulk)" in audit_page and "discard (bulk)" in audit_page

    nothing = bulk(client, "cancel", scope="selected")
    assert "Select the tasks to cancel first." in flash(client, nothing)
    unknown = bulk(client, "cancel", page="failures", scope="selected", task_id=[new_id])
    assert "No bulk action" in flash(client, unknown)


# -- bulk actions on everything matching -------------------------------------------------------


def test_bulk_actions_on_everything_matching_show_the_count_first(env, monkeypatch):
    monkeypatch.setattr(_service, "REPLAY_BATCH", 2)  # several keyset pages
    client = env.client
    failed = failed_rows(5)
    done = [task_row(status="success", func_name="admin_parked") for _ in range(2)]
    pending = [task_row(status="pending", func_name="admin_parked") for _ in range(3)]
    other = failed_rows(1)
    other[0]["func_name"] = "admin_ok"
    call(client, insert_rows, env.manager, [*failed, *done, *pending, *other])

    unconfirmed = bulk(client, "discard", page="failures", scope="all", func="admin_parked")
    assert unconfirmed.status_code == 303
    confirm_url = unconfirmed.headers["location"]
    assert confirm_url.startswith("/tasks/dashboard/bulk?")
    confirm = client.get(confirm_url).text
    assert "This will discard 5 tasks." in confirm
    assert total(client, "failures") == "6"
    discarded = bulk(
        client, "discard", page="failures", scope="all", confirmed="1", func="admin_parked"
    )
    assert flash(client, discarded) == "Discarded 5 tasks."
    assert total(client, "failures") == "1"  # the other function's failure
    assert total(client, "failures", resolved="1") == "6"

    confirm = client.get(
        "/tasks/dashboard/bulk", params={"page": "runs", "action": "cancel", "func": "admin_parked"}
    ).text
    assert "This will cancel 3 tasks." in confirm and "10 tasks match" in confirm
    cancelled = bulk(client, "cancel", scope="all", confirmed="1", func="admin_parked")
    assert flash(client, cancelled) == "Cancelled 3 tasks."
    assert all(status_of(client, row["id"]) == "cancelled" for row in pending)

    confirm = client.get(
        "/tasks/dashboard/bulk",
        params={"page": "runs", "action": "delete", "func": "admin_parked", "status": "cancelled"},
    ).text
    assert "This will delete 3 tasks." in confirm
    deleted = bulk(
        client, "delete", scope="all", confirmed="1", func="admin_parked", status="cancelled"
    )
    assert flash(client, deleted) == "Deleted 3 tasks."
    assert total(client, "runs", func="admin_parked") == "7"

    entry = audit_entries(client, "bulk_discard")[0]
    assert entry["target"] == "filter" and entry["detail"]["filter"] == "func=admin_parked"
    assert entry["detail"]["discarded"] == 5
    assert sorted(entry["detail"]["task_ids"]) == sorted(row["id"] for row in failed)
    assert audit_entries(client, "bulk_delete")[0]["detail"]["runs_filter"] == (
        "status=cancelled&func=admin_parked"
    )
    assert len(audit_entries(client, "bulk_cancel")) == 1


def test_retrying_everything_matching_links_the_new_tasks(env):
    client = env.client
    rows = failed_rows(3)
    call(client, insert_rows, env.manager, rows)
    client.post(f"/tasks/{rows[0]['id']}/discard", headers=csrf(client))
    confirm = client.get(
        "/tasks/dashboard/bulk", params={"page": "runs", "action": "retry", "status": "failed"}
    ).text
    assert "This will retry 2 tasks." in confirm
    retried = bulk(client, "retry", scope="all", confirmed="1", status="failed")
    text, new_tasks = said(client, retried)
    assert text == "Retried 2 tasks; see the new tasks."
    assert new_tasks is not None and "source=retry" in new_tasks
    assert total(client, "runs", **dict(_params(new_tasks))) == "2"
    assert status_of(client, rows[0]["id"]) == "failed"
    assert client.get(f"/tasks/{rows[0]['id']}").json()["retried_as"] == []


def _params(url: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(urlsplit(url).query)


def test_read_only_users_see_no_bulk_actions_and_cannot_use_them(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        rows = failed_rows(1)
        call(client, insert_rows, built.manager, rows)
        assert login(client, "viewer", "look").status_code == 303
        runs = client.get("/tasks/dashboard/runs").text
        assert "bulk-bar" not in runs and 'name="task_id"' not in runs
        assert "/discard" not in client.get(f"/tasks/dashboard/runs/{rows[0]['id']}").text
        confirm = client.get("/tasks/dashboard/bulk", params={"action": "discard"})
        assert confirm.status_code == 403
        refused = bulk(client, "discard", scope="selected", task_id=[rows[0]["id"]])
        assert refused.status_code == 403
        headers = csrf(client)
        assert client.post(f"/tasks/{rows[0]['id']}/discard", headers=headers).status_code == 403
        assert client.get(f"/tasks/{rows[0]['id']}").json()["resolution"] is None


def test_bulk_forms_need_the_csrf_token(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        rows = failed_rows(1)
        call(client, insert_rows, built.manager, rows)
        assert login(client).status_code == 303
        data = {"action": "discard", "page": "runs", "scope": "selected", "task_id": rows[0]["id"]}
        refused = client.post("/tasks/dashboard/bulk", data=data, follow_redirects=False)
        assert refused.status_code == 403
        assert client.get(f"/tasks/{rows[0]['id']}").json()["resolution"] is None
