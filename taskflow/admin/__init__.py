"""The TaskAdmin dashboard: server-rendered pages, live fragments and a JSON API.

``TaskAdmin(app, task_manager)`` mounts everything; see :class:`TaskAdmin`. Who may use
it is configured with ``auth=`` (see :mod:`taskflow.admin.auth`).

The other modules are private, and import one way: ``_app`` (``TaskAdmin``) mounts the
routers (``_pages`` with ``_actions`` and ``_login``, and ``_api``), which receive an
:class:`~taskflow.admin._context.AdminContext` (settings, store, guards, CSRF and flash
helpers); below it are the renderer, security, service, views and their helpers.
"""

from taskflow.admin._app import TaskAdmin
from taskflow.admin.auth import CredentialsBackend, TaskAuthBackend

__all__ = ["CredentialsBackend", "TaskAdmin", "TaskAuthBackend"]
