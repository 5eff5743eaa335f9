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
    """A schedule's timing: ``every`` seconds, or a five-field ``cron`` in ``timezone``.

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
        ValueError: neither or both of ``every``/``cron``, a non-positive interval, an
            invalid cron expression or an unknown timezone (the message quotes it).
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
    if cron is not None and (
        not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron)
    ):
        raise ConfigurationError(
            f"invalid cron expression {cron!r}: expected five fields", field="cron"
        )
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
    return cron.split()[1] != "*"


def _same_wall_time(candidate: datetime, previous: datetime) -> bool:
    def wall(moment: datetime) -> datetime:
        return moment.replace(tzinfo=None, second=0, microsecond=0)

    return wall(candidate) == wall(previous)
