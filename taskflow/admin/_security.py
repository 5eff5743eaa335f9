"""Sessions, CSRF tokens and login rate limits of the dashboard.

* The signing secret is shared by every process on the database: it is read from
  ``taskflow_meta`` (inserted there by whichever process starts first) unless given.
* A login creates a row in ``taskflow_admin_sessions``; the cookie carries a random token
  signed with HMAC-SHA256, the table only the token's SHA-256. Logging out deletes the
  row, so the cookie stops working in every process.
* Each visitor has a CSRF *anchor*: the session token, or (without a login) a random
  token in a signed cookie of its own. The CSRF token is an HMAC of the anchor.
* Mutating requests are checked the way browsers allow today (:func:`request_site`):
  a browser's cross-site or same-site request (``Sec-Fetch-Site``, or without it an
  ``Origin`` other than the request's host) is refused; a same-origin one is accepted;
  a request with neither header (curl, scripts) needs the CSRF token only when a cookie
  authenticates it. The dashboard's forms and htmx calls always send the token.
* Failed logins are audited; too many recent failures for a user name or from an
  address refuse further attempts for a while, across processes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from taskflow._store.admin_sql import KEY_CHARS
from taskflow.admin._util import utcnow

if TYPE_CHECKING:
    from taskflow._store.dashboard import DashboardStore

SESSION_COOKIE = "taskflow_admin_session"
ANON_COOKIE = "taskflow_admin_anon"
FLASH_COOKIE = "taskflow_admin_flash"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SECRET_META_KEY = "admin_secret_key"

LOGIN_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
MAX_TRACKED_LOGINS = 10_000  # rows of the failed-login table (user names and addresses)
ANON_COOKIE_AGE = 30 * 86400
# Sec-Fetch-Site values of requests a page of this origin (or the user) started.
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The visitor of one request.

    Attributes:
        username: who acts (``"anonymous"`` without authentication).
        read_only: may look but not act.
        anchor: the token the CSRF token is derived from.
        session_id: hash of the login session (None without a login session).
    """

    username: str
    read_only: bool
    anchor: str
    session_id: str | None = None


class Signer:
    """HMAC-SHA256 signatures and CSRF tokens with one secret."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("taskflow-admin:" + secret).encode()).digest()

    def sign(self, purpose: str, token: str) -> str:
        """``token.signature`` for a cookie."""
        return f"{token}.{self._mac(purpose, token)}"

    def unsign(self, purpose: str, value: str | None) -> str | None:
        """The token of a signed value, or None when the signature does not match."""
        if not value or "." not in value:
            return None
        token, _, signature = value.rpartition(".")
        if not token or not hmac.compare_digest(signature, self._mac(purpose, token)):
            return None
        return token

    def csrf_token(self, anchor: str) -> str:
        """The CSRF token of a visitor."""
        return self._mac("csrf", anchor)

    def check_csrf(self, anchor: str, supplied: str | None) -> bool:
        """True when ``supplied`` is the CSRF token of ``anchor``."""
        return bool(supplied) and hmac.compare_digest(str(supplied), self.csrf_token(anchor))

    def _mac(self, purpose: str, token: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{token}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def request_site(request: Request) -> str:
    """Where a request comes from, as the browser that sent it says.

    ``Sec-Fetch-Site`` is trusted when present (browsers set it; pages cannot):
    ``same-origin`` and ``none`` (typed or bookmarked) are ``"same-origin"``; anything
    else, ``same-site`` included (a sibling subdomain is another origin), is
    ``"cross-site"``. Without it, an ``Origin`` header is compared with the ``Host``
    header (host and port, not the scheme, which a TLS proxy changes). Without
    either, the request is ``"unmarked"``: not sent by a web page of a current
    browser (curl, scripts, server-to-server calls).

    Returns:
        ``"same-origin"``, ``"cross-site"`` or ``"unmarked"``.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return "same-origin" if site.strip().lower() in SAME_ORIGIN_SITES else "cross-site"
    origin = request.headers.get("origin")
    if origin is None:
        return "unmarked"
    _, _, authority = origin.strip().partition("://")
    host = request.headers.get("host", "")
    if authority and host and authority.rstrip("/").lower() == host.strip().lower():
        return "same-origin"
    return "cross-site"


def session_hash(token: str) -> str:
    """What the session table stores for a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


class SecretHolder:
    """The signing secret: given, or shared through ``taskflow_meta``.

    Two processes starting at once both insert-if-absent and then read back, so both
    end up with the first writer's secret.
    """

    def __init__(self, secret_key: str | None) -> None:
        self._given = secret_key
        self._signer: Signer | None = Signer(secret_key) if secret_key else None
        self._lock = asyncio.Lock()

    async def signer(self, queries: DashboardStore) -> Signer:
        """The signer, loading (or creating) the shared secret on first use."""
        if self._signer is not None:
            return self._signer
        async with self._lock:
            if self._signer is None:
                stored = await queries.meta_insert_if_absent(
                    SECRET_META_KEY, secrets.token_urlsafe(48), now=utcnow()
                )
                self._signer = Signer(stored)
        return self._signer


class LoginLimiter:
    """Refuses logins after too many recent failures for a user name or from an address,
    across processes, with the counters in a bounded table
    (``taskflow_admin_login_failures``, at most ``cap`` rows).

    Args:
        cap: how many user names and addresses are tracked at once.
    """

    def __init__(self, cap: int = MAX_TRACKED_LOGINS) -> None:
        self.cap = cap

    @staticmethod
    def _keys(username: str, ip: str | None) -> list[tuple[str, str]]:
        keys = [("user", username)]
        if ip is not None:
            keys.append(("address", ip))
        return keys

    async def blocked(self, queries: DashboardStore, *, username: str, ip: str | None) -> bool:
        """True when this user name or address failed too often recently."""
        counts = await queries.login_failures(
            self._keys(username, ip), since=utcnow() - LOGIN_WINDOW
        )
        return (
            counts.get(("user", username[:KEY_CHARS]), 0) >= MAX_FAILURES_PER_USER
            or counts.get(("address", ip or ""), 0) >= MAX_FAILURES_PER_ADDRESS
        )

    async def failed(self, queries: DashboardStore, *, username: str, ip: str | None) -> None:
        """Count a failed login for the user name and the address."""
        now = utcnow()
        await queries.add_login_failure(
            self._keys(username, ip), now=now, since=now - LOGIN_WINDOW, cap=self.cap
        )


def new_token() -> str:
    """A fresh random token for a session or an anonymous anchor."""
    return secrets.token_urlsafe(32)


def set_cookie(
    response: Response, request: Request, *, name: str, value: str, max_age: int, path: str
) -> None:
    """Set an HttpOnly, SameSite=Lax cookie on the dashboard's path (Secure when the
    browser came over HTTPS, see :func:`over_https`)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="lax",
        secure=over_https(request),
    )


def clear_cookie(response: Response, request: Request, *, name: str, path: str) -> None:
    """Remove a dashboard cookie."""
    response.delete_cookie(
        name, path=path, httponly=True, samesite="lax", secure=over_https(request)
    )


def over_https(request: Request) -> bool:
    """True when the browser reached the app over HTTPS: the request's own scheme, or
    a proxy in front saying so (``X-Forwarded-Proto: https`` or ``Forwarded:
    proto=https``), whether or not the server was told to trust that proxy.

    Trusting the header here is safe: it can only add ``Secure`` to a cookie, which a
    client lying about it over plain HTTP then fails to send back to itself.
    """
    if request.url.scheme in ("https", "wss"):
        return True
    forwarded_proto = request.headers.get("x-forwarded-proto", "")
    if forwarded_proto.split(",")[0].strip().lower() == "https":
        return True
    for element in request.headers.get("forwarded", "").split(",")[:1]:
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "proto" and value.strip().strip('"').lower() == "https":
                return True
    return False
