"""Fernet encryption of stored task payloads.

Several keys may be configured to rotate keys without losing old tasks: the first key
encrypts every new payload, and every key is tried when decrypting. To rotate, put the
new key first and keep the old one until no payload encrypted with it remains.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from taskflow.errors import ConfigurationError, DecryptionError

KeyInput = bytes | str | Sequence[bytes | str]


class PayloadCipher:
    """Encrypts payload text with Fernet; several keys allow rotation (first key encrypts,
    all decrypt).

    :param keys: one Fernet key, or a sequence of them with the encrypting key first.
        Keys are 32 url-safe base64-encoded bytes, as made by ``Fernet.generate_key()``.
    :raises ValueError: (a :class:`~taskflow.errors.ConfigurationError`) if no key is
        given or a key is not a valid Fernet key; the message names the key's index but
        never the key itself.
    """

    def __init__(self, keys: KeyInput) -> None:
        key_list = _as_key_list(keys)
        if not key_list:
            raise ConfigurationError("at least one encryption key is required")
        self._fernet = MultiFernet([_load_key(key, index) for index, key in enumerate(key_list)])
        self._key_count = len(key_list)

    def __repr__(self) -> str:
        # Never show key material, even in debug output.
        return f"<PayloadCipher keys={self._key_count}>"

    @property
    def fernet(self) -> MultiFernet:
        """The underlying ``MultiFernet``, e.g. for ``rotate()`` on stored tokens."""
        return self._fernet

    def encrypt(self, text: str) -> str:
        """Encrypt ``text`` with the first key and return the Fernet token as str."""
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Decrypt a token made by :meth:`encrypt` with any configured key.

        :raises DecryptionError: if no configured key can decrypt ``token`` or the token
            is malformed.
        """
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise DecryptionError("payload cannot be decrypted with the configured key(s)") from exc
        return data.decode("utf-8")


def make_cipher(keys: KeyInput | None) -> PayloadCipher | None:
    """Return a :class:`PayloadCipher` for ``keys``, or None if no keys are configured.

    :param keys: None, an empty key or sequence (encryption off), or the keys.
    :raises ValueError: if a key is not a valid Fernet key.
    """
    if keys is None or len(keys) == 0:
        return None
    return PayloadCipher(keys)


def _as_key_list(keys: KeyInput) -> list[bytes | str]:
    """Return ``keys`` as a list; a single bytes or str is one key, not a sequence."""
    if isinstance(keys, bytes | bytearray | str):
        return [bytes(keys) if isinstance(keys, bytearray) else keys]
    return list(keys)


def _load_key(key: bytes | str, index: int) -> Fernet:
    """Build a Fernet for ``key``.

    :raises ConfigurationError: naming ``index`` if the key is invalid; the cause is
        suppressed so no traceback can carry the key.
    """
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"encryption key {index} is not a valid Fernet key "
            "(expected 32 url-safe base64-encoded bytes, e.g. from Fernet.generate_key())"
        ) from None
