"""Hiding secrets in task arguments, results and log fields before they are shown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "••••••"
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "session",
    "credential",
    "privatekey",
    "accesskey",
    "ssn",
    "creditcard",
    "cardnumber",
    "cvv",
)


class Redactor:
    """Replaces the values of sensitive keys, at any depth, with a mask.

    A key is sensitive when, lower-cased and without ``-``/``_``/spaces, it contains
    one of ``keys`` (so ``"db_password"`` and ``"X-Api-Key"`` match ``"password"`` and
    ``"apikey"``).

    Args:
        keys: the sensitive key fragments.
    """

    def __init__(self, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> None:
        self.keys = tuple(_normal(key) for key in keys if key)

    def is_sensitive(self, key: Any) -> bool:
        """True when ``key`` names a secret."""
        normal = _normal(str(key))
        return any(fragment in normal for fragment in self.keys)

    def redact(self, value: Any, *, depth: int = 0) -> Any:
        """A copy of ``value`` with sensitive dict values masked (JSON-like values)."""
        if depth > 20:
            return "…"
        if isinstance(value, dict):
            return {
                key: MASK if self.is_sensitive(key) else self.redact(item, depth=depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(item, depth=depth + 1) for item in value]
        return value


def _normal(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "").replace(" ", "")
