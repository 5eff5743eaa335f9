"""Tests for taskflow._payloads.codec: exact round-trips, escaping, refusals and their messages."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from taskflow._payloads.codec import decode_call, dumps, encode_call, loads
from taskflow.errors import TaskArgumentError

PARIS = ZoneInfo("Europe/Paris")


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


class Address(BaseModel):
    city: str
    zip: str


class User(BaseModel):
    name: str
    joined: datetime
    address: Address
    tags: dict[str, Any] = {}


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Order:
    id: UUID
    items: tuple[Point, ...]
    total: Decimal
    labels: frozenset[str] = frozenset()
    note: str = dataclasses.field(default="", init=False)


@dataclasses.dataclass
class Counter:
    start: int
    seen: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.seen = 0


class Opaque:
    """An arbitrary class the codec must refuse."""


class MyInt(int):
    """An int subclass that is not an Enum; JSON would return a plain int."""


def roundtrip(value: object) -> object:
    """Encode and decode ``value``, checking the text is real JSON on the way."""
    text = dumps(value)
    json.loads(text)  # always valid JSON, never a pickle or repr
    return loads(text)


def assert_exact(value: object) -> None:
    """Assert ``value`` round-trips with the same type and an equal value."""
    out = roundtrip(value)
    assert type(out) is type(value)
    assert out == value


# ------------------------------------------------------------------------- plain JSON


def test_plain_json_is_written_compactly_and_unchanged() -> None:
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": False}}
    text = dumps(value)
    assert text == '{"a":[1,2.5,null,true,"x"],"b":{"c":false}}'
    assert loads(text) == value


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 10**30, 1.5, -0.0, "", "héllo"])
def test_scalars_round_trip_exactly(value: object) -> None:
    assert_exact(value)


def test_bool_int_and_intenum_stay_distinct() -> None:
    out = roundtrip([True, 1, Level.LOW, 1.0])
    assert [type(item) for item in out] == [bool, int, Level, float]  # type: ignore[union-attr]
    assert out[2] is Level.LOW  # type: ignore[index]


def test_lone_surrogate_string_round_trips() -> None:
    assert_exact("a\ud800b")


# ------------------------------------------------------------------- tagged scalars


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 5, 1, 12, 30, 15, 123456),
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        date(1999, 12, 31),
        time(23, 59, 58, 999),
        time(8, 15, tzinfo=timezone(timedelta(hours=2))),
        timedelta(days=-3, seconds=5, microseconds=7),
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("3.14159265358979323846264338327950288"),
        Decimal("-0"),
        b"\x00\xffbinary",
        bytearray(b"mutable"),
        (1, "a", None),
        (),
        {3, 1, 2},
        frozenset({"x", "y"}),
        set(),
    ],
)
def test_non_json_types_round_trip_exactly(value: object) -> None:
    assert_exact(value)


def test_decimal_keeps_its_exact_digits() -> None:
    assert str(roundtrip(Decimal("1.10"))) == "1.10"
    assert str(roundtrip(Decimal("1E+5"))) == "1E+5"


def test_aware_datetime_keeps_utc_singleton_and_offset() -> None:
    out = roundtrip(datetime(2024, 1, 1, tzinfo=UTC))
    assert out.tzinfo is UTC  # type: ignore[union-attr]
    shifted = roundtrip(datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))))
    assert shifted.utcoffset() == timedelta(hours=5, minutes=45)  # type: ignore[union-attr]


def test_zoneinfo_datetime_round_trips_as_the_same_zone() -> None:
    value = datetime(2024, 7, 1, 9, 0, tzinfo=PARIS)
    out = roundtrip(value)
    assert out == value
    assert out.tzinfo is PARIS  # type: ignore[union-attr]
    assert out.hour == 9 and out.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]


def test_zoneinfo_datetime_in_ambiguous_hour_keeps_its_fold() -> None:
    # 02:30 happens twice in Paris on 2024-10-27; fold=1 is the second (UTC+1) one.
    value = datetime(2024, 10, 27, 2, 30, tzinfo=PARIS, fold=1)
    out = roundtrip(value)
    assert out.fold == 1  # type: ignore[union-attr]
    assert out.utcoffset() == timedelta(hours=1)  # type: ignore[union-attr]
    assert out.tzinfo is PARIS  # type: ignore[union-attr]


def test_naive_datetime_keeps_fold() -> None:
    out = roundtrip(datetime(2024, 10, 27, 2, 30, fold=1))
    assert out.fold == 1  # type: ignore[union-attr]
    assert out.tzinfo is None  # type: ignore[union-attr]


def test_zoneinfo_time_keeps_its_zone() -> None:
    out = roundtrip(time(7, 45, tzinfo=PARIS))
    assert out == time(7, 45)  # equality ignores a zone without an offset; check it below
    assert out.tzinfo is PARIS  # type: ignore[union-attr]


def test_unknown_zone_key_falls_back_to_fixed_offset() -> None:
    text = dumps(datetime(2024, 7, 1, 9, 0, tzinfo=PARIS)).replace("Europe/Paris", "Mars/Olympus")
    out = loads(text)
    assert out == datetime(2024, 7, 1, 9, 0, tzinfo=PARIS)
    assert out.tzinfo == timezone(timedelta(hours=2))  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_round_trip(value: float) -> None:
    assert_exact(value)


def test_nan_round_trips_and_output_is_strict_json() -> None:
    text = dumps([math.nan])
    assert "NaN" not in text
    out = loads(text)
    assert type(out[0]) is float and math.isnan(out[0])  # type: ignore[index]


def test_equal_sets_encode_identically() -> None:
    assert dumps({"b", "a", "c"}) == dumps({"c", "a", "b"})
    assert dumps(frozenset({(1, 2), (0, 5)})) == dumps(frozenset({(0, 5), (1, 2)}))


# ------------------------------------------------------------------------ classes


@pytest.mark.parametrize(
    "member", [Color.RED, Level.HIGH, Mode.SLOW, Perm.READ, Perm.READ | Perm.WRITE, Perm(0)]
)
def test_enum_members_round_trip_as_the_same_member(member: enum.Enum) -> None:
    out = roundtrip(member)
    assert type(out) is type(member)
    assert out is member or out == member


def test_enum_is_stored_by_class_path_and_name() -> None:
    data = json.loads(dumps(Color.GREEN))
    assert data == {"__tf__": "enum", "v": "GREEN", "cls": f"{__name__}:Color"}


def test_pydantic_model_round_trips() -> None:
    user = User(
        name="ada",
        joined=datetime(2024, 3, 1, 8, tzinfo=UTC),
        address=Address(city="Paris", zip="75001"),
        tags={"__tf__": "not a tag", "n": [1, 2]},
    )
    out = roundtrip(user)
    assert type(out) is User
    assert out == user
    assert type(out.address) is Address  # type: ignore[union-attr]
    assert out.joined == user.joined  # type: ignore[union-attr]


def test_dataclass_round_trips_with_nested_types() -> None:
    order = Order(
        id=UUID(int=7),
        items=(Point(1, 2), Point(-3, 4)),
        total=Decimal("19.99"),
        labels=frozenset({"gift"}),
    )
    out = roundtrip(order)
    assert type(out) is Order
    assert out == order
    assert type(out.items) is tuple and type(out.items[0]) is Point  # type: ignore[union-attr]
    assert type(out.labels) is frozenset  # type: ignore[union-attr]


def test_frozen_dataclass_init_false_field_is_restored() -> None:
    order = Order(id=UUID(int=1), items=(), total=Decimal("0"))
    object.__setattr__(order, "note", "changed after init")
    out = roundtrip(order)
    assert out.note == "changed after init"  # type: ignore[union-attr]


def test_init_false_field_overrides_post_init() -> None:
    counter = Counter(start=5)
    counter.seen = 42
    out = roundtrip(counter)
    assert (out.start, out.seen) == (5, 42)  # type: ignore[union-attr]


# ------------------------------------------------------------------ dicts and nesting


def test_dict_with_non_str_keys_round_trips_with_key_types() -> None:
    value = {1: "int", (2, "t"): "tuple", Color.RED: "enum", frozenset({1}): "fs", "s": "str"}
    out = roundtrip(value)
    assert out == value
    assert [type(key) for key in out] == [int, tuple, Color, frozenset, str]  # type: ignore[union-attr]


def test_dict_key_order_is_kept() -> None:
    value = {"z": 1, "a": 2, 3: 4}
    assert list(roundtrip(value)) == ["z", "a", 3]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "value",
    [
        {"__tf__": "datetime", "v": "2024-01-01T00:00:00"},
        {"__tf__": 1},
        [{"x": {"__tf__": "tuple", "v": [1]}}],
        {1: {"__tf__": "set"}},
    ],
)
def test_user_dicts_with_tag_key_are_escaped(value: object) -> None:
    assert_exact(value)


def test_deep_nesting_of_mixed_types_round_trips() -> None:
    value = {
        "when": [datetime(2024, 1, 2, 3, 4, tzinfo=PARIS), (date(2024, 1, 2), {b"k"})],
        "orders": {Level.LOW: [Point(0, 0), {"p": Point(1, 1)}]},
        "money": (Decimal("1.5"), math.inf, frozenset({Mode.FAST})),
    }
    out = roundtrip(value)
    assert out == value
    assert type(out["when"][1]) is tuple  # type: ignore[index]
    assert type(out["when"][1][1]) is set  # type: ignore[index]
    assert type(next(iter(out["orders"]))) is Level  # type: ignore[index]


# -------------------------------------------------------------------- call payloads


def test_encode_call_plain_arguments() -> None:
    text = encode_call(("a@b.c",), {})
    assert text == '{"args":["a@b.c"],"kwargs":{}}'
    assert decode_call(text) == (("a@b.c",), {})


def test_encode_call_round_trips_typed_arguments() -> None:
    args = (Point(1, 2), (1, 2), {"k": date(2020, 2, 2)})
    kwargs = {"color": Color.GREEN, "when": timedelta(hours=1), "data": b"xy"}
    out_args, out_kwargs = decode_call(encode_call(args, kwargs))
    assert type(out_args) is tuple
    assert out_args == args and out_kwargs == kwargs
    assert type(out_args[1]) is tuple
    assert out_kwargs["color"] is Color.GREEN


def test_encode_call_keyword_named_like_the_tag() -> None:
    args, kwargs = decode_call(encode_call((), {"__tf__": 1, "v": 2}))
    assert args == () and kwargs == {"__tf__": 1, "v": 2}


def test_decode_call_rejects_other_json() -> None:
    with pytest.raises(TaskArgumentError, match="malformed call payload"):
        decode_call("[1, 2]")


# ------------------------------------------------------------------------- refusals


def _unstorable_values() -> list[object]:
    def gen() -> Any:
        yield 1

    return [object(), Opaque(), len, lambda: 1, gen(), Opaque, MyInt(3), Color]


@pytest.mark.parametrize("value", _unstorable_values())
def test_unsupported_values_are_refused(value: object) -> None:
    with pytest.raises(TaskArgumentError) as info:
        dumps(value, what="result")
    message = str(info.value)
    assert message.startswith(f"result has type {type(value).__qualname__!r}")
    assert "pass JSON-compatible values, dataclasses or pydantic models" in message


def test_file_handle_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "f.txt", "w") as handle, pytest.raises(TaskArgumentError):
        dumps({"f": handle})


def test_refusal_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        dumps(Opaque())


def test_refusal_names_positional_argument() -> None:
    with pytest.raises(TaskArgumentError) as info:
        encode_call(("ok", Opaque()), {})
    assert str(info.value) == (
        "argument 1 (args[1]) has type 'Opaque', which taskflow cannot store faithfully; "
        "pass JSON-compatible values, dataclasses or pydantic models"
    )


def test_refusal_names_keyword_argument() -> None:
    with pytest.raises(TaskArgumentError) as info:
        encode_call((), {"user": Opaque()})
    assert str(info.value).startswith("argument 'user' (kwargs['user']) has type 'Opaque',")


def test_refusal_names_the_nested_path() -> None:
    with pytest.raises(TaskArgumentError) as info:
        encode_call((), {"user": {"items": [1, 2, Opaque()]}})
    assert str(info.value).startswith(
        "argument 'user'['items'][2] (kwargs['user']['items'][2]) has type 'Opaque',"
    )


def test_refusal_path_through_tuple_dataclass_and_set() -> None:
    with pytest.raises(TaskArgumentError, match=r"^result\[0\]\.x has type 'Opaque'"):
        dumps((Point(Opaque(), 1),), what="result")  # type: ignore[arg-type]
    with pytest.raises(TaskArgumentError, match=r"^value\['s'\]\{\.\.\.\} has type 'Opaque'"):
        dumps({"s": {Opaque()}})


def test_refusal_of_unstorable_dict_key() -> None:
    with pytest.raises(TaskArgumentError, match=r"^value \(key <.*>\) has type 'Opaque'"):
        dumps({Opaque(): 1})


def test_self_containing_value_is_refused() -> None:
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(TaskArgumentError, match="contains itself"):
        dumps(value)


def test_locally_defined_classes_are_refused() -> None:
    @dataclasses.dataclass
    class LocalPoint:
        x: int

    class LocalColor(enum.Enum):
        RED = 1

    class LocalModel(BaseModel):
        x: int

    for value in (LocalPoint(1), LocalColor.RED, LocalModel(x=1)):
        with pytest.raises(TaskArgumentError) as info:
            encode_call((value,), {})
        message = str(info.value)
        assert message.startswith("argument 0 (args[0]) is an instance of")
        assert f"{type(value).__qualname__}'" in message
        assert "defined inside a function" in message


def test_class_not_importable_by_its_path_is_refused() -> None:
    renamed = dataclasses.make_dataclass("Renamed", [("x", int)])
    renamed.__module__ = __name__
    with pytest.raises(TaskArgumentError, match="cannot be found again by that import path"):
        dumps(renamed(1))


# --------------------------------------------------------------------- bad payloads


def test_loads_names_a_class_that_no_longer_exists() -> None:
    text = json.dumps({"__tf__": "dataclass", "cls": f"{__name__}:Gone", "v": {}})
    with pytest.raises(TaskArgumentError, match=f"'{__name__}:Gone' cannot be imported"):
        loads(text)


def test_loads_names_a_module_that_no_longer_exists() -> None:
    text = dumps(Color.RED).replace(__name__, "no_such_module_xyz")
    with pytest.raises(TaskArgumentError, match="'no_such_module_xyz:Color' cannot be imported"):
        loads(text)


def test_loads_names_a_removed_enum_member() -> None:
    text = dumps(Color.RED).replace('"RED"', '"PURPLE"')
    with pytest.raises(TaskArgumentError, match="has no member 'PURPLE'"):
        loads(text)


def test_loads_refuses_to_call_classes_of_the_wrong_kind() -> None:
    for tag, path in (("dataclass", "os:system"), ("pydantic", "builtins:dict")):
        text = json.dumps({"__tf__": tag, "cls": path, "v": {}})
        with pytest.raises(TaskArgumentError, match=f"'{path}' is not a"):
            loads(text)


def test_loads_refuses_unknown_tags_and_damaged_values() -> None:
    with pytest.raises(TaskArgumentError, match="unknown stored value tag 'mystery'"):
        loads('{"__tf__": "mystery", "v": 1}')
    with pytest.raises(TaskArgumentError, match="stored 'uuid' value cannot be restored"):
        loads('{"__tf__": "uuid", "v": "not-a-uuid"}')
