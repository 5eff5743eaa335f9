"""When schedules fire: fixed intervals and cron expressions in an IANA timezone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from taskflow.errors import ConfigurationError

# The longest interval (100 years): a longer one would overflow a datetime.
MAX_EVERY = 100 * 365.25 * 86400


@dataclass(frozen=True, slots=True)
class Trigger:
    """A schedule's timing: ``every`` seconds, or a five-field ``cron`` (or an alias such
    as ``@daily``, see :data:`CRON_ALIASES`) in ``timezone``.

    Cron follows the timezone's wall clock. In a daylight-saving gap a fixed-time job
    runs at the first valid minute after it; in a repeated hour it runs once (the first
    occurrence), while jobs with ``*`` in the hour field run on real time in both.
    """

    every: float | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def first_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment`` (for a new schedule)."""
        if self.every is not None:
            return moment + timedelta(seconds=self.every)
        return self._cron_after(moment)

    def next_after(self, slot: datetime, now: datetime) -> datetime:
        """The next firing time after slot ``slot``, later than ``now``; an interval keeps
        its phase (slot + k × every) so restarts and deploys do not shift it."""
        if self.every is not None:
            behind = max((now - slot).total_seconds(), 0.0)
            steps = math.floor(behind / self.every) + 1
            return slot + timedelta(seconds=steps * self.every)
        return self._cron_after(max(slot, now), previous=slot)

    def _cron_after(self, moment: datetime, previous: datetime | None = None) -> datetime:
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        candidate = croniter(self.cron, moment.astimezone(zone)).get_next(datetime)
        if (
            previous is not None
            and _fixed_hours(self.cron)
            and _same_wall_time(candidate, previous.astimezone(zone))
        ):
            candidate = croniter(self.cron, candidate).get_next(datetime)
        return candidate.astimezone(UTC)

    def describe(self) -> str:
        """Human-readable trigger, e.g. ``every 300s`` or ``cron 0 9 * * * (UTC)``."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron} ({self.timezone})"


def make_trigger(*, every: float | None, cron: str | None, timezone: str = "UTC") -> Trigger:
    """Validate and build a trigger.

    Raises:
        ConfigurationError: (a ``ValueError``) neither or both of ``every``/``cron``, a
            non-positive interval, an invalid cron expression (the message names the
            field at fault, see :func:`cron_problem`) or an unknown timezone.
    """
    if (every is None) == (cron is None):
        raise ConfigurationError("give exactly one of every= or cron=", field="cron")
    if every is not None and (
        isinstance(every, bool)
        or not isinstance(every, int | float)
        or not 0 < every <= MAX_EVERY  # also refuses NaN and infinity
    ):
        raise ConfigurationError(
            f"every must be a positive number of seconds up to 100 years, got {every!r}",
            field="every",
        )
    if cron is not None:
        problem = cron_problem(cron)
        if problem:
            shown = cron[:200] if isinstance(cron, str) else cron
            raise ConfigurationError(f"invalid cron expression {shown!r}: {problem}", field="cron")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        # OSError: a name too long for a file name of the tz database
        shown = timezone[:100] if isinstance(timezone, str) else timezone
        raise ConfigurationError(f"unknown timezone {shown!r}", field="timezone") from exc
    trigger = Trigger(
        every=float(every) if every is not None else None, cron=cron, timezone=timezone
    )
    if cron is not None:
        try:
            trigger.first_after(datetime.now(UTC))
        except (CroniterError, ValueError, OverflowError) as exc:
            # Valid fields that never match a date (``0 0 30 2 *``: February 30th).
            raise ConfigurationError(
                f"cron expression {cron!r} never fires (no such date)", field="cron"
            ) from exc
    return trigger


def _fixed_hours(cron: str) -> bool:
    return _five_fields(cron)[1] != "*"


# -- validation ---------------------------------------------------------------------------

# The nicknames croniter (fastapi-taskflow) and cronsim (fastapi-task-manager) accept, with
# the five fields each stands for. ``@reboot`` has no firing time and is refused.
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i
    kind: str = ""  # "month" or "day" for the message about an unknown name


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, "month"),
    _Field("day-of-week", 0, 7, _DAYS, "day"),
)


def cron_problem(cron: object) -> str | None:
    """What is wrong with a cron expression, or None when taskflow accepts it.

    Accepted: five fields (minute hour day-of-month month day-of-week, with croniter's
    syntax: lists, ranges, steps, month and day names, ``L``, ``W`` and ``#``) or one of
    :data:`CRON_ALIASES`. The answer names the field and the value at fault, e.g.
    ``hour field '25' is out of range 0-23``.
    """
    if not isinstance(cron, str):
        return f"expected a string, got {type(cron).__name__}"
    fields = cron.split()
    if len(fields) == 1 and fields[0].startswith("@"):
        if fields[0].lower() in CRON_ALIASES:
            return None
        return f"{fields[0][:50]} is not supported; use five fields or one of " + ", ".join(
            CRON_ALIASES
        )
    if len(fields) != 5:
        return (
            "expected five fields (minute hour day-of-month month day-of-week) or one of "
            f"{', '.join(CRON_ALIASES)}, got {len(fields)} field{'s' if len(fields) != 1 else ''}"
        )
    if croniter.is_valid(cron):
        return None
    for spec, text in zip(_FIELDS, fields, strict=True):
        problem = _field_problem(spec, text)
        if problem:
            return problem
    try:  # a combination croniter refuses although each field looks right
        croniter(cron)
    except (CroniterError, ValueError) as exc:
        return str(exc)
    return "croniter cannot parse it"


def _five_fields(cron: str) -> list[str]:
    """The five fields of a valid expression (an alias is expanded)."""
    return CRON_ALIASES.get(cron.strip().lower(), cron).split()


def _field_problem(spec: _Field, text: str) -> str | None:
    """The first thing wrong with one field, or None if nothing specific is found."""
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return f"{spec.name} field {text!r}: step {step!r} must be a whole number above 0"
        if base in ("*", "?"):
            continue
        for value in base.split("-", 1):
            problem = _value_problem(spec, text, value)
            if problem:
                return problem
    return None


def _value_problem(spec: _Field, text: str, value: str) -> str | None:
    """An out-of-range number or an unknown name in one field."""
    where = f"{spec.name} field {text!r}" + ("" if value == text else f": {value!r}")
    core = value.split("#", 1)[0] if spec.kind == "day" else value
    if spec.name == "day-of-month":
        core = core.removesuffix("W")
        if core == "L":
            return None
    if core.isdigit():
        if not spec.low <= int(core) <= spec.high:
            return f"{where} is out of range {spec.low}-{spec.high}"
        return None
    if core.isalpha() and spec.names:
        if core.upper() in spec.names:
            return None
        return (
            f"{where} is not a {spec.kind} name ({spec.names[0]}-{spec.names[-1]}) "
            f"or a number {spec.low}-{spec.high}"
        )
    if not core:
        return f"{where} is empty"
    if not core.isalnum() or (core.isalpha() and not spec.names):
        return f"{where} is not a number {spec.low}-{spec.high}"
    return None


def _same_wall_time(candidate: datetime, previous: datetime) -> bool:
    def wall(moment: datetime) -> datetime:
        return moment.replace(tzinfo=None, second=0, microsecond=0)

    return wall(candidate) == wall(previous)
