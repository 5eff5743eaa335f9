"""fastapi-taskflow's ``fastapi_taskflow.loggers.base`` import path (``LogEvent``,
``LifecycleEvent``, ``TaskObserver``); they live in :mod:`taskflow.observers`.
"""

from taskflow.observers import LifecycleEvent, LogEvent, TaskObserver

__all__ = ["LifecycleEvent", "LogEvent", "TaskObserver"]
