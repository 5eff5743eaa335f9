"""fastapi-taskflow's ``fastapi_taskflow.loggers`` import path: the observer types, so
that ``from taskflow.loggers import FileLogger, TaskObserver`` works after changing only
the import. They live in :mod:`taskflow.observers`; ``StdoutLogger`` and
``InMemoryLogger`` in this package.
"""

from taskflow.loggers.memory import InMemoryLogger
from taskflow.loggers.stdout import StdoutLogger
from taskflow.observers import FileLogger, LifecycleEvent, LogEvent, LoggerChain, TaskObserver

__all__ = [
    "FileLogger",
    "InMemoryLogger",
    "LifecycleEvent",
    "LogEvent",
    "LoggerChain",
    "StdoutLogger",
    "TaskObserver",
]
