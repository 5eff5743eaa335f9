"""When to try a failed task again."""

from __future__ import annotations

import random
from dataclasses import dataclass

from taskflow.errors import DecryptionError, TaskArgumentError, UnknownTaskFunction

# Failures that another attempt cannot fix.
_PERMANENT = (DecryptionError, TaskArgumentError, UnknownTaskFunction)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry settings of one task: up to ``retries`` more attempts, waiting
    ``delay * backoff ** (n - 1)`` seconds before retry ``n``, capped at ``max_delay``,
    spread by up to ``jitter`` (a fraction of the delay), for exceptions in ``retry_on``."""

    retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """True if attempt number ``attempt`` failing with ``error`` earns another try."""
        if attempt > self.retries or isinstance(error, _PERMANENT):
            return False
        return isinstance(error, self.retry_on)

    def delay_before(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        wait = self.delay * self.backoff ** (retry - 1)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        if self.jitter:
            wait += wait * self.jitter * random.random()
        return max(wait, 0.0)


def validate(
    *, retries: int, delay: float, backoff: float, max_delay: float | None, jitter: float
) -> None:
    """Raise ``ValueError`` for retry settings that make no sense."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    if backoff < 1:
        raise ValueError(f"backoff must be >= 1, got {backoff}")
    if max_delay is not None and max_delay < 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
