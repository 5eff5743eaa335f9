"""Audit entries for people: details as words and numbers, ids as links.

An entry's ``detail`` is the JSON object the action stored (``{"task_ids": [...],
"dispatched": 2}``). :func:`audit_details` turns it into labelled values; a value that
names a task, a schedule, a function or a filter carries the dashboard route that
shows it, and the templates make it a link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from taskflow._store.rows import AuditRow

# Detail keys whose values are task ids, with their labels.
TASK_KEYS = {
    "task_id": "task",
    "task_ids": "tasks",
    "new_task_id": "new task",
    "new_task_ids": "new tasks",
    "original_task_id": "original",
}
LABELS = {
    "dispatched": "replayed",
    "func_name": "function",
    "max_size": "max size",
    "runs_filter": "filter",
}
SCHEDULE_ACTIONS = ("run_now", "pause", "resume", "create_schedule", "delete_schedule")
QUEUE_ACTIONS = ("pause_queue", "resume_queue")
WORKFLOW_ACTIONS = ("cancel_workflow", "retry_workflow")
# Actions whose stored name does not read as words.
ACTION_WORDS = {
    "pause_queue": "pause queue",
    "resume_queue": "resume queue",
    "cancel_workflow": "cancel workflow",
    "retry_workflow": "retry workflow",
}
# Bulk actions of the Runs and Failures pages: one entry for many tasks.
ACTION_WORDS |= {
    f"bulk_{verb}": f"{verb} (bulk)" for verb in ("cancel", "delete", "retry", "discard")
}
_TASK_ID = re.compile(r"^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class AuditValue:
    """One value to show, and the dashboard page it links to (``route`` None: text).

    Attributes:
        text: what is shown.
        route: the short route name of the link, or None.
        query: the link's query string.
        params: the route's path parameters.
        title: the link's tooltip (a task's full id).
    """

    text: str
    route: str | None = None
    query: str = ""
    params: dict[str, str] = field(default_factory=dict)
    title: str = ""


def audit_details(entry: AuditRow) -> list[tuple[str, list[AuditValue]]]:
    """The entry's details as ``(label, values)`` pairs, in the stored order."""
    return [
        (TASK_KEYS.get(key) or LABELS.get(key) or key.replace("_", " "), _values(key, value))
        for key, value in (entry.detail or {}).items()
    ]


def audit_target(entry: AuditRow) -> AuditValue:
    """What the action was on: a task, a schedule (its runs), a queue or a workflow
    link to the page that shows it; anything else as text."""
    target = entry.target
    if entry.action in WORKFLOW_ACTIONS:  # workflow ids look like task ids
        return AuditValue(target, route="workflow", params={"workflow_id": target})
    if _is_task_id(target):
        return _task(target)
    if entry.action in SCHEDULE_ACTIONS:
        query = urlencode({"tag": f"schedule={target}"})
        return AuditValue(target, route="runs", query=query, title="runs of this schedule")
    if entry.action == "update_queue":
        return AuditValue(target, route="runs", query=urlencode({"queue": target}))
    if entry.action in QUEUE_ACTIONS:
        return AuditValue(target, route="queues", title="the Queues page")
    return AuditValue(target)


def audit_action(entry: AuditRow) -> str:
    """The action in words (``pause queue``)."""
    return ACTION_WORDS.get(entry.action, entry.action)


def _values(key: str, value: Any) -> list[AuditValue]:
    items = value if isinstance(value, list | tuple) else [value]
    if key in TASK_KEYS:
        return [_task(item) if _is_task_id(item) else _plain(item) for item in items]
    if key == "filter" and isinstance(value, str) and value != "all failures":
        return [AuditValue(value, route="failures", query=value)]
    if key == "runs_filter" and isinstance(value, str) and value != "all runs":
        return [AuditValue(value, route="runs", query=value)]
    if key in ("function", "func_name") and isinstance(value, str) and value:
        return [AuditValue(value, route="runs", query=urlencode({"func": value}))]
    if not items:
        return [AuditValue("none")]
    return [_plain(item) for item in items]


def _is_task_id(value: Any) -> bool:
    """True for text shaped like a task id (only those become links: an id given to
    the API may be any text)."""
    return isinstance(value, str) and _TASK_ID.match(value) is not None


def _task(task_id: str) -> AuditValue:
    return AuditValue(task_id[:8], route="task", params={"task_id": task_id}, title=task_id)


def _plain(value: Any) -> AuditValue:
    return AuditValue(_text(value))


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value)
    return str(value)
