"""Prometheus's text exposition format (version 0.0.4), written by hand.

A :class:`Exposition` collects metric families (``# HELP`` and ``# TYPE`` lines followed
by their samples) and renders them as the text Prometheus scrapes. Label values and help
texts are escaped as the format requires; floats are written in Go's notation (``+Inf``,
``-Inf``, ``NaN``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["CONTENT_TYPE", "Exposition"]

#: The ``Content-Type`` of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]


class Exposition:
    """Metric families, in the order they are added."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        """Start a family: its ``# HELP`` and ``# TYPE`` lines.

        Args:
            name: the family's name; a counter's ends with ``_total``.
            kind: ``counter``, ``gauge`` or ``histogram``.
            help_text: one sentence on what it measures.
        """
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Labels, value: float) -> None:
        """Add one sample line of the current family."""
        self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self,
        name: str,
        labels: Labels,
        *,
        bounds: Sequence[float],
        counts: Sequence[int],
        total: float,
    ) -> None:
        """Add one histogram series: cumulative ``_bucket`` lines, ``_sum`` and ``_count``.

        Args:
            name: the family's name.
            labels: the series' labels (without ``le``).
            bounds: the buckets' upper bounds, ascending, without ``+Inf``.
            counts: observations per bucket, not cumulative, one more than ``bounds``
                (the last is ``+Inf``'s).
            total: the sum of the observations.
        """
        running = 0
        for bound, count in zip([*bounds, math.inf], counts, strict=True):
            running += count
            self.sample(f"{name}_bucket", {**labels, "le": _number(bound)}, running)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, running)

    def render(self) -> str:
        """The exposition text, ending with a newline."""
        return "\n".join(self._lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    pairs = ",".join(f'{key}="{_escape_value(value)}"' for key, value in labels.items())
    return "{" + pairs + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(value)
