"""Login, logout and the session endpoint of the dashboard."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from starlette.responses import RedirectResponse, Response

from taskflow._store.rows import SessionRow
from taskflow.admin._context import AdminContext, ViewerGuard, client_ip
from taskflow.admin._forms import read_form
from taskflow.admin._security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Principal,
    clear_cookie,
    new_token,
    session_hash,
    set_cookie,
)
from taskflow.admin._service import Actor
from taskflow.admin._util import utcnow


class SessionInfo(BaseModel):
    """``GET {path}/auth/session``: who the caller is and the CSRF token to send back
    (``X-CSRF-Token`` header) with every POST or DELETE."""

    authenticated: bool
    username: str | None
    read_only: bool
    login_required: bool
    csrf_token: str


def safe_next(admin: AdminContext, request: Request, target: str | None) -> str:
    """``target`` if it is a dashboard page, else the overview (no open redirects)."""
    home = f"{admin.base_path(request)}/dashboard"
    unsafe = ("\\", "\n", "\r")
    if target and target.startswith(home) and not any(part in target for part in unsafe):
        return target
    return home


def add_login_routes(router: APIRouter, admin: AdminContext) -> None:
    """Public routes: the session info, and the login form when ``auth`` is a login."""

    @router.get(
        "/auth/session",
        name=admin.route_name("session"),
        response_model=SessionInfo,
        tags=["taskflow dashboard"],
    )
    async def session(request: Request, response: Response) -> SessionInfo:
        """Who is logged in, and the CSRF token for mutating API calls."""
        principal = await _known_principal(admin, request)
        token = await admin.csrf_token(request, principal)
        await admin.attach_anchor(request, response)
        return SessionInfo(
            authenticated=principal is not None,
            username=principal.username if principal else None,
            read_only=principal.read_only if principal else False,
            login_required=admin.auth.mode == "login",
            csrf_token=token,
        )

    if admin.auth.mode != "login":
        return

    @router.get("/auth/login", name=admin.route_name("login"), include_in_schema=False)
    async def login_page(request: Request, next: str | None = None) -> Response:
        if await admin.current_principal(request) is not None:
            return RedirectResponse(safe_next(admin, request, next), status_code=303)
        return await _login_form(admin, request, next=next)

    @router.post("/auth/login", name=admin.route_name("login_submit"), include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await read_form(request)
        # NUL cannot be stored (the audit and the rate limit key on the name): shown as �.
        username = str(form.get("username") or "").strip().replace("\x00", "\ufffd")
        password = str(form.get("password") or "")
        target = str(form.get("next") or "")
        anchor = await admin.anchor(request)
        if not (await admin.signer()).check_csrf(anchor, str(form.get(CSRF_FIELD) or "")):
            return await _login_form(
                admin,
                request,
                next=target,
                error="The form expired; please try again.",
                status_code=403,
                username=username,
            )
        ip = client_ip(request)
        if await admin.limiter.blocked(admin.queries, username=username or "?", ip=ip):
            return await _login_form(
                admin,
                request,
                next=target,
                username=username,
                status_code=429,
                error="Too many failed attempts. Wait a few minutes and try again.",
            )
        if not username or not await admin.auth.authenticate(username, password):
            await admin.limiter.failed(admin.queries, username=username or "?", ip=ip)
            await admin.service.audit(Actor(username or "?", ip), "login_failed", username or "?")
            return await _login_form(
                admin,
                request,
                next=target,
                username=username,
                status_code=401,
                error="Invalid username or password.",
            )
        return await _start_session(admin, request, username, ip, target)


async def _known_principal(admin: AdminContext, request: Request) -> Principal | None:
    if admin.auth.mode == "login":
        return await admin.current_principal(request)
    if admin.auth.mode == "none":
        return Principal("anonymous", False, await admin.anchor(request))
    return None


async def _login_form(
    admin: AdminContext,
    request: Request,
    *,
    next: str | None,
    error: str | None = None,
    status_code: int = 200,
    username: str = "",
) -> Response:
    return await admin.renderer.page(
        request,
        None,
        "taskflow/login.html",
        status_code=status_code,
        active="",
        error=error,
        next=safe_next(admin, request, next),
        username=username,
    )


async def _start_session(
    admin: AdminContext, request: Request, username: str, ip: str | None, target: str
) -> Response:
    token = new_token()
    now = utcnow()
    read_only = admin.auth.is_read_only(username)
    await admin.queries.create_session(
        SessionRow(
            id=session_hash(token),
            username=username,
            read_only=read_only,
            created_at=now,
            expires_at=now + timedelta(seconds=admin.token_expiry),
        ),
        now=now,
    )
    await admin.service.audit(Actor(username, ip), "login", username, {"read_only": read_only})
    response = RedirectResponse(safe_next(admin, request, target), status_code=303)
    set_cookie(
        response,
        request,
        name=SESSION_COOKIE,
        value=(await admin.signer()).sign("session", token),
        max_age=admin.token_expiry,
        path=admin.base_path(request),
    )
    await admin.renderer.finish(request, response)
    return response


def add_logout_routes(router: APIRouter, admin: AdminContext, viewer: ViewerGuard) -> None:
    """Logout (a POST with the CSRF token; GET shows a button for old links)."""
    if admin.auth.mode != "login":
        return

    @router.get("/auth/logout", name=admin.route_name("logout_page"))
    async def logout_page(request: Request, principal: Principal = Depends(viewer)) -> Response:
        return await admin.renderer.page(request, principal, "taskflow/logout.html", active="")

    @router.post("/auth/logout", name=admin.route_name("logout"))
    async def logout(request: Request, principal: Principal = Depends(viewer)) -> Response:
        await admin.check_csrf(request, principal.anchor)
        if principal.session_id is None:
            raise HTTPException(400, detail="not logged in")
        await admin.queries.delete_session(principal.session_id)
        ip = client_ip(request)
        await admin.service.audit(Actor(principal.username, ip), "logout", principal.username)
        response: Response = RedirectResponse(
            f"{admin.base_path(request)}/auth/login", status_code=303
        )
        clear_cookie(response, request, name=SESSION_COOKIE, path=admin.base_path(request))
        if request.headers.get("hx-request"):
            response = Response(headers={"HX-Redirect": response.headers["location"]})
            clear_cookie(response, request, name=SESSION_COOKIE, path=admin.base_path(request))
        return response
