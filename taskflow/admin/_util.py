"""Small helpers of the dashboard: time windows, cursors, display formats."""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from taskflow._engine.job import utcnow as engine_clock
from taskflow._store.dashboard import Cursor

WINDOWS: dict[str, str] = {
    "15m": "last 15 minutes",
    "1h": "last hour",
    "6h": "last 6 hours",
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
}
_WINDOW = re.compile(r"^(\d{1,6})(m|min|h|hour|d|day)s?$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "hour": "hours", "d": "days"}
_UNITS["day"] = "days"
# The longest time window: 1,000 years back is still a valid date (longer ones overflow).
MAX_WINDOW = timedelta(days=365_250)
# Row ids (audit entries, log lines) are 64-bit integers on both databases.
MAX_ROW_ID = 2**63 - 1


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, by the engine's clock: the database's, so
    that "… ago", session expiry, the login window and history windows agree with the
    times the engine stamped, whatever this host's clock says."""
    return engine_clock()


def parse_window(text: str | None) -> timedelta | None:
    """``"15m"``, ``"6h"``, ``"7d"`` as a duration; ``""``/``"all"``/None as None.

    Raises:
        ValueError: any other text, or a window over 1,000 years.
    """
    if text is None or text.strip() in ("", "all"):
        return None
    match = _WINDOW.match(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid time window {text!r}: use <N>m, <N>h, <N>d or 'all'")
    window = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if window > MAX_WINDOW:
        raise ValueError(f"time window {text!r} is too long: at most 1,000 years")
    return window


def parse_moment(text: str | None, *, now: datetime) -> datetime | None:
    """An ISO 8601 time (UTC when it has no offset) or a window back from ``now``.

    Raises:
        ValueError: neither.
    """
    if text is None or not text.strip():
        return None
    try:
        window = parse_window(text)
    except ValueError:
        window = None
    else:
        return None if window is None else now - window
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        # OverflowError: a time whose offset moves it past year 1 or 9999 in UTC
        raise ValueError(f"invalid time {text!r}: use ISO 8601 or a window like 6h") from exc


def encode_cursor(cursor: Cursor | None) -> str | None:
    """A URL-safe text form of a keyset cursor."""
    if cursor is None:
        return None
    value = cursor.value
    data = [value.isoformat() if isinstance(value, datetime) else float(value), cursor.id]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def decode_cursor(text: str | None, *, sort: str) -> Cursor | None:
    """The cursor of :func:`encode_cursor`.

    Raises:
        ValueError: the text is not a cursor of this sort order.
    """
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value, task_id = json.loads(raw)
        if not isinstance(task_id, str) or "\x00" in task_id:
            raise ValueError("a cursor's task id is text without NUL")
        if sort == "duration":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("a duration cursor is a finite number")
            return Cursor(number, task_id)
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a time cursor has a UTC offset")
        return Cursor(moment.astimezone(UTC), task_id)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Anything but a cursor this module made: a hand-edited or truncated URL.
        raise ValueError("invalid page cursor") from exc


def capped(count: int, cap: int) -> str:
    """``"1,234"`` or ``"10,000+"`` for a count capped at ``cap``."""
    return f"{cap:,}+" if count > cap else f"{count:,}"


def duration_text(seconds: float | None) -> str:
    """``"85 ms"``, ``"4.2 s"``, ``"3 min 5 s"``, ``"2 h 4 min"``; ``"–"`` for None."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def elapsed_text(seconds: float | None) -> str:
    """How long something has been running, in whole seconds: ``"12 s"``, ``"3 min 5 s"``,
    ``"2 h 4 min"`` (``static/admin.js`` counts on in the same format)."""
    if seconds is None:
        return "–"
    return f"{max(int(seconds), 0)} s" if seconds < 60 else duration_text(seconds)


def ago_text(moment: datetime | None, *, now: datetime) -> str:
    """``"12 s ago"``, ``"in 5 min"``: a time relative to ``now``."""
    if moment is None:
        return "–"
    delta = (now - moment).total_seconds()
    future = delta < 0
    span = abs(delta)
    if span < 1:
        return "now"
    if span < 60:
        text = f"{span:.0f} s"
    elif span < 3600:
        text = f"{span // 60:.0f} min"
    elif span < 86400 * 2:
        text = f"{span // 3600:.0f} h"
    else:
        text = f"{span // 86400:.0f} d"
    return f"in {text}" if future else f"{text} ago"


def time_text(moment: datetime | None) -> str:
    """``"2025-11-24 15:01:02 UTC"``."""
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` when both are known."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile (nearest rank) of sorted ``values``; None if empty."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(fraction * len(values) + 0.5)) - 1))
    return values[index]


def jsonable(value: Any) -> Any:
    """A JSON-ready view of a decoded value (for display; storage uses the codec)."""
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return str(value)


def pretty_json(value: Any) -> str:
    """Indented JSON for display (non-JSON values as text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
