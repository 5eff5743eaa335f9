"""The dashboard's form that creates a dynamic schedule: read it, and report every
problem at once.

Each field is checked on its own (function, trigger, timezone, keyword arguments,
name), so a form with a bad cron expression and bad JSON says both. The checks are the
ones :meth:`TaskGroup.add_dynamic_task_async` makes; it still makes them when the
schedule is created, so a race (a name taken meanwhile) is still refused.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskflow._schedules.triggers import make_trigger
from taskflow.admin._service import NewSchedule
from taskflow.admin._views import signature_text
from taskflow.errors import ConfigurationError

if TYPE_CHECKING:
    from taskflow.manager import TaskManager

FIELDS = ("function", "trigger", "cron", "every", "timezone", "kwargs", "name", "description")


@dataclass(slots=True)
class ScheduleForm:
    """A submitted form: its values, the problem of each field at fault, and the
    schedule it describes when there are none."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    schedule: NewSchedule | None = None

    @property
    def every_chosen(self) -> bool:
        """True when the trigger is an interval rather than a cron expression."""
        return self.values.get("trigger") == "every"


def form_values(raw: Any) -> dict[str, str]:
    """The form's fields, stripped (a missing field is empty)."""
    return {key: str(raw.get(key) or "").strip() for key in FIELDS}


async def read_schedule_form(manager: TaskManager, values: dict[str, str]) -> ScheduleForm:
    """Check every field of the form; the schedule is set only when all are valid."""
    form = ScheduleForm(values=values)
    func = _check_function(manager, form)
    every = _check_trigger(form)
    kwargs = _check_kwargs(form, func)
    if values["name"] and await manager.get_schedule(values["name"]) is not None:
        form.errors["name"] = f"a schedule named {values['name']!r} already exists"
    if form.errors:
        return form
    group, _, function = values["function"].partition(".")
    form.schedule = NewSchedule(
        task_group_name=group,
        function_name=function,
        cron_expression=None if form.every_chosen else values["cron"],
        every=every,
        timezone=values["timezone"] or "UTC",
        kwargs=kwargs,
        name=values["name"] or None,
        description=values["description"] or None,
    )
    return form


def _check_function(manager: TaskManager, form: ScheduleForm) -> Any:
    """The chosen TaskGroup function, or None (with the field's problem noted)."""
    group_name, dot, function = form.values["function"].partition(".")
    if not dot or not group_name or not function:
        form.errors["function"] = "choose a task group function"
        return None
    group = manager.task_groups.get(group_name)
    if group is None:
        form.errors["function"] = f"no task group named {group_name!r}"
        return None
    func = group.functions.get(function)
    if func is None:
        form.errors["function"] = f"no function {function!r} in task group {group_name!r}"
    return func


def _check_trigger(form: ScheduleForm) -> float | None:
    """The interval in seconds (None for a cron trigger); notes the problems of the
    trigger's field and of the timezone."""
    values = form.values
    every: float | None = None
    if form.every_chosen:
        try:
            every = float(values["every"])
        except ValueError:
            form.errors["every"] = (
                f"the interval must be a number of seconds, got {values['every']!r}"
            )
    elif not values["cron"]:
        form.errors["cron"] = "enter a cron expression, like */15 * * * *"
    timezone = values["timezone"] or "UTC"
    if "every" not in form.errors and "cron" not in form.errors:
        cron = None if form.every_chosen else values["cron"]
        _note(form, lambda: make_trigger(every=every, cron=cron, timezone="UTC"))
    _note(form, lambda: make_trigger(every=60.0, cron=None, timezone=timezone))
    return every


def _note(form: ScheduleForm, check: Any) -> None:
    """Run a trigger check; its error goes to the field it names (and is noted once)."""
    try:
        check()
    except ConfigurationError as exc:
        name = exc.field if exc.field in FIELDS else "cron"
        form.errors.setdefault(name, str(exc))


def _check_kwargs(form: ScheduleForm, func: Any) -> dict[str, Any]:
    """The keyword arguments (a JSON object that fits the function's signature)."""
    text = form.values["kwargs"] or "{}"
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        form.errors["kwargs"] = f"kwargs is not valid JSON: {exc.msg} (line {exc.lineno})"
        return {}
    if not isinstance(kwargs, dict):
        form.errors["kwargs"] = 'kwargs must be a JSON object, like {"team": "ops"}'
        return {}
    if func is None:
        return kwargs
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return kwargs  # no signature to check against: the group checks when it creates
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        shown = f"{form.values['function']}{signature_text(func)}"
        form.errors["kwargs"] = f"kwargs do not fit {shown}: {exc}"
    return kwargs
