"""Tests for taskflow._payloads.crypto: encryption, key rotation and key validation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, MultiFernet

from taskflow._payloads.crypto import PayloadCipher, make_cipher
from taskflow.errors import DecryptionError

TEXT = '{"args":["a@b.c"],"kwargs":{"note":"héllo ✓"}}'


def test_encrypt_returns_a_token_that_decrypts_back() -> None:
    cipher = PayloadCipher(Fernet.generate_key())
    token = cipher.encrypt(TEXT)
    assert isinstance(token, str)
    assert TEXT not in token and "a@b.c" not in token
    assert cipher.decrypt(token) == TEXT


def test_str_key_is_accepted() -> None:
    key = Fernet.generate_key()
    token = PayloadCipher(key.decode("ascii")).encrypt(TEXT)
    assert Fernet(key).decrypt(token.encode()).decode("utf-8") == TEXT


def test_encryption_is_randomised() -> None:
    cipher = PayloadCipher(Fernet.generate_key())
    assert cipher.encrypt(TEXT) != cipher.encrypt(TEXT)


def test_rotation_decrypts_old_tokens_and_encrypts_with_the_new_key() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    old_token = PayloadCipher(old).encrypt(TEXT)
    rotated = PayloadCipher([new, old])
    assert rotated.decrypt(old_token) == TEXT
    new_token = rotated.encrypt(TEXT)
    assert Fernet(new).decrypt(new_token.encode()).decode("utf-8") == TEXT
    with pytest.raises(DecryptionError):
        PayloadCipher(old).decrypt(new_token)


def test_fernet_property_exposes_the_multifernet_for_rotate() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    old_token = PayloadCipher(old).encrypt(TEXT).encode()
    cipher = PayloadCipher([new, old])
    assert isinstance(cipher.fernet, MultiFernet)
    rewritten = cipher.fernet.rotate(old_token).decode("ascii")
    assert PayloadCipher(new).decrypt(rewritten) == TEXT


def test_wrong_key_raises_decryption_error() -> None:
    token = PayloadCipher(Fernet.generate_key()).encrypt(TEXT)
    with pytest.raises(DecryptionError) as info:
        PayloadCipher(Fernet.generate_key()).decrypt(token)
    assert str(info.value) == "payload cannot be decrypted with the configured key(s)"


@pytest.mark.parametrize("token", ["garbage", "", "tökén"])
def test_malformed_token_raises_decryption_error(token: str) -> None:
    with pytest.raises(DecryptionError):
        PayloadCipher(Fernet.generate_key()).decrypt(token)


@pytest.mark.parametrize("bad_key", ["not-a-key", "c2hvcnQ=", "é" * 44, b"x" * 44])
def test_invalid_key_names_its_index_but_not_the_key(bad_key: bytes | str) -> None:
    good = Fernet.generate_key()
    with pytest.raises(ValueError) as info:
        PayloadCipher([good, bad_key])
    message = str(info.value)
    assert "key 1 " in message
    assert str(bad_key) not in message and good.decode() not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_single_invalid_key_is_index_zero() -> None:
    with pytest.raises(ValueError, match="key 0 is not a valid Fernet key"):
        PayloadCipher("nope")


def test_no_keys_is_refused_by_the_cipher() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PayloadCipher([])


@pytest.mark.parametrize("keys", [None, "", b"", [], ()])
def test_make_cipher_returns_none_without_keys(keys: object) -> None:
    assert make_cipher(keys) is None  # type: ignore[arg-type]


def test_make_cipher_builds_a_working_cipher() -> None:
    key = Fernet.generate_key()
    cipher = make_cipher([key])
    assert isinstance(cipher, PayloadCipher)
    assert PayloadCipher(key).decrypt(cipher.encrypt(TEXT)) == TEXT


def test_make_cipher_validates_keys() -> None:
    with pytest.raises(ValueError, match="key 0"):
        make_cipher(["bad"])


def test_repr_does_not_show_keys() -> None:
    key = Fernet.generate_key()
    assert key.decode() not in repr(PayloadCipher([key, Fernet.generate_key()]))
    assert repr(PayloadCipher(key)) == "<PayloadCipher keys=1>"
