"""Background loops (heartbeat, claims, schedules, retention) run their steps through a
:class:`StepGuard`: a failing step is logged and the loop carries on.

A database outage makes every step of every loop fail for as long as it lasts, so a
step's :class:`~taskflow.errors.DatabaseError` is logged once, as one line, when its
failures begin, and once more when that step succeeds again; any other error is a bug and
is logged with its traceback every time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from taskflow.errors import DatabaseError

logger = logging.getLogger("taskflow")

T = TypeVar("T")


class StepGuard:
    """Runs the steps of one component's background loops (``component`` names it in
    the log)."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._failing_since: dict[str, float] = {}  # step → when it began to fail

    async def __call__(self, what: str, step: Callable[[], Awaitable[T]]) -> T | None:
        """``await step()``; on an error, log it and return None."""
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except DatabaseError as exc:
            if what not in self._failing_since:
                self._failing_since[what] = time.monotonic()
                logger.warning(
                    "%s %s: the database does not answer; retrying until it does: %s",
                    self.component,
                    what,
                    exc,
                )
            return None
        except Exception:  # noqa: BLE001 - a background loop must never die
            logger.exception("%s %s step failed; will retry", self.component, what)
            return None
        began = self._failing_since.pop(what, None)
        if began is not None:
            logger.warning(
                "%s %s: the database answers again after %.1f s",
                self.component,
                what,
                time.monotonic() - began,
            )
        return result
