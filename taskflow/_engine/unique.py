"""Unique tasks: ``unique_for=`` and ``unique_states=``, checked, and the key a unique
task is matched by.

A second enqueue of the same function with equal arguments (or the same idempotency
key) within ``unique_for`` returns the first task's id, as long as that task's status
is one of ``unique_states``; the store makes it hold across processes
(:meth:`~taskflow._store.protocol.TaskStore.insert_unique_task`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from taskflow._payloads import codec
from taskflow.errors import ConfigurationError, TaskArgumentError

#: The statuses that block a new task by default: a failed, cancelled, interrupted or
#: rejected task does not (the rule of idempotency keys).
DEFAULT_UNIQUE_STATES = ("pending", "running", "success")
KNOWN_STATES = ("pending", "running", "success", "failed", "cancelled", "interrupted", "rejected")


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """How a task is unique: the window, and the statuses of an earlier task that
    block a new one."""

    window: timedelta
    states: tuple[str, ...]


def check_window(unique_for: Any) -> timedelta | None:
    """``unique_for`` as a ``timedelta`` (None stays None).

    Raises:
        ConfigurationError: not a number of seconds or a ``timedelta`` greater than 0.
    """
    if unique_for is None:
        return None
    if isinstance(unique_for, timedelta):
        window = unique_for
    elif isinstance(unique_for, int | float) and not isinstance(unique_for, bool):
        if not math.isfinite(unique_for):
            raise _bad_window(unique_for)
        window = timedelta(seconds=unique_for)
    else:
        raise _bad_window(unique_for)
    if window <= timedelta(0):
        raise _bad_window(unique_for)
    return window


def _bad_window(unique_for: Any) -> ConfigurationError:
    return ConfigurationError(
        f"unique_for must be a number of seconds or a timedelta greater than 0, got {unique_for!r}",
        field="unique_for",
    )


def check_states(unique_states: Any) -> tuple[str, ...] | None:
    """``unique_states`` as a tuple of statuses (None stays None).

    Raises:
        ConfigurationError: not a non-empty collection of known statuses.
    """
    if unique_states is None:
        return None
    if isinstance(unique_states, str) or not isinstance(unique_states, Iterable):
        raise ConfigurationError(
            f"unique_states must be a tuple of statuses, got {unique_states!r}",
            field="unique_states",
        )
    states = tuple(unique_states)
    unknown = [state for state in states if state not in KNOWN_STATES]
    if not states or unknown:
        raise ConfigurationError(
            f"unique_states must be a non-empty subset of {KNOWN_STATES}, got {states!r}",
            field="unique_states",
        )
    return tuple(dict.fromkeys(states))


def resolve(
    *,
    unique_for: Any,
    unique_states: Any,
    default_for: timedelta | None,
    default_states: tuple[str, ...] | None,
) -> Uniqueness | None:
    """The uniqueness of one enqueue: its own ``unique_for`` and ``unique_states``,
    else the function's defaults; None when neither gives a window.

    Raises:
        ConfigurationError: a value is invalid, or states are given with no window.
    """
    window = check_window(unique_for) or default_for
    states = check_states(unique_states) or default_states
    if window is None:
        if unique_states is not None:
            raise ConfigurationError(
                "unique_states needs unique_for (here or on the task)", field="unique_states"
            )
        return None
    return Uniqueness(window=window, states=states or DEFAULT_UNIQUE_STATES)


def unique_key(
    func_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    idempotency_key: str | None,
    payload: str,
) -> str:
    """The sha256 hex digest a unique task is matched by: of the function's name and
    the idempotency key when there is one, else the canonical encoding of the
    arguments (unencrypted, keyword arguments sorted). Arguments the codec cannot store
    (a task run from memory) are matched by their stored text ``payload``."""
    if idempotency_key is not None:
        subject = ["key", idempotency_key]
    else:
        try:
            text = codec.encode_call(args, dict(sorted(kwargs.items())))
        except TaskArgumentError:
            text = payload
        subject = ["call", text]
    encoded = json.dumps([func_name, *subject], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()
