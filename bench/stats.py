"""Small statistics helpers: medians and nearest-rank percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The median, or 0.0 for no values."""
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile (``quantile`` in 0..1), or 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(quantile * len(ordered))))
    return float(ordered[rank - 1])


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99 and max of a sample."""
    return {
        "count": len(values),
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else 0.0,
    }


def rounded(value: float, digits: int = 3) -> float:
    """``value`` rounded for the results file."""
    return round(float(value), digits)
