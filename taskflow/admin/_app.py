"""``TaskAdmin``: the dashboard and JSON API mounted on a FastAPI app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends

from taskflow.admin._api import build_api_router
from taskflow.admin._context import AdminContext
from taskflow.admin._headers import SecurityHeaders
from taskflow.admin._pages import build_auth_router, build_page_router
from taskflow.admin._prometheus import build_prometheus_router
from taskflow.admin._redact import DEFAULT_REDACT_KEYS
from taskflow.admin.auth import AuthArgument, resolve_auth
from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskflow.manager import TaskManager

logger = logging.getLogger("taskflow.admin")


class TaskAdmin(AdminContext):
    """Mount taskflow's dashboard (``{path}/dashboard``), JSON API (``{path}``) and
    Prometheus metrics (``{path}/prometheus``) on ``app``, and run ``task_manager`` with
    the app's lifespan.

    The positional parameters are fastapi-taskflow's, in its order; the keyword-only
    ones are taskflow's additions. All setup happens here: ``TaskAdmin(app, manager)``
    needs no reference kept. The dashboard's routes share this object as their
    :class:`~taskflow.admin._context.AdminContext` (settings, store and request helpers).

    Args:
        app: the FastAPI application.
        task_manager: the manager whose tasks, schedules and instances are shown.
        path: URL prefix of the JSON API; the dashboard is at ``{path}/dashboard``.
        display_func_args: show task arguments (after redaction); hidden by default.
        auto_install: also patch ``BackgroundTasks`` injection (``task_manager.install``).
        auth: who may use the dashboard; see :mod:`taskflow.admin.auth`. Without it the
            dashboard is open to anyone who can reach the app: a warning is logged at
            startup and every page says so.
        token_expiry: seconds a login session lasts.
        secret_key: signing secret for sessions and CSRF tokens. By default a random one
            is created once and shared by every process through the database.
        poll_interval: seconds between live refreshes of the pages' changing parts.
        title: the name shown in the header and the page titles.
        retention_days: set ``task_manager.retention_days`` (delete old final tasks).
        redact_keys: argument, result and log field names whose values are masked.
        read_only_users: users who may look but not act.
        templates_dir: a folder (or list of folders) of templates that override the
            bundled ones by name (``taskflow/runs.html``...).
        name: prefix of the route names (two dashboards on one app need two names).
        count_cap: counts stop at this many rows and show as ``"10,000+"``.
        page_size: rows per page of the lists.
        stats_ttl: seconds the overview's and functions' statistics are cached.
        metrics_token: the bearer token of ``{path}/prometheus`` (Prometheus metrics,
            see docs/dashboard.md). Without it that endpoint is behind ``auth`` like the
            rest of the dashboard; with it, only ``Authorization: Bearer <token>`` opens
            it (what Prometheus's ``authorization`` scrape setting sends), so a scraper
            needs no dashboard login.

    Raises:
        ValueError: an invalid argument.
        TypeError: ``auth`` is of no accepted form.
    """

    def __init__(
        self,
        app: FastAPI,
        task_manager: TaskManager,
        path: str = "/tasks",
        display_func_args: bool = False,
        auto_install: bool = False,
        auth: AuthArgument = None,
        token_expiry: int = 86400,
        secret_key: str | None = None,
        poll_interval: float = 5.0,
        title: str = "taskflow",
        *,
        retention_days: float | None = None,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        read_only_users: Iterable[str] = (),
        templates_dir: str | Path | Sequence[str | Path] | None = None,
        name: str = "taskflow_admin",
        count_cap: int = 10_000,
        page_size: int = 50,
        stats_ttl: float = 10.0,
        metrics_token: str | None = None,
    ) -> None:
        _check_arguments(path, token_expiry, poll_interval, retention_days, count_cap, page_size)
        super().__init__(
            task_manager,
            path=path.rstrip("/"),
            auth=resolve_auth(auth, read_only_users=read_only_users),
            display_func_args=display_func_args,
            token_expiry=int(token_expiry),
            secret_key=secret_key,
            poll_interval=poll_interval,
            title=title,
            redact_keys=redact_keys,
            templates_dir=templates_dir,
            name=name,
            count_cap=count_cap,
            page_size=page_size,
            stats_ttl=stats_ttl,
        )
        if metrics_token is not None and not metrics_token.strip():
            raise ConfigurationError("metrics_token must not be empty")
        self.metrics_token = metrics_token
        if retention_days is not None:
            task_manager.retention_days = retention_days
        if auto_install:
            task_manager.install(app)
        else:
            task_manager.init_app(app)
        self._mount(app)
        self._wrap_lifespan(app)

    def _mount(self, app: FastAPI) -> None:
        try:
            app.add_middleware(SecurityHeaders, prefix=self.path)
        except RuntimeError as exc:  # Starlette: the app has started already
            raise ConfigurationError(
                "create TaskAdmin before the app starts (at import time, beside the app): "
                f"it adds middleware, which a started app refuses ({exc})"
            ) from exc
        extra = [Depends(dep.dependency) for dep in self.auth.dependencies[1:]]
        app.include_router(build_auth_router(self), prefix=self.path)
        app.include_router(build_page_router(self, extra), prefix=self.path)
        # Before the JSON API, whose GET /{task_id} would take /prometheus.
        app.include_router(
            build_prometheus_router(self, extra, token=self.metrics_token), prefix=self.path
        )
        app.include_router(build_api_router(self, extra), prefix=self.path)

    def _wrap_lifespan(self, app: FastAPI) -> None:
        original = app.router.lifespan_context
        admin = self

        @contextlib.asynccontextmanager
        async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
            async with original(app_) as state:
                admin._on_startup()
                yield state

        app.router.lifespan_context = lifespan

    def _on_startup(self) -> None:
        if self.auth.mode == "none":
            logger.warning(
                "TaskAdmin at %s/dashboard has no auth=: anyone who can reach this app can "
                "see task arguments, results and logs and retry, cancel or delete tasks",
                self.path,
            )


def _check_arguments(
    path: str,
    token_expiry: int,
    poll_interval: float,
    retention_days: float | None,
    count_cap: int,
    page_size: int,
) -> None:
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ConfigurationError(f"path must start with '/' and not be '/', got {path!r}")
    if token_expiry <= 0:
        raise ConfigurationError(f"token_expiry must be > 0 seconds, got {token_expiry}")
    if poll_interval <= 0:
        raise ConfigurationError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    if retention_days is not None and retention_days <= 0:
        raise ConfigurationError(f"retention_days must be > 0, got {retention_days}")
    if count_cap < 1 or not 1 <= page_size <= 500:
        raise ConfigurationError("count_cap must be >= 1 and page_size between 1 and 500")
