"""What a :class:`~taskflow.TaskManager` builds on top of its engine: the schedule
parts and fastapi-task-manager's management router, each given only what it uses
(none receives the manager)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskflow._engine.engine import Engine
from taskflow._engine.registry import TaskRegistry
from taskflow._engine.settings import Settings
from taskflow._payloads.payloads import Payloads
from taskflow._schedules.api import Schedules
from taskflow._schedules.groups import TaskGroups
from taskflow._schedules.management import build_router
from taskflow._schedules.management_actions import Management
from taskflow._schedules.once import OneOffs
from taskflow._schedules.scheduler import Scheduler
from taskflow.schema.health import HealthResponse

if TYPE_CHECKING:
    from fastapi import APIRouter

    from taskflow._compat.config import Config


@dataclass(frozen=True, slots=True)
class ScheduleParts:
    """The task groups, the scheduler that fires due slots, the schedule API and the
    one-off firings of one engine."""

    task_groups: TaskGroups
    scheduler: Scheduler
    schedules: Schedules
    one_offs: OneOffs


def build_schedules(engine: Engine, registry: TaskRegistry, payloads: Payloads) -> ScheduleParts:
    """The schedule parts over ``engine``, sharing the manager's registry and payloads."""
    groups = TaskGroups()
    scheduler = Scheduler(
        engine.runtime,
        payloads=payloads,
        registry=registry,
        intake=engine.intake,
        admit=engine.queues.admit_scheduled,
        groups=groups,
    )
    schedules = Schedules(
        engine.runtime,
        settings=engine.settings,
        registry=registry,
        scheduler=scheduler,
        payloads=payloads,
        groups=groups,
    )
    one_offs = OneOffs(
        engine.runtime,
        registry=registry,
        intake=engine.intake,
        payloads=payloads,
        durable=engine.configured_url is not None,
    )
    return ScheduleParts(groups, scheduler, schedules, one_offs)


def management_router(
    schedules: Schedules,
    settings: Settings,
    *,
    health: Callable[[], Awaitable[HealthResponse]],
    config: Callable[[], Config],
) -> APIRouter:
    """fastapi-task-manager's management API over ``schedules``; ``health`` and
    ``config`` answer ``GET /health`` and ``GET /config``."""
    management = Management(
        schedules=schedules,
        health=health,
        config=config,
        history_runs=lambda: settings.statistics_history_runs,
    )
    return build_router(management)
