"""The shape of scenario results in ``results.json``.

A scenario result has a ``title``, a ``status`` (``ok``, ``error`` or ``skipped``), its
``setup`` and ``rows``. Each row is one line of the Markdown table: a ``figure`` (what
is measured), a ``unit``, ``values`` per variant (a number, or None with the reason in
``notes``) and an optional ``target``.
"""

from __future__ import annotations

from typing import Any

from bench.context import VARIANTS


def row(
    figure: str,
    unit: str,
    values: dict[str, float | None],
    notes: dict[str, str] | None = None,
    target: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One table row; variants missing from ``values`` are None with a note."""
    notes = dict(notes or {})
    full = {variant: values.get(variant) for variant in VARIANTS}
    for variant, value in full.items():
        if value is None:
            notes.setdefault(variant, "n/a")
    return {"figure": figure, "unit": unit, "values": full, "notes": notes, "target": target}


def target(what: str, value: float, goal: str, met: bool) -> dict[str, Any]:
    """A target check: ``what`` was measured as ``value`` against ``goal``."""
    return {"what": what, "value": value, "goal": goal, "met": bool(met)}


def scenario(
    title: str,
    setup: dict[str, Any],
    rows: list[dict[str, Any]],
    data: dict[str, Any] | None = None,
    *,
    status: str = "ok",
    reason: str | None = None,
) -> dict[str, Any]:
    """A scenario result."""
    result: dict[str, Any] = {"title": title, "status": status, "setup": setup, "rows": rows}
    if reason:
        result["reason"] = reason
    result["data"] = data or {}
    return result


def skipped_variants(unavailable: dict[str, str], wanted: tuple[str, ...]) -> dict[str, str]:
    """Notes for the wanted variants that could not run here."""
    return {v: f"skipped: {reason}" for v, reason in unavailable.items() if v in wanted}
