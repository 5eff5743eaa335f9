"""The engine: how a task gets in (submission, intake), waits (dispatcher), runs
(runner, executors) and is shared with other processes (coordination, retention).

Internal: import from :mod:`taskflow` instead.
"""
