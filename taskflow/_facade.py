"""How :class:`~taskflow.TaskManager` offers its parts' methods and settings as its
own: a forwarding method that keeps the part's signature and docstring, and an
attribute stored in :class:`~taskflow._engine.settings.Settings`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from taskflow._engine.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
V = TypeVar("V")


class _HasSettings(Protocol):
    settings: Settings


def forward(
    part: str, method: Callable[Concatenate[Any, P], R]
) -> Callable[Concatenate[Any, P], R]:
    """A TaskManager method that calls ``method`` on the part in attribute ``part``; it
    carries the part's signature and docstring (what ``help()`` and editors show)."""
    name = method.__name__
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def forward_async(self: Any, *args: P.args, **kwargs: P.kwargs) -> Any:
            return await getattr(getattr(self, part), name)(*args, **kwargs)

        return forward_async  # type: ignore[return-value]

    @functools.wraps(method)
    def forward(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = getattr(getattr(self, part), name)(*args, **kwargs)
        return result

    return cast("Callable[Concatenate[Any, P], R]", forward)


class Setting(Generic[V]):
    """A manager attribute kept in its :class:`Settings` (the parts read it when they
    act, so setting it before startup takes effect)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, manager: None, owner: type) -> Setting[V]: ...
    @overload
    def __get__(self, manager: _HasSettings, owner: type) -> V: ...
    def __get__(self, manager: _HasSettings | None, owner: type) -> V | Setting[V]:
        if manager is None:
            return self
        value: V = getattr(manager.settings, self._name)
        return value

    def __set__(self, manager: _HasSettings, value: V) -> None:
        setattr(manager.settings, self._name, value)
