"""Server-rendered bar charts: geometry computed here, SVG written by a template.

No JavaScript and no inline styles (the Content-Security-Policy forbids them): bars are
``<rect>`` elements with classes and a ``<title>`` tooltip each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from taskflow._store.dashboard import Buckets

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
    """Four evenly spaced time labels under the bars: ``(x, text, anchor)``; the outer
    ones are anchored at the chart's edges so they are never cut off."""
    last = buckets.count - 1
    marks = []
    for index in (0, buckets.count // 3, 2 * buckets.count // 3, last):
        start = buckets.start + timedelta(seconds=index * buckets.size)
        if index == 0:
            x, anchor = 0.0, "start"
        elif index == last:
            x, anchor = float(WIDTH), "end"
        else:
            x, anchor = round(index * slot + slot / 2, 2), "middle"
        marks.append((x, _clock(start, buckets.size), anchor))
    return marks


def _clock(moment: datetime, size: int) -> str:
    return moment.astimezone(UTC).strftime("%H:%M" if size < 86400 else "%b %d")
