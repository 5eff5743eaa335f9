"""Templates, static files and the security headers of every dashboard page.

Templates load from the user's ``templates_dir`` first, then from the bundled
``templates/`` folder (``taskflow._store.migrate.resource_path``), so a user overrides one
template by giving a file of the same name. Jinja autoescaping is always on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from taskflow._store.migrate import resource_path
from taskflow.admin import _util
from taskflow.admin._audit_view import audit_action, audit_details, audit_target
from taskflow.admin._compress import StaticGzip, compress_response
from taskflow.admin._security import CSRF_FIELD, FLASH_COOKIE, Principal, clear_cookie
from taskflow.admin._tracebacks import error_head, fold_traceback
from taskflow.admin.auth import AuthConfig

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (
    ("overview", "Overview"),
    ("runs", "Runs"),
    ("failures", "Failures"),
    ("queues", "Queues"),
    ("workflows", "Workflows"),
    ("schedules", "Schedules"),
    ("logs", "Logs"),
    ("functions", "Functions"),
    ("instances", "Instances"),
    ("audit", "Audit"),
)
STATUS_CLASSES = {
    "pending": "st-pending",
    "blocked": "st-pending",
    "running": "st-running",
    "success": "st-success",
    "failed": "st-failed",
    "cancelled": "st-cancelled",
    "interrupted": "st-interrupted",
    "rejected": "st-rejected",
}

# The running time of a task (``<span class="elapsed" data-elapsed="…">``) changes on
# every render; a live part's fingerprint leaves it out, so a part whose only change is
# that clock still answers 204 (the browser counts the seconds on by itself).
_ELAPSED = re.compile(r'(<span class="elapsed" data-elapsed=")[^"]*("[^>]*>)[^<]*(</span>)')
# Where a flash message's link goes in its text.
LINK_MARK = "{link}"


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time message shown on the next page, optionally with one link in it.

    Attributes:
        kind: ``"ok"`` or ``"error"``.
        text: the message; :data:`LINK_MARK` in it marks where the link goes.
        link_url: where the link goes (a dashboard path), or None.
        link_text: the link's text.
    """

    kind: str
    text: str
    link_url: str | None = None
    link_text: str | None = None

    @property
    def parts(self) -> tuple[str, str]:
        """The text before and after the link (all of it before when there is none)."""
        if self.link_url is None:
            return self.text, ""
        before, _, after = self.text.partition(LINK_MARK)
        return before, after


class RenderHost(Protocol):
    """What the renderer needs of the dashboard (the templates see it as ``admin``)."""

    title: str
    poll_interval: float
    count_cap: int
    auth: AuthConfig

    @property
    def protected(self) -> bool:
        """True when some authentication guards the dashboard."""
        ...

    def route_name(self, short: str) -> str:
        """The full route name of a dashboard route."""
        ...

    def base_path(self, request: Request) -> str:
        """The dashboard's path prefix as the browser sees it."""
        ...

    async def csrf_token(self, request: Request, principal: Principal | None) -> str:
        """The CSRF token to put in pages and forms for this visitor."""
        ...

    async def pop_flash(self, request: Request) -> Flash | None:
        """The one-time message waiting for this visitor, if any."""
        ...

    async def attach_anchor(self, request: Request, response: Response) -> None:
        """Set the anonymous anchor cookie if this request made a new one."""
        ...


class Renderer:
    """Renders the dashboard's templates.

    Args:
        admin: the dashboard whose settings and visitor helpers the pages use.
        templates_dir: user folders searched before the bundled templates.
    """

    def __init__(
        self, admin: RenderHost, templates_dir: str | Path | Sequence[str | Path] | None
    ) -> None:
        self._admin = admin
        self.static_dir = resource_path("static")
        self.static_gzip = StaticGzip()
        self.env = Environment(
            loader=ChoiceLoader(
                [FileSystemLoader(str(folder)) for folder in _folders(templates_dir)]
                + [FileSystemLoader(str(resource_path("templates")))]
            ),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            duration=_util.duration_text,
            elapsed=_util.elapsed_text,
            time=_util.time_text,
            short=lambda value: (value or "")[:8],
            status_class=lambda status: STATUS_CLASSES.get(str(status), "st-other"),
            percent=_percent,
            number=lambda value: f"{value:,}",
        )
        self.env.globals.update(
            audit_details=audit_details,
            audit_target=audit_target,
            audit_action=audit_action,
            error_head=error_head,
            fold_traceback=fold_traceback,
        )
        self._versions: dict[str, str] = {}

    # -- URLs ----------------------------------------------------------------------

    def url(self, request: Request, short: str, query: str = "", **params: Any) -> str:
        """The path (with the app's root path) of dashboard route ``short``."""
        full = request.url_for(self._admin.route_name(short), **params)
        path = urlsplit(str(full)).path
        return f"{path}?{query}" if query else path

    def static_url(self, request: Request, filename: str) -> str:
        """The URL of a static file, versioned by its content for caching."""
        version = self._versions.get(filename)
        if version is None:
            content = (self.static_dir / filename).read_bytes()
            version = self._versions[filename] = hashlib.sha256(content).hexdigest()[:12]
        return self.url(request, "static", query=f"v={version}", filename=filename)

    def static_file(self, filename: str) -> Path | None:
        """The bundled static file called ``filename`` (no sub-folders), or None."""
        if "/" in filename or "\\" in filename or filename.startswith("."):
            return None
        path = self.static_dir / filename
        return path if path.is_file() else None

    # -- rendering -----------------------------------------------------------------

    async def base_context(self, request: Request, principal: Principal | None) -> dict[str, Any]:
        """What every page's layout needs."""
        admin = self._admin
        return {
            "request": request,
            "admin": admin,
            "principal": principal,
            "csrf_token": await admin.csrf_token(request, principal),
            "csrf_field": CSRF_FIELD,
            "nav": NAV,
            "now": _util.utcnow(),
            "url": lambda short, query="", **params: self.url(request, short, query, **params),
            "qs": _query,
            "static": lambda filename: self.static_url(request, filename),
            "ago": lambda moment: _util.ago_text(moment, now=_util.utcnow()),
            "capped": lambda count, cap=None: _util.capped(count, cap or admin.count_cap),
            "can_act": principal is not None and not principal.read_only,
            "login_enabled": admin.auth.mode == "login",
        }

    def render(self, template: str, context: dict[str, Any]) -> str:
        """Render one template to text."""
        return self.env.get_template(template).render(context)

    async def page(
        self,
        request: Request,
        principal: Principal | None,
        template: str,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """A whole page, with the security headers (and a new anchor cookie if any)."""
        flash = await self._admin.pop_flash(request)
        full = {**await self.base_context(request, principal), "flash": flash, **context}
        response = HTMLResponse(self.render(template, full), status_code=status_code)
        await self.finish(request, response)
        if flash is not None:
            clear_cookie(response, request, name=FLASH_COOKIE, path=self._admin.base_path(request))
        return response

    async def fragment(
        self,
        request: Request,
        principal: Principal | None,
        template: str,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """Part of a page, for htmx."""
        full = {**await self.base_context(request, principal), **context}
        response = HTMLResponse(
            self.render(template, full), status_code=status_code, headers=headers
        )
        await self.finish(request, response)
        return response

    async def live(
        self,
        request: Request,
        principal: Principal | None,
        template: str,
        *,
        element_id: str,
        refresh_url: str | None,
        **context: Any,
    ) -> tuple[Markup, str]:
        """A part of a page that refreshes itself every ``poll_interval`` seconds.

        Returns the element's markup and the fingerprint of its content. The refresh
        request sends the fingerprint back; an unchanged part answers 204 and htmx
        leaves the page alone. ``refresh_url=None`` renders the part without refresh.
        """
        full = {**await self.base_context(request, principal), **context}
        inner = self.render(template, full)
        steady = _ELAPSED.sub(r"\1\2\3", inner)
        fingerprint = hashlib.sha256(steady.encode()).hexdigest()[:16]
        wrapper = {
            "element_id": element_id,
            "inner": Markup(inner),  # noqa: S704 - rendered (and escaped) by Jinja above
            "refresh_url": _with_fingerprint(refresh_url, fingerprint) if refresh_url else None,
            "interval": self._admin.poll_interval,
        }
        return Markup(self.render("taskflow/_live.html", wrapper)), fingerprint  # noqa: S704

    async def live_response(
        self, request: Request, principal: Principal | None, template: str, **kwargs: Any
    ) -> Response:
        """The refresh answer of :meth:`live`: 204 when unchanged, else the element."""
        markup, fingerprint = await self.live(request, principal, template, **kwargs)
        if request.query_params.get("fp") == fingerprint:
            response: Response = Response(status_code=204)
        else:
            response = HTMLResponse(str(markup))
        await self.finish(request, response)
        return response

    async def finish(self, request: Request, response: Response) -> None:
        """Add the security headers and the anonymous anchor cookie, if new, and gzip
        the body when the client accepts it."""
        response.headers.update(SECURITY_HEADERS)
        await self._admin.attach_anchor(request, response)
        compress_response(request, response)


def _folders(templates_dir: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if templates_dir is None:
        return []
    if isinstance(templates_dir, str | Path):
        return [Path(templates_dir)]
    return [Path(folder) for folder in templates_dir]


def _query(**params: Any) -> str:
    """A query string of the parameters that have a value (``qs(tag="k=v")``)."""
    return urlencode({key: value for key, value in params.items() if value not in ("", None)})


def _with_fingerprint(url: str, fingerprint: str) -> str:
    base = url.split("#", 1)[0]
    parts = [part for part in base.split("?", 1)[1].split("&")] if "?" in base else []
    kept = "&".join(part for part in parts if part and not part.startswith("fp="))
    path = base.split("?", 1)[0]
    return f"{path}?{kept + '&' if kept else ''}fp={fingerprint}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"
