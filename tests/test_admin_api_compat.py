"""TaskAdmin's JSON API as scripts and browsers use it, on SQLite and PostgreSQL.

* ``GET /tasks/metrics`` counts exactly, past the dashboard's ``count_cap``.
* Cross-site protection: a browser's cross-site request is refused (``Sec-Fetch-Site``,
  or an ``Origin`` that is not the request's host); a same-origin one needs no token; a
  request with no browser marks (curl, scripts) needs the CSRF token only when a cookie
  authenticates it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi import Cookie, Depends, Header, HTTPException
from fastapi.testclient import TestClient

from taskflow._store.schema import tasks
from tests.admin_support import build, call, csrf, login

USERS = [("admin", "pw")]
PAUSE = "/tasks/schedules/hourly_report/pause"
RESUME = "/tasks/schedules/hourly_report/resume"
SEEDED = 11_111  # past the default count_cap of 10,000
FAILED_EVERY = 11  # every 11th seeded task failed: 1,010 of them


async def seed_tasks(manager, count: int) -> None:
    """Insert ``count`` final tasks in one ``INSERT … SELECT`` over a recursive
    counter: every ``FAILED_EVERY``-th failed, the others succeeded."""
    counter = sa.select(sa.literal(1).label("i")).cte("counter", recursive=True)
    counter = counter.union_all(sa.select(counter.c.i + 1).where(counter.c.i < count))
    now = datetime.now(UTC)
    status = sa.case((counter.c.i % FAILED_EVERY == 0, "failed"), else_="success")
    values = {
        "id": sa.literal("seed") + sa.cast(counter.c.i, sa.String),
        "func_name": sa.literal("admin_ok"),
        "func_path": sa.literal("tests.admin_support:admin_ok"),
        "status": status,
        "payload": sa.literal('{"args": [], "kwargs": {}}'),
        "encrypted": sa.false(),
        "attempts": sa.literal(1),
        "max_retries": sa.literal(0),
        "priority": sa.literal(0),
        "queue": sa.literal("default"),
        "tags": sa.literal({}, sa.JSON),
        "source": sa.literal("manual"),
        "requeue_on_interrupt": sa.false(),
        "cancel_requested": sa.false(),
        "created_at": sa.literal(now, tasks.c.created_at.type),
        "started_at": sa.literal(now, tasks.c.started_at.type),
        "finished_at": sa.literal(now, tasks.c.finished_at.type),
        "next_attempt_at": sa.literal(now, tasks.c.next_attempt_at.type),
    }
    select = sa.select(*(value.label(name) for name, value in values.items()))
    async with manager.db.write() as conn:
        await conn.execute(tasks.insert().from_select(list(values), select))


def test_metrics_count_exactly_past_the_old_cap(db_url):
    built = build(db_url)
    with TestClient(built.app) as client:
        call(client, seed_tasks, built.manager, SEEDED)
        failed = SEEDED // FAILED_EVERY
        for cap in (10_000, 10):  # the dashboard's list cap does not limit the metrics
            built.admin.count_cap = cap
            metrics = client.get("/tasks/metrics").json()
            assert metrics["total"] == SEEDED, metrics
            assert metrics["success"] == SEEDED - failed
            assert metrics["failed"] == failed
            assert metrics["pending"] == metrics["running"] == 0
            assert metrics["capped"] is False
            assert metrics["success_rate"] == pytest.approx((SEEDED - failed) / SEEDED)


def paused(client: TestClient, headers: dict[str, str] | None = None) -> bool:
    schedules = client.get("/tasks/schedules", headers=headers).json()
    return not {item["name"]: item for item in schedules}["hourly_report"]["enabled"]


def test_script_without_browser_marks_acts_without_a_token_when_no_auth(db_url):
    built = build(db_url)
    with TestClient(built.app) as client:
        assert client.get("/tasks/metrics").status_code == 200  # sets the anonymous cookie
        response = client.post(PAUSE)
        assert response.status_code == 200, response.text
        assert paused(client)
        client.cookies.clear()  # curl: no cookie at all
        assert client.post(RESUME).status_code == 200
        assert not paused(client)
        actions = [entry["action"] for entry in client.get("/tasks/audit").json()]
        assert actions == ["resume", "pause"]


@pytest.mark.parametrize("auth", [None, USERS])
def test_browser_cross_site_requests_are_refused_even_with_the_token(db_url, auth):
    built = build(db_url, auth=auth)
    with TestClient(built.app) as client:
        if auth is not None:
            assert login(client).status_code == 303
        token = csrf(client)
        hostile = [
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin
            {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
            {"Origin": "https://evil.example"},
            {"Origin": "http://testserver.evil.example"},
            {"Origin": "null"},  # sandboxed frames, data: URLs
        ]
        for headers in hostile:
            for extra in ({}, token):
                response = client.post(PAUSE, headers={**headers, **extra})
                assert response.status_code == 403, (headers, extra, response.text)
                assert "cross-site" in response.json()["detail"]
        assert not paused(client)


def test_same_origin_browser_requests_need_no_token(db_url):
    """What the /docs page's "Try it out" and the app's own pages send."""
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        assert login(client).status_code == 303
        same = client.post(PAUSE, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200, same.text
        assert paused(client)
        # A browser without Sec-Fetch-Site: its Origin matches the Host header.
        older = client.post(RESUME, headers={"Origin": "http://testserver"})
        assert older.status_code == 200, older.text
        assert not paused(client)


def test_a_session_cookie_without_browser_marks_needs_the_token(db_url):
    """A cookie is sent by browsers on their own: unmarked, it proves nothing."""
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        assert login(client).status_code == 303
        refused = client.post(PAUSE)
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["detail"]
        assert client.post(PAUSE, headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert not paused(client)
        assert client.post(PAUSE, headers=csrf(client)).status_code == 200
        assert paused(client)
        client.cookies.clear()
        assert client.post(RESUME).status_code == 401  # no cookie, no session


def api_key(x_api_key: str = Header(...)) -> str:
    if x_api_key != "k-1":
        raise HTTPException(401, detail="bad key")
    return "robot"


def cookie_user(app_session: str = Cookie(...)) -> str:
    if app_session != "s-1":
        raise HTTPException(401, detail="bad session")
    return "carol"


def test_a_header_credential_needs_no_token_but_an_app_cookie_does(db_url):
    built = build(db_url, auth=Depends(api_key))
    with TestClient(built.app) as client:
        key = {"X-API-Key": "k-1"}
        assert client.get("/tasks/metrics", headers=key).status_code == 200  # anon cookie
        assert client.post(PAUSE, headers=key).status_code == 200
        assert paused(client, key)
        crossed = client.post(RESUME, headers={**key, "Sec-Fetch-Site": "cross-site"})
        assert crossed.status_code == 403
        assert paused(client, key)
        audit = client.get("/tasks/audit", headers=key).json()
        assert [(entry["action"], entry["actor"]) for entry in audit] == [("pause", "robot")]

    built = build(db_url, auth=Depends(cookie_user))
    with TestClient(built.app, cookies={"app_session": "s-1"}) as client:
        assert client.post(PAUSE).status_code == 403
        assert client.post(PAUSE, headers=csrf(client)).status_code == 200
        assert paused(client)
        assert client.post(RESUME, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert not paused(client)
