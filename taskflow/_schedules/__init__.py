"""Schedules: triggers, the scheduler loop, task groups, one-off firings and
fastapi-task-manager's management router.

Internal: import from :mod:`taskflow` instead.
"""
