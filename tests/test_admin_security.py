"""TaskAdmin's security over HTTP, on SQLite and PostgreSQL: every route behind the
same check, sessions shared by processes and ended by logout, CSRF, rate-limited
logins, read-only users, custom and dependency auth, escaping and headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi import Depends, Header, HTTPException
from fastapi.testclient import TestClient

from taskflow import TaskAuthBackend, step
from taskflow._store.admin_schema import sessions
from tests.admin_support import (
    XSS,
    admin_fail,
    admin_hourly,
    admin_ok,
    admin_parked,
    build,
    call,
    csrf,
    insert_log,
    insert_rows,
    login,
    task_row,
    wait_status,
)

USERS = [("admin", "pw"), ("viewer", "look", "read-only")]
# Public on purpose: static assets hold no data; the login form and the session
# endpoint are how one gets in.
PUBLIC = {"/tasks/dashboard/static/{filename}", "/tasks/auth/login", "/tasks/auth/session"}


def sample_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def flat_routes(routes, prefix=""):
    """(path, methods) of every route, looking inside included routers (FastAPI keeps
    them as nested objects in recent versions)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes, prefix + route.include_context.prefix)
        elif getattr(route, "methods", None):
            yield prefix + route.path, route.methods


def admin_routes(app):
    for path, methods in flat_routes(app.routes):
        if path.startswith("/tasks"):
            for method in sorted(methods):
                if method != "HEAD":
                    yield method, path


def test_every_route_refuses_anonymous_visitors(db_url):
    built = build(db_url, auth=USERS)
    walked = 0
    with TestClient(built.app) as client:
        for method, path in admin_routes(built.app):
            if path in PUBLIC:
                continue
            for headers in ({}, {"HX-Request": "true"}):
                response = client.request(
                    method, sample_path(path), headers=headers, follow_redirects=False
                )
                assert response.status_code in (401, 303), (method, path, response.status_code)
                if response.status_code == 303:
                    assert "/tasks/auth/login?next=" in response.headers["location"]
                if headers and path.startswith("/tasks/dashboard"):
                    assert response.status_code == 401
                    assert response.headers["hx-redirect"].endswith("/tasks/auth/login")
            walked += 1
    assert walked > 40, walked


def test_every_route_runs_the_apps_dependency(db_url):
    def needs_user(x_user: str | None = Header(None)) -> str:
        if x_user is None:
            raise HTTPException(401, detail="who are you?")
        return x_user

    built = build(db_url, auth=Depends(needs_user))
    with TestClient(built.app) as client:
        for method, path in admin_routes(built.app):
            if path in PUBLIC:
                continue
            response = client.request(method, sample_path(path), follow_redirects=False)
            assert response.status_code == 401, (method, path)
        page = client.get("/tasks/dashboard", headers={"X-User": "carol"})
        assert page.status_code == 200 and "carol" in page.text
        assert "not protected" not in page.text


def test_dependency_user_can_be_read_only(db_url):
    class User:
        def __init__(self, name: str) -> None:
            self.username = name
            self.read_only = name == "guest"

    def current(x_user: str = Header(...)) -> User:
        return User(x_user)

    built = build(db_url, auth=Depends(current))
    with TestClient(built.app) as client:
        task_id = call(client, built.manager.enqueue, admin_fail)
        wait_status(client, built.manager, task_id)
        token = client.get("/tasks/auth/session").json()["csrf_token"]
        guest = {"X-User": "guest", "X-CSRF-Token": token}
        assert client.post(f"/tasks/{task_id}/retry", headers=guest).status_code == 403
        boss = {"X-User": "boss", "X-CSRF-Token": token}
        assert client.post(f"/tasks/{task_id}/retry", headers=boss).status_code == 200
        assert client.get("/tasks/audit", headers=boss).json()[0]["actor"] == "boss"


def test_login_session_and_logout(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        form = client.get("/tasks/auth/login")
        assert form.status_code == 200 and 'name="password"' in form.text
        assert client.get("/tasks/dashboard", follow_redirects=False).status_code == 303

        assert login(client, password="wrong").status_code == 401
        done = login(client, "admin", "pw")
        assert done.status_code == 303
        assert done.headers["location"] == "/tasks/dashboard"
        cookie = done.headers["set-cookie"]
        assert "taskflow_admin_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/tasks" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        page = client.get("/tasks/dashboard")
        assert page.status_code == 200 and "admin" in page.text
        stolen = client.cookies.get("taskflow_admin_session")

        out = client.post("/tasks/auth/logout", headers=csrf(client), follow_redirects=False)
        assert out.status_code == 303
        assert client.get("/tasks/dashboard", follow_redirects=False).status_code == 303
        # The old cookie is dead everywhere, not just forgotten by this browser.
        client.cookies.set("taskflow_admin_session", stolen, path="/tasks")
        assert client.get("/tasks", follow_redirects=False).status_code == 401
        assert login(client).status_code == 303
        actions = [entry["action"] for entry in client.get("/tasks/audit").json()]
        assert actions == ["login", "logout", "login", "login_failed"]


def test_login_needs_the_forms_csrf_token_and_a_safe_next(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        forged = client.post(
            "/tasks/auth/login",
            data={"username": "admin", "password": "pw", "csrf_token": "x"},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        token = client.get("/tasks/auth/session").json()["csrf_token"]
        away = client.post(
            "/tasks/auth/login",
            data={
                "username": "admin",
                "password": "pw",
                "csrf_token": token,
                "next": "https://evil.example/",
            },
            follow_redirects=False,
        )
        assert away.headers["location"] == "/tasks/dashboard"


def test_failed_logins_are_rate_limited(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        for _ in range(5):
            assert login(client, "admin", "nope").status_code == 401
        blocked = login(client, "admin", "pw")
        assert blocked.status_code == 429
        assert "Too many failed attempts" in blocked.text
        # Another user is not blocked by admin's failures (under the per-address limit).
        assert login(client, "viewer", "look").status_code == 303


def test_sessions_expire(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        assert login(client).status_code == 303
        assert client.get("/tasks").status_code == 200

        async def expire() -> None:
            past = datetime.now(UTC) - timedelta(seconds=1)
            async with built.manager.db.write() as conn:
                await conn.execute(sa.update(sessions).values(expires_at=past))

        call(client, expire)
        assert client.get("/tasks").status_code == 401


def test_read_only_users_look_but_do_not_act(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        task_id = call(client, built.manager.enqueue, admin_fail)
        wait_status(client, built.manager, task_id)
        assert login(client, "viewer", "look").status_code == 303
        page = client.get(f"/tasks/dashboard/runs/{task_id}")
        assert page.status_code == 200 and "read-only" in page.text
        assert "/retry" not in page.text
        headers = csrf(client)
        assert client.post(f"/tasks/{task_id}/retry", headers=headers).status_code == 403
        html = client.post(
            f"/tasks/dashboard/runs/{task_id}/retry", headers=headers, follow_redirects=False
        )
        assert html.status_code == 403
        assert client.get("/tasks/schedules").status_code == 200


def test_secret_is_shared_by_processes_on_one_database(db_url):
    first, second = build(db_url, auth=USERS), build(db_url, auth=USERS)
    with TestClient(first.app) as one, TestClient(second.app) as two:
        assert login(one).status_code == 303
        two.cookies.set(
            "taskflow_admin_session", one.cookies.get("taskflow_admin_session"), path="/tasks"
        )
        assert two.get("/tasks").status_code == 200


def test_given_secret_key_and_secure_cookie_over_https(db_url):
    built = build(db_url, auth=("admin", "pw"), secret_key="s" * 40, token_expiry=600)
    with TestClient(built.app, base_url="https://testserver") as client:
        cookie = login(client).headers["set-cookie"]
        assert "Secure" in cookie and "Max-Age=600" in cookie


def test_custom_backends_sync_async_and_callable(db_url):
    class Async(TaskAuthBackend):
        async def authenticate_user(self, username: str, password: str) -> bool:
            return password == f"{username}!"

        def is_read_only(self, username: str) -> bool:
            return username == "ro"

    for auth in (Async(), lambda user, password: password == f"{user}!"):
        built = build(db_url, auth=auth)
        with TestClient(built.app) as client:
            assert login(client, "kim", "wrong").status_code == 401
            assert login(client, "kim", "kim!").status_code == 303
            assert client.get("/tasks/auth/session").json()["username"] == "kim"
    built = build(db_url, auth=Async())
    with TestClient(built.app) as client:
        assert login(client, "ro", "ro!").status_code == 303
        assert client.get("/tasks/auth/session").json()["read_only"] is True


def test_auth_argument_is_checked():
    from taskflow.admin.auth import resolve_auth

    with pytest.raises(TypeError):
        resolve_auth(42)
    with pytest.raises(TypeError):
        resolve_auth([("only-a-name",)])
    assert resolve_auth(None).mode == "none"
    assert resolve_auth([("a", "b", "read-only")]).is_read_only("a")


def test_unprotected_dashboard_warns_and_says_so(db_url, caplog):
    built = build(db_url)
    with caplog.at_level("WARNING", logger="taskflow.admin"), TestClient(built.app) as client:
        page = client.get("/tasks/dashboard")
        assert 'id="unprotected-banner"' in page.text
    assert any("has no auth=" in record.getMessage() for record in caplog.records)


def test_security_headers_and_no_inline_script_or_style(db_url):
    built = build(db_url, display_func_args=True)
    with TestClient(built.app) as client:
        task_id = call(client, built.manager.enqueue, admin_fail, 1)
        wait_status(client, built.manager, task_id)
        flow = call(client, built.manager.chain, step(admin_ok, 1), step(admin_ok, 2))
        pages = [
            "/tasks/dashboard",
            "/tasks/dashboard/runs",
            "/tasks/dashboard/failures",
            f"/tasks/dashboard/runs/{task_id}",
            "/tasks/dashboard/schedules",
            "/tasks/dashboard/logs",
            "/tasks/dashboard/functions",
            "/tasks/dashboard/instances",
            "/tasks/dashboard/audit",
            "/tasks/dashboard/queues",
            "/tasks/dashboard/workflows",
            f"/tasks/dashboard/workflows/{flow.id}",
        ]
        for path in pages:
            response = client.get(path)
            assert response.status_code == 200, path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert response.headers["x-frame-options"] == "DENY"
            html = response.text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"\son[a-z]+\s*=", html), path
            assert not re.search(r"\sstyle\s*=", html), path
            assert "https://" not in html and "http://" not in html, path


BASELINE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def check_baseline_headers(response, what) -> None:
    for name, value in BASELINE.items():
        assert response.headers.get(name) == value, (what, name, response.status_code)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], what


def test_every_answer_under_the_prefix_sends_the_security_headers(db_url):
    """Every route (anonymous, then logged in), errors written by the app's exception
    handlers, redirects, static files and an unknown path under the prefix: all carry
    the headers; the app's own routes do not get them."""
    built = build(db_url, auth=USERS)

    @built.app.get("/mine")
    def mine() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(built.app) as client:
        task_id = call(client, built.manager.enqueue, admin_ok, 1)
        wait_status(client, built.manager, task_id)
        answers = 0
        for session in ("anonymous", "admin"):
            if session == "admin":
                assert login(client).status_code == 303
            headers = csrf(client) if session == "admin" else {}
            for method, path in admin_routes(built.app):
                url = re.sub(r"\{task_id\}", task_id, path)
                url = re.sub(r"\{filename\}", "app.css", url)
                response = client.request(
                    method, sample_path(url), headers=headers, follow_redirects=False
                )
                check_baseline_headers(response, (session, method, path))
                answers += 1
        for url in ("/tasks/no/such/page", "/tasks/dashboard/static/nope.css"):
            response = client.get(url)
            assert response.status_code == 404
            check_baseline_headers(response, url)
        assert (
            client.get("/tasks/dashboard")
            .headers["content-security-policy"]
            .startswith("default-src 'none'; script-src 'self'")
        )
        assert "x-frame-options" not in client.get("/mine").headers
        assert "x-frame-options" not in client.get("/tasksmore").headers
    assert answers > 80, answers


def test_cookies_are_secure_behind_a_proxy_that_says_https(db_url):
    built = build(db_url, auth=("admin", "pw"))
    with TestClient(built.app) as client:
        plain = login(client).headers["set-cookie"]
        assert "HttpOnly" in plain and "SameSite=lax" in plain and "Secure" not in plain
    for forwarded in ({"X-Forwarded-Proto": "https"}, {"Forwarded": "for=1.2.3.4;proto=https"}):
        with TestClient(built.app, headers=forwarded) as client:
            cookie = login(client).headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_failed_logins_lock_out_an_address_across_user_names(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        for n in range(20):
            assert login(client, f"guess-{n}", "nope").status_code == 401
        # Another name from the same address is refused too, even a right password.
        assert login(client, "viewer", "look").status_code == 429


def test_user_data_is_escaped_on_every_page(db_url):
    """A script payload in a function name, a schedule name, arguments, keyword
    arguments, tags, an error, a traceback, a log line and a login name is shown as
    text on every page and fragment of the dashboard, never as markup."""
    built = build(db_url, display_func_args=True, auth=USERS)
    built.manager.task(name=XSS)(admin_ok)
    built.manager.schedule(every=3600, name=f"{XSS} hourly")(admin_hourly)
    with TestClient(built.app) as client:
        assert login(client, username=XSS, password="x").status_code == 401
        assert login(client).status_code == 303
        task_id = call(client, built.manager.enqueue, admin_ok, XSS, password=XSS)
        wait_status(client, built.manager, task_id)
        row = task_row(func_name=XSS, status="failed", error=XSS, tags={XSS: XSS})
        row["traceback"] = XSS
        call(client, insert_rows, built.manager, [row])
        call(client, insert_log, built.manager, task_id, XSS)
        call(client, insert_log, built.manager, row["id"], XSS)
        flow = call(client, built.manager.chain, step(admin_ok, XSS), name=XSS)
        wait_status(client, built.manager, flow.last_id)
        pages = 0
        for method, path in admin_routes(built.app):
            if method != "GET" or not path.startswith("/tasks/dashboard") or "static" in path:
                continue
            if path.endswith("{rest:path}"):  # the styled 404 of any other path
                path = f"/tasks/dashboard/{XSS}"
                assert client.get(path).status_code == 404
                assert "<script>window.__pwned" not in client.get(path).text
                continue
            for shown in (task_id, row["id"]) if "{task_id}" in path else (None,):
                url = path.replace("{task_id}", shown) if shown else path
                url = url.replace("{workflow_id}", flow.id)
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                html = response.text
                assert "<script>window.__pwned" not in html, url
                assert "<img src=x" not in html, url
                pages += 1
        assert pages >= 15, pages
        for path in ("/tasks/dashboard/runs", f"/tasks/dashboard/runs/{row['id']}"):
            assert "&lt;script&gt;" in client.get(path).text, path


def test_static_files_are_public_and_confined(db_url):
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        css = client.get("/tasks/dashboard/static/admin.css")
        assert css.status_code == 200 and "max-age" in css.headers["cache-control"]
        assert client.get("/tasks/dashboard/static/nope.js").status_code == 404
        outside = client.get("/tasks/dashboard/static/..%2Fpyproject.toml", follow_redirects=False)
        assert outside.status_code in (303, 404) and "[project]" not in outside.text
        assert client.get("/tasks/dashboard/static/.hidden").status_code == 404


def test_templates_can_be_overridden_by_name(db_url, tmp_path):
    folder = tmp_path / "taskflow"
    folder.mkdir()
    (folder / "audit.html").write_text(
        '{% extends "taskflow/base.html" %}{% block content %}<h1 id="mine">My audit</h1>'
        "{% endblock %}"
    )
    built = build(db_url, templates_dir=tmp_path)
    with TestClient(built.app) as client:
        assert 'id="mine"' in client.get("/tasks/dashboard/audit").text
        assert 'id="mine"' not in client.get("/tasks/dashboard/logs").text


def test_no_mutation_accepts_a_cross_site_request(db_url):
    """Every state-changing route, hit with the logged-in admin's cookie the way a
    hostile page would (a cross-site form post, or a fetch without the session's token,
    or with a guessed one), is refused and changes nothing."""
    built = build(db_url, auth=USERS)
    with TestClient(built.app) as client:
        assert login(client).status_code == 303
        failed_id = call(client, built.manager.enqueue, admin_fail)
        wait_status(client, built.manager, failed_id)
        parked_id = call(client, built.manager.enqueue, admin_parked)
        before = {
            "tasks": sorted(
                (row.task_id, row.status.value)
                for row in call(client, built.manager.list_tasks, limit=100)
            ),
            "schedules": client.get("/tasks/schedules").json(),
        }
        hostile = [
            {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
            {"Origin": "https://evil.example", "X-CSRF-Token": "guessed"},
            {"HX-Request": "true"},
        ]
        tried = 0
        for method, path in admin_routes(built.app):
            if method not in ("POST", "PUT", "PATCH", "DELETE") or path in PUBLIC:
                continue
            target = (
                path.replace("{task_id}", failed_id if "retry" in path else parked_id)
                .replace("{name}", "hourly_report")
                .replace("{schedule_id}", "hourly_report")
            )
            target = sample_path(target)
            for headers in hostile:
                response = client.request(
                    method,
                    target,
                    headers=headers,
                    content="value=1&unit=day&task_ids=" + failed_id,
                    follow_redirects=False,
                )
                assert response.status_code == 403, (method, path, headers, response.text)
            tried += 1
        assert tried >= 10, tried
        after = {
            "tasks": sorted(
                (row.task_id, row.status.value)
                for row in call(client, built.manager.list_tasks, limit=100)
            ),
            "schedules": client.get("/tasks/schedules").json(),
        }
        assert after == before
        actions = [entry["action"] for entry in client.get("/tasks/audit").json()]
        assert actions == ["login"], actions
