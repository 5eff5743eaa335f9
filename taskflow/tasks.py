"""fastapi-tasks' ``tasks`` module: ``from fastapi_tasks.tasks import Task`` becomes
``from taskflow.tasks import Task``.

``TasksBatch`` is what ``tasks.after_route`` and ``tasks.after_response`` are.
fastapi-tasks' ``TasksScheduler`` (built by hand from an anyio task group kept on
``request.state``) has no equivalent: every task here is a durable row run by the
TaskManager, so use the ``Tasks`` dependency (see docs/migrating.md).
"""

from taskflow._engine.registry import TaskConfig
from taskflow._fastapi.timing import Task, TaskErrorHandler
from taskflow._fastapi.timing import TimingBatch as TasksBatch

__all__ = ["Task", "TaskConfig", "TaskErrorHandler", "TasksBatch"]
