"""fastapi-taskflow's ``InMemoryLogger``: task events kept in lists, for tests."""

from __future__ import annotations

from taskflow.observers import LifecycleEvent, LogEvent, TaskObserver

__all__ = ["InMemoryLogger"]


class InMemoryLogger(TaskObserver):
    """Keep every event in memory so a test can assert on it.

    Events arrive through the manager's observer queue, shortly after they happen (wait
    for them, for example by polling until the expected event is there).

    Attributes:
        log_events: the :class:`~taskflow.observers.LogEvent` of each ``task_log()`` line
            at or above ``min_level``, in order.
        lifecycle_events: every :class:`~taskflow.observers.LifecycleEvent`, in order
            (including ``PENDING`` with ``retrying=True`` for a failed attempt that will
            run again).
    """

    def __init__(self, min_level: str = "debug") -> None:
        """Start with empty lists.

        Args:
            min_level: ``task_log()`` lines below this level are not kept; the default
                keeps them all. Transitions are always kept.
        """
        super().__init__(min_level)
        self.log_events: list[LogEvent] = []
        self.lifecycle_events: list[LifecycleEvent] = []

    def __repr__(self) -> str:
        return (
            f"InMemoryLogger(log_events={len(self.log_events)}, "
            f"lifecycle_events={len(self.lifecycle_events)})"
        )

    async def on_log(self, event: LogEvent) -> None:
        """Keep the line when it reaches ``min_level``.

        Args:
            event: The logged line.
        """
        if self._should_log(event.level):
            self.log_events.append(event)

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Keep the transition.

        Args:
            event: The transition.
        """
        self.lifecycle_events.append(event)

    def clear(self) -> None:
        """Empty both lists."""
        self.log_events.clear()
        self.lifecycle_events.clear()
