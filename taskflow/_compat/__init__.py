"""What exists only so that users of fastapi-taskflow, fastapi-task-manager and
fastapi-tasks switch by changing the import: their ``TaskManager`` surface, their
settings object and their sync task store.

The import paths the originals document (``taskflow.models``, ``.exceptions``,
``.periodic``, ``.tasks``, ``.executor``, ``.backends``, ``.loggers``, ``.schema``) are
modules of their own at the top of the package.

Internal: import from :mod:`taskflow` instead.
"""
