"""Filters of the run lists, read from (and written back to) the URL's query string."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from taskflow._store.dashboard import SORTS, Cursor, TaskFilter
from taskflow.admin._util import decode_cursor, parse_moment, utcnow
from taskflow.records import TaskStatus

STATUSES = tuple(status.value for status in TaskStatus)
SOURCES = ("manual", "scheduled", "retry")
MAX_LIMIT = 500
# Sorting by duration reads every task of the window (no index can hold a duration), so
# without a chosen window it covers the last 15 minutes.
DURATION_WINDOW = "15m"


class Params(Protocol):
    """Query parameters or form fields: anything with ``get(name)``."""

    def get(self, name: str, /) -> Any:
        """The value of ``name``, or None."""


class QueryError(ValueError):
    """A filter in the query string is invalid (the message says which)."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The filters, sort order and page position of a run list.

    ``status`` may list several statuses separated by commas; ``tag`` is ``key=value``
    (or ``key:value``); ``window`` is a span back from now (``15m``, ``6h``, ``7d``);
    ``since``/``until`` are ISO times or windows; ``q`` searches ids, function names
    and errors; ``owner`` is the id of the instance that holds the tasks.
    """

    status: str = ""
    func: str = ""
    queue: str = ""
    tag: str = ""
    source: str = ""
    window: str = ""
    since: str = ""
    until: str = ""
    q: str = ""
    owner: str = ""
    resolved: str = ""
    sort: str = "created"
    after: str = ""
    before: str = ""
    limit: int = 50

    @classmethod
    def from_params(cls, params: Params, *, default_limit: int = 50) -> RunQuery:
        """Read the query from request parameters (``func_name`` is an alias of ``func``).

        Raises:
            QueryError: an invalid limit, or NUL in a filter.
        """
        values = {
            item.name: str(params.get(item.name) or "").strip()
            for item in fields(cls)
            if item.name != "limit"
        }
        values["func"] = values["func"] or str(params.get("func_name") or "").strip()
        for name, value in values.items():
            if "\x00" in value:
                raise QueryError(f"{name} must not contain NUL characters")
        values["sort"] = values["sort"] or "created"
        try:
            limit = int(params.get("limit") or default_limit)
        except ValueError as exc:
            raise QueryError("limit must be a number") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        return cls(**values, limit=limit)

    def statuses(self) -> tuple[str, ...]:
        """The statuses asked for.

        Raises:
            QueryError: an unknown status.
        """
        wanted = tuple(part.strip() for part in self.status.split(",") if part.strip())
        unknown = [status for status in wanted if status not in STATUSES]
        if unknown:
            raise QueryError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUSES)}")
        return wanted

    def task_filter(
        self, *, now: datetime | None = None, statuses: tuple[str, ...] = ()
    ) -> TaskFilter:
        """The store filter of this query (``statuses`` replaces the status filter).

        Raises:
            QueryError: an invalid status, source, tag or time.
        """
        now = now or utcnow()
        if self.source and self.source not in SOURCES:
            raise QueryError(f"unknown source {self.source!r}; use one of {', '.join(SOURCES)}")
        if self.sort not in SORTS:
            raise QueryError(f"unknown sort {self.sort!r}; use one of {', '.join(SORTS)}")
        try:
            since = parse_moment(self.since or self.window or self._default_window(), now=now)
            until = parse_moment(self.until, now=now)
        except ValueError as exc:
            raise QueryError(str(exc)) from exc
        return TaskFilter(
            statuses=statuses or self.statuses(),
            func_name=self.func or None,
            queue=self.queue or None,
            source=self.source or None,
            tag=self._tag(),
            since=since,
            until=until,
            search=self.q or None,
            owner=self.owner or None,
        )

    @property
    def show_resolved(self) -> bool:
        """True when the Failures list also shows failures retried or discarded
        already (``resolved=1``)."""
        return self.resolved.lower() in ("1", "true", "yes", "on")

    def _default_window(self) -> str:
        return DURATION_WINDOW if self.sort == "duration" and not self.until else ""

    @property
    def duration_window_applied(self) -> bool:
        """True when the duration sort falls back to :data:`DURATION_WINDOW`."""
        return bool(self._default_window()) and not (self.since or self.window)

    def _tag(self) -> tuple[str, str] | None:
        if not self.tag:
            return None
        for separator in ("=", ":"):
            if separator in self.tag:
                key, _, value = self.tag.partition(separator)
                if key.strip():
                    return key.strip(), value.strip()
        raise QueryError(f"tag filter {self.tag!r} must be key=value")

    def cursors(self) -> tuple[Cursor | None, Cursor | None]:
        """``(after, before)`` page cursors.

        Raises:
            QueryError: a cursor that does not belong to this sort order.
        """
        try:
            return (
                decode_cursor(self.after, sort=self.sort),
                decode_cursor(self.before, sort=self.sort),
            )
        except ValueError as exc:
            raise QueryError(str(exc)) from exc

    @property
    def first_page(self) -> bool:
        """True without a page cursor (the page that live refresh keeps current)."""
        return not self.after and not self.before

    @property
    def filtered(self) -> bool:
        """True when any filter is set."""
        return any(
            (self.status, self.func, self.queue, self.tag, self.source, self.window, self.since)
        ) or bool(self.until or self.q or self.owner)

    @property
    def active_filters(self) -> int:
        """How many filters are set (a window counts once, however it is given)."""
        window = self.window or self.since or self.until
        parts = (self.status, self.func, self.queue, self.tag, self.source, window, self.q)
        return sum(1 for part in (*parts, self.owner) if part)

    def with_page(self, *, after: str | None = None, before: str | None = None) -> RunQuery:
        """The same filters at another page."""
        return replace(self, after=after or "", before=before or "")

    def query_string(self, **overrides: Any) -> str:
        """The non-default fields as a query string (``overrides`` replace fields)."""
        values: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        values.update(overrides)
        defaults = {"sort": "created", "limit": 50}
        kept = {
            key: value
            for key, value in values.items()
            if value not in ("", None) and defaults.get(key) != value
        }
        return urlencode(kept)
