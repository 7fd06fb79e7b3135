"""Checks for the arguments scripts pass to global operations: one clear INVALID_ARGUMENT each,
naming the operation and the argument. Shared by every bridge module."""

from __future__ import annotations

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2
from scriptpool.values import PlainValue, to_value_map


def string_arg(value: PlainValue, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
    return value


def count_arg(value: PlainValue, what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer")
    return value


def strings_arg(value: PlainValue, what: str) -> list[str]:
    """A list of strings; nil and an empty table (which Lua cannot tell from a map) are empty."""
    if value is None or value == {}:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return [str(v) for v in value]


def table_arg(value: PlainValue, what: str) -> dict[str, PlainValue]:
    """A map; nil and an empty table are empty."""
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a table/map, got {type(value).__name__}")
    return value


def value_map_arg(value: PlainValue, what: str) -> common_pb2.ValueMap:
    return to_value_map(table_arg(value, what))
