"""The Overview's charts over a chosen window, filtered by queue and function.

Per bucket: tasks finished (succeeded and failed), enqueued and processed, the backlog
(tasks waiting) at the bucket's end, and the median and 95th-percentile wait from
creation to start. The numbers come from :meth:`DashboardStore.task_series`; this
module derives the successes, the backlog and the percentiles, and lays out the charts.
``GET {path}/stats/series`` returns the same numbers as JSON.

The backlog is derived backwards from the end of the window: a task waits from its
creation until it first leaves the queue (its start, or its end when it never started),
so the backlog at the end of bucket ``i`` is the backlog at the end of bucket ``i + 1``,
minus the tasks created in bucket ``i + 1``, plus those that left it in bucket ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from pydantic import BaseModel

from taskflow._store.dashboard import DashboardStore
from taskflow._store.series import Buckets, Series
from taskflow.admin._charts import Chart, LineChart, SeriesSpec, line_chart, throughput_chart
from taskflow.admin._util import duration_text, parse_moment
from taskflow.admin._views import BAD_STATUSES, OK_STATUSES

MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Window:
    """A choice of chart window: ``count`` buckets of ``size`` seconds, the last one
    holding the window's end."""

    key: str
    title: str
    size: int
    count: int
    unit: str  # one bucket, in words


WINDOWS = {
    window.key: window
    for window in (
        Window("1h", "Last hour", 60, 60, "minute"),
        Window("24h", "Last 24 hours", 3600, 24, "hour"),
    )
}
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True, slots=True)
class ChartQuery:
    """What the charts show: a window, and optionally one queue and one function.

    ``end`` (None: now) is a time inside the window's last bucket."""

    window: Window
    queue: str | None = None
    func: str | None = None
    end: datetime | None = None

    @property
    def key(self) -> str:
        """The statistics cache's key of this query."""
        end = self.end.isoformat() if self.end else ""
        return f"trends\x00{self.window.key}\x00{self.queue or ''}\x00{self.func or ''}\x00{end}"

    def query_string(self) -> str:
        """The URL query that asks for this chart (without the default window)."""
        params = {
            "window": self.window.key if self.window.key != DEFAULT_WINDOW else None,
            "queue": self.queue,
            "func": self.func,
            "end": self.end.isoformat() if self.end else None,
        }
        return urlencode({name: value for name, value in params.items() if value})


def read_chart_query(params: Mapping[str, str], *, now: datetime) -> tuple[ChartQuery, str | None]:
    """The chart query of a URL's parameters ``window``, ``queue``, ``func`` and ``end``
    (an ISO time or a window back from ``now``), and what is wrong with them, if
    anything (the defaults replace a wrong value)."""
    problems = []
    window = WINDOWS.get((params.get("window") or DEFAULT_WINDOW).strip())
    if window is None:
        problems.append(f"unknown window {params.get('window')!r}: use {', '.join(WINDOWS)}")
        window = WINDOWS[DEFAULT_WINDOW]
    names = {}
    for name in ("queue", "func"):
        value = (params.get(name) or "").strip()
        if len(value) > MAX_NAME or "\x00" in value:
            problems.append(f"invalid {name}")
            value = ""
        names[name] = value or None
    try:
        end = parse_moment(params.get("end"), now=now)
    except ValueError as exc:
        problems.append(str(exc))
        end = None
    query = ChartQuery(window=window, queue=names["queue"], func=names["func"], end=end)
    return query, "; ".join(problems) or None


@dataclass(slots=True)
class Trends:
    """The numbers of the charts (one value per bucket) and the charts drawn from them."""

    query: ChartQuery
    start: datetime
    size: int
    succeeded: list[int]
    failed: list[int]
    enqueued: list[int]
    processed: list[int]
    started: list[int]
    backlog: list[int]
    backlog_at_start: int
    wait_p50: list[float | None]
    wait_p95: list[float | None]
    wait_sampled: list[int]
    charts: list[Chart | LineChart] = field(default_factory=list)

    @property
    def bucket_starts(self) -> list[datetime]:
        """When each bucket starts."""
        return [self.start + timedelta(seconds=self.size * i) for i in range(len(self.enqueued))]

    @property
    def throughput(self) -> Chart:
        """The succeeded/failed bar chart."""
        chart = self.charts[0]
        assert isinstance(chart, Chart)
        return chart

    @property
    def lines(self) -> list[LineChart]:
        """The line charts: enqueued vs processed, backlog, wait time."""
        return [chart for chart in self.charts if isinstance(chart, LineChart)]


def window_start(window: Window, end: datetime) -> datetime:
    """The start of ``window`` whose last bucket holds ``end`` (buckets are aligned to
    whole minutes or hours)."""
    last = int(end.timestamp()) // window.size
    return datetime.fromtimestamp((last - window.count + 1) * window.size, tz=end.tzinfo)


async def trends(queries: DashboardStore, query: ChartQuery, *, now: datetime) -> Trends:
    """The charts of ``query``; the window ends with the bucket holding ``query.end``
    (or ``now``)."""
    window = query.window
    start = window_start(window, query.end or now)
    series = await queries.task_series(
        start=start,
        size=window.size,
        count=window.count,
        func_name=query.func,
        queue=query.queue,
        now=now,
    )
    backlog = backlog_per_bucket(series)
    finished = Buckets(start=start, size=window.size, count=window.count)
    finished.counts = {
        status: series.ended.get(status, [0] * window.count) for status in BAD_STATUSES
    }
    finished.counts["success"] = [
        processed - sum(ended[index] for ended in series.ended.values())
        for index, processed in enumerate(series.processed)
    ]
    result = Trends(
        query=query,
        start=start,
        size=window.size,
        succeeded=_sum(finished.counts, OK_STATUSES, window.count),
        failed=_sum(finished.counts, BAD_STATUSES, window.count),
        enqueued=series.enqueued,
        processed=series.processed,
        started=series.started,
        backlog=backlog,
        backlog_at_start=backlog[0] - series.enqueued[0] + _left(series, 0),
        wait_p50=[waits.percentile(0.5) for waits in series.waits],
        wait_p95=[waits.percentile(0.95) for waits in series.waits],
        wait_sampled=[waits.count for waits in series.waits],
    )
    title = _scope_title(query)
    result.charts = [
        throughput_chart(finished, title=f"Finished{title}", ok=OK_STATUSES, bad=BAD_STATUSES),
        *_line_charts(result, title),
    ]
    return result


def backlog_per_bucket(series: Series) -> list[int]:
    """Tasks waiting at the end of each bucket, derived backwards from the end of the
    window (see the module's docstring)."""
    backlog = [0] * series.count
    waiting = series.waiting_at_end
    for index in range(series.count - 1, -1, -1):
        backlog[index] = waiting
        waiting = waiting - series.enqueued[index] + _left(series, index)
    return backlog


def _left(series: Series, index: int) -> int:
    """Tasks that stopped waiting in bucket ``index``: started, or ended unstarted."""
    return series.started[index] + series.ended_unstarted[index]


def _sum(counts: Mapping[str, list[int]], statuses: tuple[str, ...], count: int) -> list[int]:
    totals = [0] * count
    for status in statuses:
        for index, value in enumerate(counts.get(status, [])):
            totals[index] += value
    return totals


def _scope_title(query: ChartQuery) -> str:
    parts = [f"queue {query.queue}" if query.queue else "", query.func or ""]
    shown = " · ".join(part for part in parts if part)
    return f" ({shown})" if shown else ""


def _count_text(value: float | None) -> str:
    return "–" if value is None else f"{int(value):,}"


def _line_charts(result: Trends, title: str) -> list[LineChart]:
    window = result.query.window
    per = f"per {window.unit}"
    flow = line_chart(
        title=f"Enqueued and processed{title}",
        summary=f"{sum(result.enqueued):,} enqueued · {sum(result.processed):,} processed",
        series=[
            SeriesSpec("enqueued", "flow-in", [float(v) for v in result.enqueued]),
            SeriesSpec("processed", "flow-out", [float(v) for v in result.processed]),
        ],
        text=_count_text,
        peak_text=lambda peak: f"{int(peak):,} {per}",
        first=result.start,
        size=result.size,
    )
    backlog = line_chart(
        title=f"Backlog{title}",
        summary=(
            f"{result.backlog_at_start:,} waiting at the start · {result.backlog[-1]:,} at the end"
        ),
        series=[SeriesSpec("waiting", "backlog", [float(v) for v in result.backlog])],
        text=_count_text,
        peak_text=lambda peak: f"{int(peak):,} waiting",
        first=result.start,
        size=result.size,
    )
    waits = [value for value in result.wait_p95 if value is not None]
    wait = line_chart(
        title=f"Wait before start{title}",
        summary=(
            f"slowest 95th percentile {duration_text(max(waits))}" if waits else "nothing started"
        ),
        series=[
            SeriesSpec("median", "wait-median", result.wait_p50),
            SeriesSpec("95th pct.", "wait-p95", result.wait_p95),
        ],
        text=duration_text,
        peak_text=duration_text,
        first=result.start,
        size=result.size,
    )
    return [flow, backlog, wait]


class SeriesOut(BaseModel):
    """``GET {path}/stats/series``: the Overview's chart numbers, one value per bucket.

    ``backlog`` is the number of tasks waiting (created, neither started nor finished) at
    each bucket's end; wait times are seconds from creation to start of the tasks that
    started in the bucket (``wait_sampled`` of them: all of those in closed minutes, whose
    percentiles are estimated from a histogram, plus a sample of at most about 250 per
    bucket of the last minutes, read from the task rows)."""

    window: str
    queue: str | None
    func: str | None
    bucket_seconds: int
    buckets: list[datetime]
    enqueued: list[int]
    processed: list[int]
    started: list[int]
    succeeded: list[int]
    failed: list[int]
    backlog: list[int]
    backlog_at_start: int
    wait_p50_seconds: list[float | None]
    wait_p95_seconds: list[float | None]
    wait_sampled: list[int]

    @classmethod
    def of(cls, trends: Trends) -> SeriesOut:
        """The API answer of ``trends``."""
        query = trends.query
        return cls(
            window=query.window.key,
            queue=query.queue,
            func=query.func,
            bucket_seconds=trends.size,
            buckets=trends.bucket_starts,
            enqueued=trends.enqueued,
            processed=trends.processed,
            started=trends.started,
            succeeded=trends.succeeded,
            failed=trends.failed,
            backlog=trends.backlog,
            backlog_at_start=trends.backlog_at_start,
            wait_p50_seconds=trends.wait_p50,
            wait_p95_seconds=trends.wait_p95,
            wait_sampled=trends.wait_sampled,
        )
