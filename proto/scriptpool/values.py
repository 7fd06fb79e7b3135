"""Marshalling between plain Python values and `scriptpool.v1.Value`.

Plain values are what every engine binding converts to and from: None, bool, int, float, str,
bytes, list, dict[str, ...]. Integers stay integers and floats stay floats; bytes stay bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2

PlainValue: TypeAlias = None | bool | int | float | str | bytes | list["PlainValue"] | dict[str, "PlainValue"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32
"""Lists and maps a value may nest, everywhere (scripts, jobs' inputs and results, events, calls).
Every hop parses protobuf with a recursion limit of 100 message levels, and one map level costs 3
(Value, ValueMap, its entry): 32 levels plus the deepest envelope (a job result in a
ListJobsResponse) fit, 33 maps do not (tests/unit/test_value_depth.py)."""


_NOT_TEXT = "a string holds a lone surrogate (it is not Unicode text): pass bytes instead"


def to_value(obj: object, *, _depth: int = 0) -> common_pb2.Value:
    """Convert a plain Python value to a Value message; anything else is InvalidArgument."""
    out = common_pb2.Value()
    _fill(out, obj, _depth)
    return out


def _fill(out: common_pb2.Value, obj: object, depth: int) -> None:
    if obj is None:
        out.null_value = True
    elif isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, int):
        if not INT64_MIN <= obj <= INT64_MAX:
            # Not the number itself: formatting a huge int is refused past 4,300 digits (a ValueError).
            raise InvalidArgument(f"integer of {obj.bit_length()} bits does not fit in 64 bits")
        out.int_value = obj
    elif isinstance(obj, float):
        out.float_value = obj
    elif isinstance(obj, str):
        try:
            out.string_value = obj
        except UnicodeEncodeError:
            raise InvalidArgument(_NOT_TEXT) from None
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.bytes_value = bytes(obj)
    else:
        _fill_container(out, obj, depth)


def _fill_container(out: common_pb2.Value, obj: object, depth: int) -> None:
    if depth >= MAX_DEPTH:  # `depth` containers enclose this one
        raise InvalidArgument(f"value is nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, Mapping):
        out.map_value.SetInParent()
        for key, item in obj.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"map keys must be strings, got {type(key).__name__}")
            try:
                entry = out.map_value.fields[key]
            except UnicodeEncodeError:
                raise InvalidArgument(_NOT_TEXT) from None
            _fill(entry, item, depth + 1)
    elif isinstance(obj, Sequence):
        out.list_value.SetInParent()
        for item in obj:
            _fill(out.list_value.items.add(), item, depth + 1)
    else:
        raise InvalidArgument(f"a {type(obj).__name__} cannot be passed as a value")


def from_value(value: common_pb2.Value) -> PlainValue:
    """Convert a Value message back to a plain Python value (unset Value = None)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "float_value":
        return value.float_value
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.items]
    return {k: from_value(v) for k, v in value.map_value.fields.items()}


def to_value_map(obj: Mapping[str, object]) -> common_pb2.ValueMap:
    value = to_value(obj)
    return value.map_value


def from_value_map(value_map: common_pb2.ValueMap) -> dict[str, PlainValue]:
    return {k: from_value(v) for k, v in value_map.fields.items()}
