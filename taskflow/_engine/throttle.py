"""Concurrency and rate limits of task functions: ``concurrency=``, ``rate_limit=`` and
``limit_key=`` checked, and the limit a task counts against.

A limited task stores its limit's name (``limit_key``: the function's name, plus the
key ``limit_key(*args, **kwargs)`` returned when it was enqueued). Its attempts start
through :meth:`~taskflow._store.protocol.TaskStore.start_limited`, which counts the
running tasks and recent starts of that name in the database, so the limit holds across
every process sharing it. Tasks of functions without limits never come here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from taskflow._store.rows import Limit
from taskflow.errors import ConfigurationError, TaskArgumentError

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MAX_LIMIT_KEY = 255  # the length of the ``limit_key`` column
_RATE = re.compile(r"([1-9][0-9]*)/([smh])")


class TaskConfig(Protocol):
    """The options of a task function read here (``registry.TaskConfig`` has them)."""

    name: str | None
    path: str
    concurrency: int | None
    rate_limit: str | None
    limit_key: Callable[..., Any] | None


def check_concurrency(concurrency: Any) -> int | None:
    """``concurrency`` checked (None: no bound).

    Raises:
        ConfigurationError: not an integer of at least 1.
    """
    if concurrency is None:
        return None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(
            f"concurrency must be an integer >= 1, got {concurrency!r}", field="concurrency"
        )
    return concurrency


@lru_cache(maxsize=256)
def parse_rate(rate_limit: str) -> tuple[int, float]:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` as (N, the period in seconds).

    Raises:
        ConfigurationError: any other text, or N below 1.
    """
    match = _RATE.fullmatch(rate_limit)
    if match is None:
        raise _bad_rate(rate_limit)
    return int(match.group(1)), PERIODS[match.group(2)]


def _bad_rate(rate_limit: Any) -> ConfigurationError:
    return ConfigurationError(
        f"rate_limit must look like '10/s', '100/m' or '1000/h' (an integer >= 1, "
        f"'/', then s, m or h), got {rate_limit!r}",
        field="rate_limit",
    )


def check_rate(rate_limit: Any) -> str | None:
    """``rate_limit`` checked (None: no bound); see :func:`parse_rate`."""
    if rate_limit is None:
        return None
    if not isinstance(rate_limit, str):
        raise _bad_rate(rate_limit)
    parse_rate(rate_limit)
    return str(rate_limit)


def check_limit_key(
    limit_key: Any, *, concurrency: int | None, rate_limit: str | None
) -> Callable[..., Any] | None:
    """``limit_key`` checked: a callable, and only with a limit to apply it to.

    Raises:
        ConfigurationError: not callable, or neither concurrency nor rate_limit is set.
    """
    if limit_key is None:
        return None
    if not callable(limit_key):
        raise ConfigurationError(
            f"limit_key must be a callable of the task's arguments, got {type(limit_key).__name__}",
            field="limit_key",
        )
    if concurrency is None and rate_limit is None:
        raise ConfigurationError("limit_key needs concurrency or rate_limit", field="limit_key")
    key: Callable[..., Any] = limit_key
    return key


def is_limited(config: TaskConfig) -> bool:
    """True when ``config``'s function has a concurrency or rate limit."""
    return config.concurrency is not None or config.rate_limit is not None


def limit_name(config: TaskConfig, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The limit a new task of ``config`` counts against (None: its function has none):
    the function's name, plus ``:`` and the key of ``limit_key`` when it has one. A
    name longer than the column is shortened to a digest of it, so keys stay apart.

    Raises:
        TaskArgumentError: ``limit_key`` raised, or returned None.
    """
    if not is_limited(config):
        return None
    name = config.name or config.path
    if config.limit_key is None:
        return _fit(name)
    try:
        key = config.limit_key(*args, **kwargs)
    except Exception as exc:
        raise TaskArgumentError(f"limit_key of {name} raised {type(exc).__name__}: {exc}") from exc
    if key is None:
        raise TaskArgumentError(f"limit_key of {name} returned None")
    return _fit(f"{name}:{key}")


def _fit(name: str) -> str:
    if len(name) <= MAX_LIMIT_KEY:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    return f"{name[: MAX_LIMIT_KEY - len(digest) - 1]}#{digest}"


def limit_for(config: TaskConfig, limit_key: str) -> Limit | None:
    """The limit a stored task with ``limit_key`` starts under here (None: this
    process knows no limit for its function, so it starts as any task does)."""
    if not is_limited(config):
        return None
    rate, period = parse_rate(config.rate_limit) if config.rate_limit is not None else (None, None)
    return Limit(key=limit_key, concurrency=config.concurrency, rate=rate, period=period)
