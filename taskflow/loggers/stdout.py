"""fastapi-taskflow's ``StdoutLogger``: task events printed to standard output."""

from __future__ import annotations

from taskflow.observers import (
    LifecycleEvent,
    LogEvent,
    TaskObserver,
    format_lifecycle_line,
    format_log_line,
)

__all__ = ["StdoutLogger"]


class StdoutLogger(TaskObserver):
    """Print one line per event to ``sys.stdout``, for containers whose log agent reads it.

    Lines have :class:`~taskflow.observers.FileLogger`'s format (UTC time, level,
    function name, task id, message, then ``key=value`` extras and tags).
    """

    def __init__(self, log_lifecycle: bool = False, min_level: str = "info") -> None:
        """Configure what is printed.

        Args:
            log_lifecycle: also print a line for each status transition.
            min_level: lines below this level (``"debug"``, ``"info"``, ``"warning"``,
                ``"error"``) are not printed; transitions are ranked by their severity
                (a failure is an error, a retry a warning).
        """
        super().__init__(min_level)
        self.log_lifecycle = log_lifecycle

    def __repr__(self) -> str:
        return f"StdoutLogger(log_lifecycle={self.log_lifecycle!r})"

    async def on_log(self, event: LogEvent) -> None:
        """Print the ``task_log()`` line when it reaches ``min_level``.

        Args:
            event: The logged line.
        """
        if self._should_log(event.level):
            print(format_log_line(event), flush=True)

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Print the transition when ``log_lifecycle`` is on and it reaches ``min_level``.

        Args:
            event: The transition.
        """
        if self.log_lifecycle and self._should_log_lifecycle(event):
            print(format_lifecycle_line(event), flush=True)
