"""The TaskAdmin dashboard: server-rendered pages, live fragments and a JSON API.

``TaskAdmin(app, task_manager)`` mounts everything; see :class:`TaskAdmin`.
"""

from taskflow.admin.app import TaskAdmin
from taskflow.admin.auth import CredentialsBackend, TaskAuthBackend

__all__ = ["CredentialsBackend", "TaskAdmin", "TaskAuthBackend"]
