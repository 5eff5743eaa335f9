"""Task arguments and results as stored: codec-encoded JSON, optionally encrypted."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

from taskflow._payloads import codec
from taskflow._payloads.crypto import PayloadCipher
from taskflow.errors import TaskArgumentError

# Stored text of a call that could only run in the process that scheduled it (a closure,
# or an argument the codec cannot store): this prefix, then the (sealed) codec text of a
# readable description of the arguments. The store finds such rows by the prefix, which
# neither codec JSON ("{") nor a Fernet token ("gAAAA") can start with.
MEMORY_ONLY = "memory:"
MEMORY_ONLY_LOST = (
    "its function or arguments lived only in the memory of the process that scheduled it, "
    "which stopped; it cannot be re-run"
)

_describer = reprlib.Repr()
_describer.maxstring = _describer.maxother = 200


def is_memory_only(text: str) -> bool:
    """True for the stored text of a call that only its own process could run."""
    return text.startswith(MEMORY_ONLY)


class Payloads:
    """Encodes calls and results for storage, encrypting them when a cipher is set."""

    def __init__(self, cipher: PayloadCipher | None) -> None:
        self.cipher = cipher

    @property
    def encrypted(self) -> bool:
        """True when payloads are encrypted at rest."""
        return self.cipher is not None

    def encode_call(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
        """Stored text of a call. Raises ``TaskArgumentError`` for unstorable values."""
        return self._seal(codec.encode_call(args, kwargs))

    def encode_memory_call(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
        """Stored text of a call that runs from memory: each argument the codec can store
        as itself, every other one as a readable description (``repr``, shortened)."""
        described = codec.encode_call(
            tuple(_described(value) for value in args),
            {key: _described(value) for key, value in kwargs.items()},
        )
        return MEMORY_ONLY + self._seal(described)

    def decode_call(self, text: str, *, encrypted: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Arguments back from stored text (for a memory-only call, their descriptions).
        Raises ``DecryptionError`` for a wrong key."""
        if text.startswith(MEMORY_ONLY):
            text = text[len(MEMORY_ONLY) :]
        return codec.decode_call(self._open(text, encrypted))

    def encode_result(self, value: object) -> str | None:
        """Stored text of a result (None stays None)."""
        if value is None:
            return None
        return self._seal(codec.dumps(value, what="result"))

    def decode_result(self, text: str | None, *, encrypted: bool) -> object:
        """A result back from stored text."""
        if text is None:
            return None
        return codec.loads(self._open(text, encrypted))

    def _seal(self, text: str) -> str:
        return self.cipher.encrypt(text) if self.cipher is not None else text

    def _open(self, text: str, encrypted: bool) -> str:
        if not encrypted:
            return text
        if self.cipher is None:
            from taskflow.errors import DecryptionError

            raise DecryptionError("the task is encrypted but no encrypt_args_key is configured")
        return self.cipher.decrypt(text)


def _described(value: object) -> object:
    """``value`` when the codec stores it, else a short ``repr`` of it."""
    try:
        codec.dumps(value)
    except (TaskArgumentError, ValueError, TypeError):
        return _describer.repr(value)
    return value
