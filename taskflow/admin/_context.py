"""What the dashboard's routers share: settings, the store, and the helpers of a request.

:class:`AdminContext` holds the dashboard's settings and collaborators (store, actions,
renderer, caches) and answers the questions every route asks: who is asking (the
guards), which CSRF token and anchor they have, and which message to show them next.
The routers (``_pages``, ``_actions``, ``_login``, ``_api``) receive one;
:class:`~taskflow.admin.TaskAdmin` is one, plus its wiring into the FastAPI app.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from starlette.responses import Response

from taskflow._store.dashboard import DashboardStore
from taskflow._store.sql import SQLStore
from taskflow.admin._forms import read_form
from taskflow.admin._redact import Redactor
from taskflow.admin._rendering import Flash, Renderer
from taskflow.admin._security import (
    ANON_COOKIE,
    ANON_COOKIE_AGE,
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    SESSION_COOKIE,
    LoginLimiter,
    Principal,
    SecretHolder,
    Signer,
    new_token,
    request_site,
    session_hash,
    set_cookie,
)
from taskflow.admin._service import Actor, AdminService
from taskflow.admin._util import utcnow
from taskflow.admin._views import TTLCache
from taskflow.admin.auth import AuthConfig, principal_name
from taskflow.errors import ConfigurationError, NotStarted

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

ViewerGuard: TypeAlias = Callable[..., Awaitable[Principal]]
"""A FastAPI dependency that admits a visitor who may look."""
ActorGuard: TypeAlias = Callable[..., Awaitable[Actor]]
"""A FastAPI dependency that admits a visitor who may act."""

_NEW_ANCHOR = "taskflow_admin_new_anchor"


class AdminContext:
    """The dashboard's settings and collaborators, and the helpers of its routes.

    Args:
        manager: the manager whose tasks, schedules and instances are shown.
        path: URL prefix of the JSON API, without a trailing slash.
        auth: the resolved ``auth=`` argument.
        display_func_args: show task arguments (after redaction).
        token_expiry: seconds a login session lasts.
        secret_key: signing secret for sessions and CSRF tokens, or None for the one
            shared through the database.
        poll_interval: seconds between live refreshes of the pages' changing parts.
        title: the name shown in the header and the page titles.
        redact_keys: argument, result and log field names whose values are masked.
        templates_dir: folders of templates that override the bundled ones.
        name: prefix of the route names.
        count_cap: counts stop at this many rows.
        page_size: rows per page of the lists.
        stats_ttl: seconds the overview's and functions' statistics are cached.
    """

    def __init__(
        self,
        manager: TaskManager,
        *,
        path: str,
        auth: AuthConfig,
        display_func_args: bool,
        token_expiry: int,
        secret_key: str | None,
        poll_interval: float,
        title: str,
        redact_keys: Iterable[str],
        templates_dir: str | Path | Sequence[str | Path] | None,
        name: str,
        count_cap: int,
        page_size: int,
        stats_ttl: float,
    ) -> None:
        self.manager = manager
        self.path = path
        self.auth = auth
        self.display_func_args = display_func_args
        self.token_expiry = token_expiry
        self.poll_interval = poll_interval
        self.title = title
        self.name = name
        self.count_cap = count_cap
        self.page_size = page_size
        self.redactor = Redactor(redact_keys)
        self.secret = SecretHolder(secret_key)
        self.limiter = LoginLimiter()
        self.cache = TTLCache(stats_ttl)
        self.service = AdminService(manager, lambda: self.queries)
        self.renderer = Renderer(self, templates_dir)
        self._queries: DashboardStore | None = None

    @property
    def queries(self) -> DashboardStore:
        """The dashboard store on the manager's open database.

        Raises:
            NotStarted: the manager is not running.
        """
        db = self.manager.db
        if db is None or not self.manager.started:
            raise NotStarted("the TaskManager is not started")
        if not isinstance(db, SQLStore):
            raise ConfigurationError("the dashboard reads a SQLite or PostgreSQL task store")
        if self._queries is None or self._queries._store is not db:
            # Searches look in the arguments only where the pages show them, and never
            # in those holding a masked key.
            self._queries = DashboardStore(
                db,
                search_arguments=self.display_func_args,
                hidden_keys=self.redactor.keys,
                retention_days=lambda: self.manager.retention_days,
            )
        return self._queries

    @property
    def protected(self) -> bool:
        """True when some authentication guards the dashboard."""
        return self.auth.mode != "none"

    def route_name(self, short: str) -> str:
        """The full route name of a dashboard route."""
        return f"{self.name}.{short}"

    def base_path(self, request: Request) -> str:
        """The dashboard's path prefix as the browser sees it (with the root path)."""
        return str(request.scope.get("root_path", "")).rstrip("/") + self.path

    # -- who is asking -----------------------------------------------------------------

    async def signer(self) -> Signer:
        """The signer of sessions and CSRF tokens (the secret loads on first use)."""
        return await self.secret.signer(self.queries)

    async def current_principal(self, request: Request) -> Principal | None:
        """The logged-in user of a login-mode request, or None."""
        signer = await self.signer()
        token = signer.unsign("session", request.cookies.get(SESSION_COOKIE))
        if token is None:
            return None
        session = await self.queries.get_session(session_hash(token), now=utcnow())
        if session is None:
            return None
        return Principal(
            username=session.username,
            read_only=session.read_only,
            anchor=token,
            session_id=session.id,
        )

    async def anchor(self, request: Request) -> str:
        """The CSRF anchor of a visitor without a login session (made on first visit;
        the response sets its cookie)."""
        signer = await self.signer()
        token = signer.unsign("anon", request.cookies.get(ANON_COOKIE))
        if token is None:
            token = getattr(request.state, _NEW_ANCHOR, None) or new_token()
            setattr(request.state, _NEW_ANCHOR, token)
        return token

    async def attach_anchor(self, request: Request, response: Response) -> None:
        """Set the anonymous anchor cookie if this request made a new one."""
        token = getattr(request.state, _NEW_ANCHOR, None)
        if token is None:
            return
        signer = await self.signer()
        set_cookie(
            response,
            request,
            name=ANON_COOKIE,
            value=signer.sign("anon", token),
            max_age=ANON_COOKIE_AGE,
            path=self.base_path(request),
        )

    async def csrf_token(self, request: Request, principal: Principal | None) -> str:
        """The CSRF token to put in pages and forms for this visitor."""
        anchor = principal.anchor if principal is not None else await self.anchor(request)
        return (await self.signer()).csrf_token(anchor)

    async def check_csrf(self, request: Request, anchor: str) -> None:
        """Refuse a mutating request without the visitor's CSRF token.

        Raises:
            HTTPException: 403.
        """
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None:
            supplied = (await read_form(request)).get(CSRF_FIELD)
        if not (await self.signer()).check_csrf(anchor, supplied):
            raise HTTPException(403, detail="CSRF token missing or invalid; reload the page")

    async def check_cross_site(self, request: Request, anchor: str) -> None:
        """Refuse a mutating request that a browser marks as cross-site; accept a
        same-origin one; ask an unmarked one (no ``Sec-Fetch-Site``, no ``Origin``) for
        the CSRF token only when a cookie authenticates it (see
        :func:`~taskflow.admin._security.request_site`).

        Raises:
            HTTPException: 403.
        """
        site = request_site(request)
        if site == "cross-site":
            raise HTTPException(
                403, detail="cross-site request refused: act from the dashboard's own pages"
            )
        if site == "unmarked" and self._cookie_authenticated(request):
            await self.check_csrf(request, anchor)

    def _cookie_authenticated(self, request: Request) -> bool:
        """True when a cookie (which browsers send by themselves) may be what
        authenticates this request: a login session, or any cookie of the app's own
        auth dependency (the dashboard's anonymous and flash cookies prove nothing)."""
        if self.auth.mode == "login":
            return True
        if self.auth.mode == "dependency":
            return any(name not in (ANON_COOKIE, FLASH_COOKIE) for name in request.cookies)
        return False

    # -- guards (FastAPI dependencies) -------------------------------------------------

    def viewer_guard(self, kind: str) -> ViewerGuard:
        """The dependency that lets a visitor look (``kind``: ``"page"`` or ``"api"``)."""
        context = self
        if self.auth.mode == "dependency":
            first = self.auth.dependencies[0]

            async def dependency_viewer(request: Request, value: object = first) -> Principal:
                refuse_nul(request)
                username, read_only = principal_name(value)
                principal = Principal(
                    username=username,
                    read_only=read_only or context.auth.is_read_only(username),
                    anchor=await context.anchor(request),
                )
                request.state.taskflow_principal = principal
                return principal

            return dependency_viewer

        async def viewer(request: Request) -> Principal:
            refuse_nul(request)
            principal = await context._principal(request)
            if principal is None:
                raise context.unauthenticated(request, kind)
            request.state.taskflow_principal = principal
            return principal

        return viewer

    async def _principal(self, request: Request) -> Principal | None:
        if not self.manager.started:
            raise HTTPException(503, detail="taskflow is not running (the app is not started)")
        if self.auth.mode == "login":
            return await self.current_principal(request)
        return Principal(username="anonymous", read_only=False, anchor=await self.anchor(request))

    def actor_guard(self, viewer: ViewerGuard) -> ActorGuard:
        """The dependency that lets a visitor act: not read-only, and not a cross-site
        request (:meth:`check_cross_site`)."""
        context = self

        async def actor(request: Request, principal: Principal = Depends(viewer)) -> Actor:
            if principal.read_only:
                raise HTTPException(403, detail=f"{principal.username} may look but not act")
            await context.check_cross_site(request, principal.anchor)
            return Actor(username=principal.username, ip=client_ip(request))

        return actor

    def unauthenticated(self, request: Request, kind: str) -> HTTPException:
        """401 for the API and htmx requests (which follow ``HX-Redirect``), else a
        redirect to the login page."""
        login = f"{self.base_path(request)}/auth/login"
        if kind == "api":
            return HTTPException(401, detail="Not authenticated")
        if request.headers.get("hx-request"):
            return HTTPException(401, detail="Not authenticated", headers={"HX-Redirect": login})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return HTTPException(
            303, detail="Login required", headers={"Location": f"{login}?next={quote(target)}"}
        )

    # -- one-time messages -------------------------------------------------------------

    async def set_flash(
        self,
        request: Request,
        response: Response,
        text: str,
        kind: str,
        link: tuple[str, str] | None = None,
    ) -> None:
        """Show ``text`` on the next page this visitor opens (``kind``: ok or error).

        ``link`` is ``(url, label)``: a link shown where ``{link}`` stands in ``text``."""
        data = [kind, text[:500], *(link or ())]
        payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
        set_cookie(
            response,
            request,
            name=FLASH_COOKIE,
            value=(await self.signer()).sign("flash", payload.rstrip("=")),
            max_age=60,
            path=self.base_path(request),
        )

    async def pop_flash(self, request: Request) -> Flash | None:
        """The flash message waiting for this visitor, if any (the page clears it)."""
        payload = (await self.signer()).unsign("flash", request.cookies.get(FLASH_COOKIE))
        if payload is None:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            kind, text, *link = (str(item) for item in data)
        except (ValueError, TypeError):
            return None
        if len(link) == 2:
            return Flash(kind, text, link_url=link[0], link_text=link[1])
        return Flash(kind, text)


def refuse_nul(request: Request) -> None:
    """Refuse a URL with a NUL character in its path or query: no task id, name or
    filter holds one, and PostgreSQL refuses such text instead of matching nothing.

    Raises:
        HTTPException: 400.
    """
    texts = [str(request.scope.get("path", ""))]
    texts += [text for pair in request.query_params.multi_items() for text in pair]
    if any("\x00" in text for text in texts):
        raise HTTPException(400, detail="the URL must not contain NUL characters (%00)")


def client_ip(request: Request) -> str | None:
    """The address of the client that sent ``request``, if known."""
    return request.client.host if request.client is not None else None
