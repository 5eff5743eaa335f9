"""The FastAPI integration: ``ManagedBackgroundTasks``, the durability middleware,
request timing modes and fastapi-tasks' ``Tasks``.

Internal: import from :mod:`taskflow` instead.
"""
