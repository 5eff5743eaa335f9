"""What this process ran since it started: counters and attempt durations, by function
and queue, fed by the runner's lifecycle transitions.

The figures are per process, as Prometheus expects of a counter: every process counts
only the attempts it ran itself, so scraping each process and summing gives the total
of the whole deployment. :data:`PROCESS_METRICS` is the one instance of a process;
the dashboard's ``/prometheus`` endpoint reads a :meth:`ProcessMetrics.snapshot` of it.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

__all__ = ["DURATION_BUCKETS", "PROCESS_METRICS", "Histogram", "MetricsSnapshot", "ProcessMetrics"]

#: Upper bounds (seconds) of the attempt duration histogram's buckets; ``+Inf`` follows.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

# Statuses that end a task's life in this process (a retry is not one: the task runs again).
_FINAL = frozenset({"success", "failed", "cancelled", "interrupted"})

# (function, queue) and (function, queue, status): the label values of a series.
Key = tuple[str, str]
StatusKey = tuple[str, str, str]


@dataclass(slots=True)
class Histogram:
    """Observations of one series: per-bucket counts (not cumulative; the last one is
    ``+Inf``), their sum and their number."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def copy(self) -> Histogram:
        """An independent copy."""
        return Histogram(list(self.counts), self.total, self.count)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The counters at one moment.

    Attributes:
        started: attempts started, by (function, queue).
        finished: tasks that reached a final status, by (function, queue, status).
        retries: failed attempts that will be retried, by (function, queue).
        durations: seconds each ended attempt ran, by (function, queue).
        since: when counting began (Unix time): the process start, in effect.
    """

    started: dict[Key, int]
    finished: dict[StatusKey, int]
    retries: dict[Key, int]
    durations: dict[Key, Histogram]
    since: float


class ProcessMetrics:
    """Counters of the attempts this process ran; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[Key, int] = {}
        self._finished: dict[StatusKey, int] = {}
        self._retries: dict[Key, int] = {}
        self._durations: dict[Key, Histogram] = {}
        self._since = time.time()

    def record(self, func_name: str, queue: str, label: str, duration: float | None) -> None:
        """Count one lifecycle transition of an attempt this process ran.

        Args:
            func_name: the task's function.
            queue: the task's queue.
            label: the transition, as :attr:`~taskflow.observers.LifecycleEvent.label`
                names it (``"running"``, ``"retrying"``, a final status).
            duration: seconds the attempt ran, for the end of one.
        """
        key = (func_name, queue)
        with self._lock:
            if label == "running":
                self._started[key] = self._started.get(key, 0) + 1
                return
            if label == "retrying":
                self._retries[key] = self._retries.get(key, 0) + 1
            elif label in _FINAL:
                status_key = (*key, label)
                self._finished[status_key] = self._finished.get(status_key, 0) + 1
            if duration is not None:
                self._durations.setdefault(key, Histogram()).observe(max(duration, 0.0))

    def snapshot(self) -> MetricsSnapshot:
        """A consistent copy of every counter."""
        with self._lock:
            return MetricsSnapshot(
                started=dict(self._started),
                finished=dict(self._finished),
                retries=dict(self._retries),
                durations={key: value.copy() for key, value in self._durations.items()},
                since=self._since,
            )


#: The counters of this process.
PROCESS_METRICS = ProcessMetrics()
