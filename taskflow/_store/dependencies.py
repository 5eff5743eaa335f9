"""The rule that releases a task waiting for its dependencies, shared by the SQL and the
memory store."""

from __future__ import annotations

from collections.abc import Sequence

from taskflow._store.schema import TERMINAL_STATUSES

SWEEP_BATCH = 500  # blocked tasks one sweep looks at
# The steps a workflow's retry runs again (and resolves as ``retried``).
RETRIED_STATUSES = ("failed", "interrupted", "cancelled", "rejected")
_ENDED = frozenset(TERMINAL_STATUSES)


def dependency_verdict(statuses: Sequence[tuple[str, str | None]], mode: str | None) -> str | None:
    """What to do with a blocked task whose dependencies are ``statuses`` (each the
    dependency's id and status, None for one that was deleted) and whose
    ``on_dependency_failure`` is ``mode``: None while one has not ended, ``""`` to run
    it, else the reason it ends cancelled (the first dependency that did not succeed)."""
    if any(status is not None and status not in _ENDED for _dep, status in statuses):
        return None
    for dep, status in statuses:
        if status != "success" and mode != "run":
            return f"dependency {dep} ended {status or 'deleted'}"
    return ""
