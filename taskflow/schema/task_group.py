"""``GET /task-groups`` of the management router."""

from __future__ import annotations

from pydantic import BaseModel


class TaskGroup(BaseModel):
    """A task group and how many schedules it has (static and dynamic)."""

    name: str
    tags: list[str] | None = None
    allow_parallel: bool | None = None
    task_count: int = 0
