"""Type-preserving JSON codec for task arguments and results.

Arguments are stored as text and restored in another process, possibly after a restart,
so the codec must hand back exactly what was passed: a ``datetime`` has to come back as a
``datetime``, a ``tuple`` as a ``tuple``, an ``IntEnum`` member as that member.

Plain JSON values (``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` and
``dict`` with ``str`` keys) are written as themselves. Everything else supported is
written as a tagged object ``{"__tf__": "<tag>", "v": ...}``:

=============  =====================================================================
tag            value
=============  =====================================================================
``float``      ``"nan"``, ``"inf"`` or ``"-inf"``
``datetime``   ISO text; ``tz`` holds a ``ZoneInfo`` key, ``fold`` a set fold
``date``       ISO text
``time``       ISO text; ``tz`` and ``fold`` as for ``datetime``
``timedelta``  ``[days, seconds, microseconds]``
``uuid``       canonical text
``decimal``    ``str(value)``, which is exact
``bytes``      base64 text (``bytearray`` likewise)
``tuple``      list of items (``set`` and ``frozenset`` likewise, sorted)
``dict``       list of ``[key, value]`` pairs, for non-``str`` keys or a ``__tf__`` key
``enum``       member name; ``cls`` is the class as ``module:qualname``
``pydantic``   ``model_dump(mode="json")``; ``cls`` as above
``dataclass``  ``{field: value}``; ``cls`` as above
=============  =====================================================================

Anything else raises :class:`~taskflow.errors.TaskArgumentError` naming where the value
sits. No pickle, ``eval`` or repr parsing is used: restoring a payload builds only the
types above, and a class named by a payload is checked to be an Enum, a pydantic model or
a dataclass before it is called.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
import reprlib
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel

from taskflow.errors import TaskArgumentError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from typing_extensions import TypeIs

#: Data the ``json`` module writes and reads: what encoding produces.
JSONValue: TypeAlias = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

# A JSON object as ``json.loads`` hands it to the object hook: its values are decoded
# already (a tagged value inside it is restored) and unchecked. A decoder that meets a
# value of the wrong type raises, and _decode_tagged reports that as a damaged payload.
_Stored: TypeAlias = dict[str, Any]

_C = TypeVar("_C")

TAG = "__tf__"

# One shared encoder: json.dumps() builds a new JSONEncoder on every call that passes
# options, which costs more than encoding a short argument list. ensure_ascii (the
# default) keeps lone surrogates, legal in str but not in UTF-8, storable in any database.
_JSON = json.JSONEncoder(separators=(",", ":"))

_ADVICE = "pass JSON-compatible values, dataclasses or pydantic models"

_MISSING = object()


class _Unstorable(Exception):
    """Internal: a value cannot be encoded.

    The path to the value is collected while the recursion unwinds, so encoding values
    that succeed never pays for building path strings.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self._segments: list[str] = []

    def at(self, segment: str) -> None:
        """Record that the failing value sits at ``segment`` inside its container."""
        self._segments.append(segment)

    def suffix(self) -> str:
        """Return the path from the top-level value down to the failing one."""
        return "".join(reversed(self._segments))


# --------------------------------------------------------------------------- public API


def dumps(value: object, *, what: str = "value") -> str:
    """Encode ``value`` as compact JSON text that :func:`loads` turns back into it.

    :param value: the value to encode; see the module docstring for supported types.
    :param what: how error messages name the value, e.g. ``"result"``.
    :raises TaskArgumentError: if ``value`` (or anything inside it) cannot be stored with
        its exact type and value; the message names its path and type.
    """
    try:
        return _JSON.encode(value if _is_plain(value) else _encode(value))
    except _Unstorable as exc:
        raise _argument_error(exc, what) from None
    except RecursionError:
        raise TaskArgumentError(f"{what} is nested too deeply or contains itself") from None


def loads(text: str) -> object:
    """Decode JSON text written by :func:`dumps`.

    :param text: the JSON text.
    :raises ValueError: if ``text`` is not JSON.
    :raises TaskArgumentError: if a tagged value cannot be restored, e.g. because its
        class can no longer be imported.
    """
    return json.loads(text, object_hook=_decode_tagged)


def encode_call(args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    """Encode a call's arguments as JSON text of ``{"args": [...], "kwargs": {...}}``.

    :param args: the positional arguments.
    :param kwargs: the keyword arguments.
    :raises TaskArgumentError: if an argument cannot be stored faithfully; positional
        arguments are named ``argument 0``, keyword ones ``argument 'name'``.
    """
    try:
        if _is_plain(kwargs) and all(map(_is_plain, args)):
            return _JSON.encode({"args": args, "kwargs": kwargs})
        return _JSON.encode({"args": _encode_args(args), "kwargs": _encode_kwargs(kwargs)})
    except RecursionError:
        raise TaskArgumentError(
            "the task arguments are nested too deeply or contain themselves"
        ) from None


def decode_call(text: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode text written by :func:`encode_call` into ``(args, kwargs)``.

    :param text: the JSON text.
    :raises ValueError: if ``text`` is not JSON.
    :raises TaskArgumentError: if the text is not a call payload or an argument cannot be
        restored.
    """
    data = loads(text)
    if not (
        type(data) is dict and type(data.get("args")) is list and type(data.get("kwargs")) is dict
    ):
        raise TaskArgumentError('malformed call payload: expected {"args": [...], "kwargs": {...}}')
    return tuple(data["args"]), data["kwargs"]


# ----------------------------------------------------------------------------- encoding


def _argument_error(exc: _Unstorable, what: str, where: str | None = None) -> TaskArgumentError:
    """Build the user-facing error for ``exc``, e.g. ``argument 0[2] has type 'Foo' ...``."""
    suffix = exc.suffix()
    place = f"{what}{suffix}" if where is None else f"{what}{suffix} ({where}{suffix})"
    return TaskArgumentError(f"{place} {exc.reason}")


def _is_plain(value: object) -> bool:
    """Return whether ``value`` is plain JSON that ``json`` can write unchanged."""
    # Exact-type tests on ``kind`` keep this hot path cheap; mypy does not narrow
    # ``value`` from them, hence the ignores.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is list:
        return all(map(_is_plain, value))  # type: ignore[call-overload]
    if kind is dict:
        items: dict[object, object] = value  # type: ignore[assignment]
        return (
            TAG not in items
            and all(type(key) is str for key in items)
            and all(map(_is_plain, items.values()))
        )
    return False


def _encode_args(args: tuple[object, ...]) -> list[JSONValue]:
    """Encode positional arguments, naming a failing one ``argument <index>``."""
    encoded = []
    for index, arg in enumerate(args):
        try:
            encoded.append(_encode(arg))
        except _Unstorable as exc:
            raise _argument_error(exc, f"argument {index}", f"args[{index}]") from None
    return encoded


def _encode_kwargs(kwargs: Mapping[str, object]) -> JSONValue:
    """Encode keyword arguments, naming a failing one ``argument '<name>'``."""
    encoded: dict[str, JSONValue] = {}
    for name, arg in kwargs.items():
        if type(name) is not str:
            raise TaskArgumentError(f"keyword argument names must be str, not {_type_name(name)}")
        try:
            encoded[name] = _encode(arg)
        except _Unstorable as exc:
            raise _argument_error(exc, f"argument {name!r}", f"kwargs[{name!r}]") from None
    return _escape_tag_key(encoded)


def _encode(value: object) -> JSONValue:
    """Turn ``value`` into plain JSON data, tagging every non-JSON type.

    :raises _Unstorable: if ``value`` or something inside it is not supported.
    """
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        return encoder(value)
    # Only subclass-based types remain; exact-type lookup above keeps bool apart from int
    # and refuses str/int/dict subclasses that would come back as their base type.
    if isinstance(value, Enum):
        return _encode_enum(value)
    if isinstance(value, BaseModel):
        return _encode_model(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value)
    raise _Unstorable(
        f"has type {_type_name(value)}, which taskflow cannot store faithfully; {_ADVICE}"
    )


def _type_name(value: object) -> str:
    """Return the quoted qualified name of ``value``'s type, for messages."""
    return repr(type(value).__qualname__)


def _show(key: object) -> str:
    """Return a short, never-failing representation of a dict key, for messages."""
    return reprlib.repr(key)


def _tagged(tag: str, value: JSONValue, /, **extra: JSONValue) -> dict[str, JSONValue]:
    """Return the tagged form ``{"__tf__": tag, "v": value, **extra}``."""
    return {TAG: tag, "v": value, **extra}


def _encode_float(value: float) -> JSONValue:
    """Keep finite floats; tag nan and infinities, which JSON cannot express."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return _tagged("float", "nan")
    return _tagged("float", "inf" if value > 0 else "-inf")


def _encode_items(items: Iterable[object]) -> list[JSONValue]:
    """Encode the items of a list or tuple, recording the index of a failing one."""
    encoded = []
    for index, item in enumerate(items):
        try:
            encoded.append(_encode(item))
        except _Unstorable as exc:
            exc.at(f"[{index}]")
            raise
    return encoded


def _encode_set(value: set[object] | frozenset[object]) -> dict[str, JSONValue]:
    """Encode a set or frozenset with members sorted by their JSON text.

    Sorting makes equal sets encode identically whatever their iteration order.
    """
    try:
        members = [_encode(member) for member in value]
    except _Unstorable as exc:
        exc.at("{...}")
        raise
    tag = "set" if type(value) is set else "frozenset"
    return _tagged(tag, sorted(members, key=_JSON.encode))


def _encode_dict(value: dict[object, object]) -> JSONValue:
    """Encode a dict; one with non-str keys becomes a tagged list of pairs."""
    if not all(type(key) is str for key in value):
        return _tagged("dict", _encode_pairs(value))
    encoded: dict[str, JSONValue] = {}
    for key, item in cast("dict[str, object]", value).items():  # str keys, checked above
        try:
            encoded[key] = _encode(item)
        except _Unstorable as exc:
            exc.at(f"[{_show(key)}]")
            raise
    return _escape_tag_key(encoded)


def _escape_tag_key(encoded: dict[str, JSONValue]) -> JSONValue:
    """Write a dict that has a ``__tf__`` key as pairs, so it is not read back as a tag."""
    if TAG not in encoded:
        return encoded
    return _tagged("dict", [[key, item] for key, item in encoded.items()])


def _encode_pairs(value: dict[object, object]) -> list[JSONValue]:
    """Encode a dict's items as ``[key, value]`` pairs, recording where one fails."""
    pairs: list[JSONValue] = []
    for key, item in value.items():
        try:
            encoded_key = _encode(key)
        except _Unstorable as exc:
            exc.at(f" (key {_show(key)})")
            raise
        try:
            pairs.append([encoded_key, _encode(item)])
        except _Unstorable as exc:
            exc.at(f"[{_show(key)}]")
            raise
    return pairs


def _zone_extras(zone: tzinfo | None, fold: int) -> dict[str, JSONValue]:
    """Return the ``tz`` and ``fold`` entries that ISO text cannot carry."""
    extras: dict[str, JSONValue] = {}
    # A ZoneInfo built from a file has no key; it falls back to its fixed offset.
    if isinstance(zone, ZoneInfo) and zone.key:
        extras["tz"] = zone.key
    if fold:
        extras["fold"] = 1
    return extras


def _encode_datetime(value: datetime) -> dict[str, JSONValue]:
    """Tag a datetime; the ISO text keeps the offset, ``tz`` the zone name if known."""
    return _tagged("datetime", value.isoformat(), **_zone_extras(value.tzinfo, value.fold))


def _encode_time(value: time) -> dict[str, JSONValue]:
    """Tag a time; a ZoneInfo zone has no offset without a date, so its key is kept."""
    return _tagged("time", value.isoformat(), **_zone_extras(value.tzinfo, value.fold))


def _b64(value: bytes | bytearray) -> str:
    """Return ``value`` as base64 text."""
    return base64.b64encode(value).decode("ascii")


def _encode_enum(member: Enum) -> dict[str, JSONValue]:
    """Tag an Enum member by class path and name.

    Combined Flag members (``R|W``) are not in ``__members__``, so they are stored by
    value instead and rebuilt by calling the class.
    """
    cls = type(member)
    path = _class_path(cls)
    if cls.__members__.get(member.name) is member:
        return _tagged("enum", member.name, cls=path)
    try:
        value = _encode(member.value)
    except _Unstorable as exc:
        exc.at(".value")
        raise
    return _tagged("enum", None, cls=path, value=value)


def _encode_model(model: BaseModel) -> dict[str, JSONValue]:
    """Tag a pydantic model by class path and its JSON-mode dump."""
    path = _class_path(type(model))
    try:
        data = model.model_dump(mode="json")
    except ValueError as exc:  # PydanticSerializationError: a field pydantic cannot dump
        raise _Unstorable(
            f"is a {_type_name(model)} model that pydantic cannot serialise ({exc}); {_ADVICE}"
        ) from None
    # The dump is JSON data already, but it may hold a "__tf__" key or a nan float.
    return _tagged("pydantic", _encode(data), cls=path)


def _encode_dataclass(obj: DataclassInstance) -> dict[str, JSONValue]:
    """Tag a dataclass instance by class path and its recursively encoded fields."""
    path = _class_path(type(obj))
    fields: dict[str, JSONValue] = {}
    for field in dataclasses.fields(obj):
        # An init=False field without a default may never have been set.
        item = getattr(obj, field.name, _MISSING)
        if item is _MISSING:
            continue
        try:
            fields[field.name] = _encode(item)
        except _Unstorable as exc:
            exc.at(f".{field.name}")
            raise
    return _tagged("dataclass", _escape_tag_key(fields), cls=path)


@lru_cache(maxsize=512)
def _class_path(cls: type) -> str:
    """Return ``module:qualname`` for ``cls`` after checking it resolves back to ``cls``.

    Successful checks are cached; refusals raise and so are re-checked next time.

    :raises _Unstorable: if the class cannot be found again by that path.
    """
    path = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise _Unstorable(
            f"is an instance of {path!r}, a class defined inside a function; taskflow "
            "restores classes by import path, so define it at module level"
        )
    # sys.modules rather than an import: encoding must not import modules as a side effect.
    if _lookup(sys.modules.get(cls.__module__), cls.__qualname__) is not cls:
        raise _Unstorable(
            f"is an instance of {path!r}, which cannot be found again by that import path; "
            "define the class at module level under its own name"
        )
    return path


def _lookup(owner: object, qualname: str) -> object:
    """Follow the dotted ``qualname`` from ``owner``; return None when a name is missing."""
    for name in qualname.split("."):
        owner = getattr(owner, name, None)
    return owner


# Each encoder takes a value of exactly the type it is filed under (Any: the table holds
# encoders of many types, and _encode looks them up by the value's type).
_ENCODERS: dict[type, Callable[[Any], JSONValue]] = {
    str: lambda value: value,
    int: lambda value: value,
    bool: lambda value: value,
    type(None): lambda value: value,
    float: _encode_float,
    list: _encode_items,
    dict: _encode_dict,
    tuple: lambda value: _tagged("tuple", _encode_items(value)),
    set: _encode_set,
    frozenset: _encode_set,
    datetime: _encode_datetime,
    date: lambda value: _tagged("date", value.isoformat()),
    time: _encode_time,
    timedelta: lambda value: _tagged("timedelta", [value.days, value.seconds, value.microseconds]),
    UUID: lambda value: _tagged("uuid", str(value)),
    Decimal: lambda value: _tagged("decimal", str(value)),
    bytes: lambda value: _tagged("bytes", _b64(value)),
    bytearray: lambda value: _tagged("bytearray", _b64(value)),
}


# ----------------------------------------------------------------------------- decoding


def _decode_tagged(obj: _Stored) -> object:
    """``json.loads`` object hook: rebuild a tagged value, pass other dicts through.

    The hook runs bottom-up, so a tag's contents are already decoded when it is seen.

    :raises TaskArgumentError: if the tag is unknown or its value cannot be restored.
    """
    if TAG not in obj:
        return obj
    tag = obj[TAG]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise TaskArgumentError(
            f"unknown stored value tag {tag!r}; was it written by a newer taskflow?"
        )
    try:
        return decoder(obj)
    except TaskArgumentError:
        raise
    except Exception as exc:  # a damaged payload or a failing __post_init__/validator
        raise TaskArgumentError(f"stored {tag!r} value cannot be restored: {exc}") from exc


def _load_class(path: str, kind: str, check: Callable[[type], TypeIs[type[_C]]]) -> type[_C]:
    """Import the class stored as ``module:qualname`` and check it is of the right kind.

    :param path: the stored class path.
    :param kind: what the class should be, for messages (e.g. ``"an Enum"``).
    :param check: returns whether the imported class is of that kind.
    :raises TaskArgumentError: if the class cannot be imported or is not of that kind.
    """
    module_name, _, qualname = path.partition(":")
    try:
        found = _lookup(importlib.import_module(module_name), qualname)
    except (ImportError, ValueError) as exc:
        raise TaskArgumentError(f"class {path!r} cannot be imported: {exc}") from exc
    if found is None:
        raise TaskArgumentError(
            f"class {path!r} cannot be imported: {module_name!r} has no {qualname!r}; "
            "was it renamed or removed since the value was stored?"
        )
    if not (isinstance(found, type) and check(found)):
        raise TaskArgumentError(f"stored class {path!r} is not {kind}")
    return found


def _is_enum(found: type) -> TypeIs[type[Enum]]:
    """Return whether ``found`` is an Enum class."""
    return issubclass(found, Enum)


def _is_model(found: type) -> TypeIs[type[BaseModel]]:
    """Return whether ``found`` is a pydantic model class."""
    return issubclass(found, BaseModel)


def _is_dataclass(found: type) -> TypeIs[type[DataclassInstance]]:
    """Return whether ``found`` is a dataclass."""
    return dataclasses.is_dataclass(found)


def _decode_datetime(obj: _Stored) -> datetime:
    """Rebuild a datetime, moving it into its named zone when that zone exists here."""
    value = datetime.fromisoformat(obj["v"])
    zone = _zone(obj.get("tz"))
    if zone is not None:
        return value.astimezone(zone)  # same instant, and the zone picks the right fold
    return value.replace(fold=1) if obj.get("fold") else value


def _decode_time(obj: _Stored) -> time:
    """Rebuild a time with its named zone (when that zone exists here) and fold."""
    value = time.fromisoformat(obj["v"])
    zone = _zone(obj.get("tz"))
    if zone is not None:
        value = value.replace(tzinfo=zone)
    return value.replace(fold=1) if obj.get("fold") else value


def _zone(key: str | None) -> ZoneInfo | None:
    """Return the ZoneInfo for ``key``, or None to keep the stored fixed offset."""
    if key is None:
        return None
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):  # no tz database entry on this machine
        return None


def _decode_enum(obj: _Stored) -> Enum:
    """Rebuild an Enum member by name, or by value for a combined Flag member."""
    cls = _load_class(obj["cls"], "an Enum", _is_enum)
    if "value" in obj:
        return cls(obj["value"])
    try:
        return cls[obj["v"]]
    except KeyError:
        raise TaskArgumentError(f"enum {obj['cls']!r} has no member {obj['v']!r}") from None


def _decode_model(obj: _Stored) -> BaseModel:
    """Rebuild a pydantic model by validating its stored dump."""
    cls = _load_class(obj["cls"], "a pydantic model", _is_model)
    return cls.model_validate(obj["v"])


def _decode_dataclass(obj: _Stored) -> DataclassInstance:
    """Rebuild a dataclass: init fields go to ``__init__``, the others are set after."""
    cls = _load_class(obj["cls"], "a dataclass", _is_dataclass)
    stored: _Stored = obj["v"]
    later = {field.name for field in dataclasses.fields(cls) if not field.init}
    instance = cls(**{name: item for name, item in stored.items() if name not in later})
    for name in later & stored.keys():
        # object.__setattr__ because frozen dataclasses refuse normal assignment.
        object.__setattr__(instance, name, stored[name])
    return instance


_DECODERS: dict[str, Callable[[_Stored], object]] = {
    "float": lambda obj: float(obj["v"]),
    "datetime": _decode_datetime,
    "date": lambda obj: date.fromisoformat(obj["v"]),
    "time": _decode_time,
    "timedelta": lambda obj: timedelta(*obj["v"]),
    "uuid": lambda obj: UUID(obj["v"]),
    "decimal": lambda obj: Decimal(obj["v"]),
    "bytes": lambda obj: base64.b64decode(obj["v"], validate=True),
    "bytearray": lambda obj: bytearray(base64.b64decode(obj["v"], validate=True)),
    "tuple": lambda obj: tuple(obj["v"]),
    "set": lambda obj: set(obj["v"]),
    "frozenset": lambda obj: frozenset(obj["v"]),
    "dict": lambda obj: dict(obj["v"]),
    "enum": _decode_enum,
    "pydantic": _decode_model,
    "dataclass": _decode_dataclass,
}
