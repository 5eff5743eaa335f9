"""Server-rendered bar charts: geometry computed here, SVG written by a template.

No JavaScript and no inline styles (the Content-Security-Policy forbids them): bars are
``<rect>`` elements with classes and a ``<title>`` tooltip each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from taskflow._store.series import Buckets

WIDTH = 600
HEIGHT = 140
PLOT_TOP = 16
PLOT_BOTTOM = 120
GAP = 1.0


@dataclass(slots=True)
class Bar:
    """One bucket: a green part (successes) under a red part (failures)."""

    x: float
    width: float
    ok_y: float
    ok_height: float
    bad_y: float
    bad_height: float
    label: str


@dataclass(slots=True)
class Chart:
    """A throughput chart: bars, axis labels and totals."""

    title: str
    bars: list[Bar] = field(default_factory=list)
    peak: int = 0
    succeeded: int = 0
    failed: int = 0
    axis: list[tuple[float, str, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    plot_bottom: int = PLOT_BOTTOM
    plot_top: int = PLOT_TOP

    @property
    def finished(self) -> int:
        """Tasks that finished in the chart's window."""
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed share of finished tasks (None when nothing finished)."""
        return self.failed / self.finished if self.finished else None


def throughput_chart(
    buckets: Buckets, *, title: str, ok: tuple[str, ...], bad: tuple[str, ...]
) -> Chart:
    """A chart of ``buckets``: statuses in ``ok`` stack green, those in ``bad`` red."""
    successes = _sum_rows(buckets, ok)
    failures = _sum_rows(buckets, bad)
    chart = Chart(title=title, succeeded=sum(successes), failed=sum(failures))
    chart.peak = max((a + b for a, b in zip(successes, failures, strict=True)), default=0)
    slot = WIDTH / max(buckets.count, 1)
    scale = (PLOT_BOTTOM - PLOT_TOP) / chart.peak if chart.peak else 0.0
    for index, (good, failed) in enumerate(zip(successes, failures, strict=True)):
        start = buckets.start + timedelta(seconds=index * buckets.size)
        ok_height = good * scale
        bad_height = failed * scale
        chart.bars.append(
            Bar(
                x=round(index * slot + GAP / 2, 2),
                width=round(max(slot - GAP, 0.5), 2),
                ok_y=round(PLOT_BOTTOM - ok_height, 2),
                ok_height=round(ok_height, 2),
                bad_y=round(PLOT_BOTTOM - ok_height - bad_height, 2),
                bad_height=round(bad_height, 2),
                label=f"{_clock(start, buckets.size)}: {good} succeeded, {failed} failed",
            )
        )
    chart.axis = _axis(buckets, slot)
    return chart


def _sum_rows(buckets: Buckets, statuses: tuple[str, ...]) -> list[int]:
    totals = [0] * buckets.count
    for status in statuses:
        for index, value in enumerate(buckets.counts.get(status, [])):
            totals[index] += value
    return totals


def _axis(buckets: Buckets, slot: float) -> list[tuple[float, str, str]]:
    return axis_marks(buckets.start, buckets.size, buckets.count, slot)


def axis_marks(first: datetime, size: int, count: int, slot: float) -> list[tuple[float, str, str]]:
    """Four evenly spaced time labels under the bars: ``(x, text, anchor)``; the outer
    ones are anchored at the chart's edges so they are never cut off."""
    last = count - 1
    marks = []
    for index in sorted({0, count // 3, 2 * count // 3, last}):
        start = first + timedelta(seconds=index * size)
        if index == 0:
            x, anchor = 0.0, "start"
        elif index == last:
            x, anchor = float(WIDTH), "end"
        else:
            x, anchor = round(index * slot + slot / 2, 2), "middle"
        marks.append((x, _clock(start, size), anchor))
    return marks


def clock(moment: datetime, size: int) -> str:
    """A bucket's start as its axis label: ``"14:05"``, or ``"Dec 07"`` for days."""
    return _clock(moment, size)


def _clock(moment: datetime, size: int) -> str:
    return moment.astimezone(UTC).strftime("%H:%M" if size < 86400 else "%b %d")


# -- line charts -------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One series of a line chart: its name, CSS class, and the polylines that draw it
    (a bucket without a value breaks the line)."""

    name: str
    css: str
    segments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Column:
    """The hover target of one bucket: its place and the numbers of its tooltip."""

    x: float
    width: float
    label: str


@dataclass(slots=True)
class LineChart:
    """A line chart of a few series over the same buckets, with a table of its numbers
    (the fallback of the picture)."""

    title: str
    summary: str
    lines: list[Line] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    peak_label: str = ""
    axis: list[tuple[float, str, str]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    plot_bottom: int = PLOT_BOTTOM
    plot_top: int = PLOT_TOP


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """A series to draw: name, CSS class (``flow-in``, ``flow-out``, ...), values."""

    name: str
    css: str
    values: list[float | None]


def line_chart(
    *,
    title: str,
    summary: str,
    first: datetime,
    size: int,
    series: list[SeriesSpec],
    text: Callable[[float | None], str],
    peak_text: Callable[[float], str],
) -> LineChart:
    """A chart of ``series`` (one value per ``size``-second bucket from ``first``);
    ``text`` writes a value in tooltips and the table, ``peak_text`` the top gridline's
    label."""
    count = len(series[0].values) if series else 0
    peak = max((value for spec in series for value in spec.values if value), default=0.0)
    chart = LineChart(title=title, summary=summary)
    chart.peak_label = peak_text(peak) if peak else ""
    slot = WIDTH / max(count, 1)
    scale = (PLOT_BOTTOM - PLOT_TOP) / peak if peak else 0.0
    for spec in series:
        line = Line(name=spec.name, css=spec.css)
        points: list[str] = []
        for index, value in enumerate(spec.values):
            if value is None:
                _close(line, points)
                points = []
                continue
            x, y = round(index * slot + slot / 2, 2), round(PLOT_BOTTOM - value * scale, 2)
            points.append(f"{x},{y}")
        _close(line, points)
        chart.lines.append(line)
    chart.headers = ["Time", *(spec.name for spec in series)]
    for index in range(count):
        start = first + timedelta(seconds=index * size)
        values = [text(spec.values[index]) for spec in series]
        chart.rows.append([_clock(start, size), *values])
        label = ", ".join(
            f"{spec.name} {value}" for spec, value in zip(series, values, strict=True)
        )
        chart.columns.append(
            Column(
                x=round(index * slot, 2),
                width=round(slot, 2),
                label=f"{_clock(start, size)}: {label}",
            )
        )
    chart.axis = axis_marks(first, size, count, slot) if count else []
    return chart


def _close(line: Line, points: list[str]) -> None:
    if len(points) == 1:  # a lone point: a zero-length segment shows as a dot
        points = [points[0], points[0]]
    if points:
        line.segments.append(" ".join(points))
