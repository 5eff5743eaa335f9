"""Security headers on every answer under the dashboard's prefix.

Pages and fragments carry the full set from the renderer (:data:`SECURITY_HEADERS`).
Everything else the prefix serves (the JSON API, redirects, static files, Prometheus
metrics, and the errors the app's exception handlers write, which no route of ours
sees) gets the headers that apply to any content: ``X-Content-Type-Options``,
``Referrer-Policy``, ``X-Frame-Options`` and a ``Content-Security-Policy`` that loads
nothing and may not be framed. A header the answer already has is left as it is (a
page's own policy, a static file's ``Cache-Control``).

It is a plain ASGI middleware on the app, scoped by path, so the app's other routes
are untouched and a streamed answer is never buffered.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASELINE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def under_prefix(scope: Scope, prefix: str) -> bool:
    """True when the request's path (without the app's ``root_path``) is ``prefix`` or
    below it."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path == prefix or path.startswith(prefix + "/")


class SecurityHeaders:
    """Add :data:`BASELINE_HEADERS` (those missing) to HTTP answers under ``prefix``."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under_prefix(scope, self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in BASELINE_HEADERS if pair[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
