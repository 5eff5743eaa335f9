"""Task arguments and results as stored: codec-encoded JSON, optionally encrypted."""

from __future__ import annotations

from typing import Any

from taskflow import codec
from taskflow.crypto import PayloadCipher


class Payloads:
    """Encodes calls and results for storage, encrypting them when a cipher is set."""

    def __init__(self, cipher: PayloadCipher | None) -> None:
        self.cipher = cipher

    @property
    def encrypted(self) -> bool:
        """True when payloads are encrypted at rest."""
        return self.cipher is not None

    def encode_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Stored text of a call. Raises ``TaskArgumentError`` for unstorable values."""
        return self._seal(codec.encode_call(args, kwargs))

    def decode_call(self, text: str, *, encrypted: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Arguments back from stored text. Raises ``DecryptionError`` for a wrong key."""
        return codec.decode_call(self._open(text, encrypted))

    def encode_result(self, value: Any) -> str | None:
        """Stored text of a result (None stays None)."""
        if value is None:
            return None
        return self._seal(codec.dumps(value, what="result"))

    def decode_result(self, text: str | None, *, encrypted: bool) -> Any:
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
