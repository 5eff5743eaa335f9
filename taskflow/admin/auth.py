"""Who may use the dashboard: the ``auth=`` argument of :class:`TaskAdmin`.

``auth`` takes any of:

* ``("user", "password")``: one login;
* ``[("alice", "pw"), ("bob", "pw", "read-only")]``: several, a third item
  ``"read-only"`` makes that user look without acting;
* a :class:`TaskAuthBackend` (or any object with ``authenticate_user(username,
  password)``, sync or async) or a plain callable ``(username, password) -> bool``;
* a FastAPI dependency, ``Depends(get_admin)``, or a list of them: the app's own
  authentication. The first dependency's value names the user (a string, or an object
  with ``username`` or ``name``; ``read_only=True`` on it makes the user read-only).

The first three show a login form and keep sessions in the database; the last runs the
dependencies on every dashboard request instead.
"""

from __future__ import annotations

import abc
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from fastapi import params
from starlette.concurrency import run_in_threadpool

READ_ONLY_MARKERS = ("read-only", "readonly", "read", "viewer")


class Authenticator(Protocol):
    """Any object with fastapi-taskflow's ``authenticate_user`` (sync or async)."""

    def authenticate_user(self, username: str, password: str, /) -> bool | Awaitable[bool]:
        """True when ``username``/``password`` are valid."""
        ...


CredentialCheck: TypeAlias = Callable[[str, str], bool | Awaitable[bool]]
"""A plain function ``(username, password) -> bool`` (or a coroutine function)."""

AuthArgument: TypeAlias = (
    Sequence[str]
    | Sequence[Sequence[str]]
    | Authenticator
    | CredentialCheck
    | params.Depends
    | Sequence[params.Depends]
    | None
)
"""Every accepted form of ``TaskAdmin(auth=...)`` (see the module's description)."""


class TaskAuthBackend(abc.ABC):
    """Base class for a custom login check (fastapi-taskflow's API).

    Subclass it and pass an instance as ``TaskAdmin(auth=...)``. ``authenticate_user`` may
    be a coroutine; a sync one runs in a worker thread.
    """

    @abc.abstractmethod
    def authenticate_user(self, username: str, password: str) -> bool | Awaitable[bool]:
        """True when ``username``/``password`` are valid."""

    def is_read_only(self, username: str) -> bool:
        """True when ``username`` may look but not act (default: False)."""
        return False


class CredentialsBackend(TaskAuthBackend):
    """Fixed user/password pairs, compared in constant time.

    Args:
        credentials: ``(user, password)`` or ``(user, password, "read-only")`` items.

    Raises:
        TypeError: an item is not such a tuple.
    """

    def __init__(self, credentials: Iterable[Sequence[str]]) -> None:
        self._passwords: dict[str, str] = {}
        self._read_only: set[str] = set()
        for item in credentials:
            username, password, read_only = _credential(item)
            self._passwords[username] = password
            if read_only:
                self._read_only.add(username)

    def authenticate_user(self, username: str, password: str) -> bool:
        """True for a known user with this password."""
        expected = self._passwords.get(username)
        # Compare against something even for unknown users: same time either way.
        matched = hmac.compare_digest(
            (expected or "\0invalid").encode(), password.encode("utf-8", "surrogatepass")
        )
        return expected is not None and matched

    def is_read_only(self, username: str) -> bool:
        """True for users declared with ``"read-only"``."""
        return username in self._read_only


class _CallableBackend(TaskAuthBackend):
    """Wraps an object or function that checks credentials."""

    def __init__(self, check: CredentialCheck, read_only: Callable[[str], bool]) -> None:
        self._check = check
        self._read_only = read_only

    def authenticate_user(self, username: str, password: str) -> bool | Awaitable[bool]:
        return self._check(username, password)

    def is_read_only(self, username: str) -> bool:
        return bool(self._read_only(username))


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The resolved ``auth=`` argument.

    Attributes:
        mode: ``"none"``, ``"login"`` (form and sessions) or ``"dependency"``.
        backend: the credential check for ``"login"``.
        dependencies: the app's dependencies for ``"dependency"``.
        read_only_users: users who may look but not act, whatever the backend says.
    """

    mode: str
    backend: TaskAuthBackend | None = None
    dependencies: tuple[params.Depends, ...] = ()
    read_only_users: frozenset[str] = field(default_factory=frozenset)

    async def authenticate(self, username: str, password: str) -> bool:
        """Check credentials with the backend (sync backends run in a thread)."""
        assert self.backend is not None
        check = self.backend.authenticate_user
        if inspect.iscoroutinefunction(check):
            outcome = await check(username, password)
        else:
            outcome = await run_in_threadpool(check, username, password)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        return outcome is True

    def is_read_only(self, username: str) -> bool:
        """True when ``username`` may only look."""
        if username in self.read_only_users:
            return True
        return self.backend is not None and bool(self.backend.is_read_only(username))


def resolve_auth(auth: AuthArgument, *, read_only_users: Iterable[str] = ()) -> AuthConfig:
    """Turn ``TaskAdmin(auth=...)`` into an :class:`AuthConfig`.

    Raises:
        TypeError: ``auth`` is none of the accepted forms.
    """
    read_only = frozenset(read_only_users)
    if auth is None:
        return AuthConfig(mode="none", read_only_users=read_only)
    if isinstance(auth, params.Depends):
        return AuthConfig(mode="dependency", dependencies=(auth,), read_only_users=read_only)
    if (
        isinstance(auth, list | tuple)
        and auth
        and all(isinstance(item, params.Depends) for item in auth)
    ):
        return AuthConfig(mode="dependency", dependencies=tuple(auth), read_only_users=read_only)
    return AuthConfig(mode="login", backend=_backend(auth), read_only_users=read_only)


def _backend(auth: AuthArgument) -> TaskAuthBackend:
    if isinstance(auth, TaskAuthBackend):
        return auth
    if isinstance(auth, tuple) and len(auth) in (2, 3) and isinstance(auth[0], str):
        return CredentialsBackend([auth])
    if isinstance(auth, list | tuple) and auth:
        return CredentialsBackend(auth)
    check = getattr(auth, "authenticate_user", None)
    if callable(check):
        read_only = getattr(auth, "is_read_only", None)
        return _CallableBackend(check, read_only if callable(read_only) else _nobody)
    if callable(auth):
        return _CallableBackend(auth, _nobody)
    raise TypeError(
        "auth must be a (username, password) tuple, a list of them, a TaskAuthBackend, "
        "an object with authenticate_user(), a callable (username, password) -> bool, "
        f"or FastAPI Depends(...); got {type(auth).__name__}"
    )


def _credential(item: Sequence[str]) -> tuple[str, str, bool]:
    if not isinstance(item, list | tuple) or len(item) not in (2, 3):
        raise TypeError(f"a credential is (user, password[, 'read-only']), got {item!r}")
    username, password = item[0], item[1]
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise TypeError("user name and password must be non-empty strings")
    read_only = len(item) == 3 and str(item[2]).lower() in READ_ONLY_MARKERS
    if len(item) == 3 and not read_only and str(item[2]).lower() not in ("admin", "write"):
        raise TypeError(f"a credential's role must be 'read-only' or 'admin', got {item[2]!r}")
    return username, password, read_only


def _nobody(username: str) -> bool:
    return False


def principal_name(value: object) -> tuple[str, bool]:
    """User name and read-only flag from the value of an auth dependency."""
    if isinstance(value, str):
        return value or "user", False
    if isinstance(value, dict):
        name = value.get("username") or value.get("name") or "user"
        return str(name), bool(value.get("read_only", False))
    name = getattr(value, "username", None) or getattr(value, "name", None) or "user"
    return str(name), bool(getattr(value, "read_only", False))
