"""The dashboard behind a real reverse proxy, on SQLite and PostgreSQL.

A path-stripping proxy (as ``location /ops/ { proxy_pass http://app/; }`` in nginx,
plus ``X-Forwarded-Proto: https`` because it ends TLS) serves the app under ``/ops``;
the app runs in a real uvicorn started with ``root_path="/ops"`` (``--root-path``) that
does not trust the proxy's headers (``--no-proxy-headers``, as when the proxy is on
another host than uvicorn's ``--forwarded-allow-ips``), so the request's own scheme
stays ``http``.
Through the proxy: every link, asset, form and htmx URL of the page carries the prefix
and answers; the login redirects stay under it; the cookies are ``Secure``,
``HttpOnly``, ``SameSite=Lax`` and scoped to ``/ops/tasks``; and a form action works.

The client is plain HTTP to the proxy, so it sends the ``Secure`` cookies by hand (a
browser would, since it spoke HTTPS to the proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import threading
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.admin_support import admin_fail, build
from tests.servers import free_port, poll

PREFIX = "/ops"
USERS = [("admin", "pw")]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


@contextlib.contextmanager
def serving(app, **options) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """Serve ``app`` with uvicorn in a thread on loopback; yield its base URL and loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", loop
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()


def reverse_proxy(upstream: str) -> Starlette:
    """Forward ``/ops/<rest>`` to ``upstream/<rest>`` keeping Host, saying HTTPS."""

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not path.startswith(PREFIX + "/"):
            return Response("not behind the proxy", status_code=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["x-forwarded-proto"] = "https"
        headers["x-forwarded-for"] = request.client.host if request.client else "unknown"
        async with httpx.AsyncClient(base_url=upstream) as client:
            answer = await client.request(
                request.method,
                path[len(PREFIX) :],
                params=request.url.query,
                headers=headers,
                content=await request.body(),
            )
        response = Response(answer.content, status_code=answer.status_code)
        for name, value in answer.headers.multi_items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding":
                response.headers.append(name, value)
        return response

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


class Browser:
    """Keeps the cookies the app sets (sent back by hand) and checks their flags."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
        self.origin = base
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.client.request(method, url, headers=headers, **kwargs)
        for raw in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                assert morsel["secure"] and morsel["httponly"], raw
                assert morsel["samesite"].lower() in ("lax", "strict"), raw
                assert morsel["path"] == f"{PREFIX}/tasks", raw
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response

    def close(self) -> None:
        self.client.close()


def urls_in(page: str) -> set[str]:
    found = re.findall(r'(?:href|src|action|hx-get|hx-post|data-[a-z-]+)="(/[^"]*)"', page)
    return {html.unescape(url) for url in found}


def test_dashboard_behind_a_path_stripping_https_proxy(db_url):
    built = build(db_url, auth=USERS, display_func_args=True)
    with contextlib.ExitStack() as stack:
        upstream, loop = stack.enter_context(
            serving(built.app, root_path=PREFIX, proxy_headers=False)
        )
        proxied, _ = stack.enter_context(serving(reverse_proxy(upstream)))
        browser = stack.enter_context(contextlib.closing(Browser(proxied)))
        first = browser.request("GET", f"{PREFIX}/tasks/dashboard")
        assert first.status_code == 303
        assert first.headers["location"].startswith(f"{PREFIX}/tasks/auth/login?next=")
        form = browser.request("GET", first.headers["location"])
        assert form.status_code == 200
        assert f'action="{PREFIX}/tasks/auth/login"' in form.text
        token = browser.request("GET", f"{PREFIX}/tasks/auth/session").json()["csrf_token"]
        logged_in = browser.request(
            "POST",
            f"{PREFIX}/tasks/auth/login",
            data={"username": "admin", "password": "pw", "csrf_token": token},
            headers={"origin": browser.origin},
        )
        assert logged_in.status_code == 303, logged_in.text
        assert logged_in.headers["location"] == f"{PREFIX}/tasks/dashboard"
        assert "taskflow_admin_session" in browser.cookies

        enqueued = built.manager.enqueue(admin_fail, 3)
        task_id = asyncio.run_coroutine_threadsafe(enqueued, loop).result(30)

        def failed() -> bool:
            page = browser.request("GET", f"{PREFIX}/tasks/{task_id}")
            return page.status_code == 200 and page.json()["status"] == "failed"

        poll(failed, timeout=30, what="the task to fail")
        checked = 0
        for page in ("dashboard", "dashboard/runs", f"dashboard/runs/{task_id}"):
            answer = browser.request("GET", f"{PREFIX}/tasks/{page}")
            assert answer.status_code == 200, page
            for url in urls_in(answer.text):
                assert url.startswith(f"{PREFIX}/"), (page, url)
                if "/static/" in url or url.endswith(("/runs", "/failures", "/schedules")):
                    assert browser.request("GET", url).status_code == 200, url
                    checked += 1
        assert checked >= 5, checked
        retried = browser.request(
            "POST",
            f"{PREFIX}/tasks/dashboard/runs/{task_id}/retry",
            data={
                "csrf_token": browser.request("GET", f"{PREFIX}/tasks/auth/session").json()[
                    "csrf_token"
                ]
            },
            headers={"origin": browser.origin},
        )
        assert retried.status_code == 303, retried.text
        assert retried.headers["location"].startswith(f"{PREFIX}/tasks/dashboard/runs/")
