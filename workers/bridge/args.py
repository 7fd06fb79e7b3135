"""Checks for the arguments scripts pass to global operations: one clear INVALID_ARGUMENT each,
naming the operation and the argument. Shared by every bridge module."""

from __future__ import annotations

from contextvars import ContextVar

from scriptpool.core.script_times import parse_time
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2
from scriptpool.values import PlainValue, to_value_map

SCRIPT_LANGUAGE: ContextVar[str] = ContextVar("script_language", default="")
"""The language of the script whose call is being handled (set by the bridge for each call), so a
refusal names a value's kind in that language's words, never a Python type name."""

_KINDS: dict[str, dict[type, str]] = {
    "lua": {bool: "a boolean", int: "a number", float: "a number", str: "a string", bytes: "a string",
            list: "a table", dict: "a table", type(None): "nil"},
    "javascript": {bool: "a boolean", int: "a number", float: "a number", str: "a string",
                   bytes: "a Uint8Array", list: "an array", dict: "an object", type(None): "null"},
    "python": {bool: "a bool", int: "an int", float: "a float", str: "a str", bytes: "bytes",
               list: "a list", dict: "a dict", type(None): "None"},
}  # fmt: skip
_NEUTRAL = {bool: "a boolean", int: "a number", float: "a number", str: "a string", bytes: "bytes",
            list: "a list/array", dict: "a table/object", type(None): "nil/null"}  # fmt: skip


def kind(value: PlainValue) -> str:
    """`value`'s kind as the calling script's language names it ("a table" in Lua, "an object" in
    JavaScript, "a dict" in Python)."""
    return _KINDS.get(SCRIPT_LANGUAGE.get(), _NEUTRAL).get(type(value), "a value")


def in_words(default: str, **by_language: str) -> str:
    """The calling script's language's phrase among `by_language` (keyed lua, javascript, python)."""
    return by_language.get(SCRIPT_LANGUAGE.get(), default)


def string_arg(value: PlainValue, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {kind(value)}")
    return value


UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


def count_arg(value: PlainValue, what: str, maximum: int = UINT64_MAX) -> int:
    """A whole number from 0 to `maximum` (the range of the protobuf field it goes into: a value
    outside it would fail building the request); nil is 0. Floats (even whole, NaN, inf) are refused."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        shown = repr(value) if isinstance(value, (int, float)) else kind(value)
        raise InvalidArgument(f"{what} must be an integer from 0 to {maximum} (got {shown})")
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
        raise InvalidArgument(f"{what} must be a table/map, got {kind(value)}")
    return value


def value_map_arg(value: PlainValue, what: str) -> common_pb2.ValueMap:
    return to_value_map(table_arg(value, what))


def page_value(items: list[PlainValue], next_cursor: str) -> PlainValue:
    """A page of a paged operation (`scriptpool.sandbox.catalog.PAGED_OPS`) as it crosses to the
    engine: `{items, next_cursor}`; each engine gives the script the items as its list with
    `next_cursor` on it (nil/undefined/None when nothing remains)."""
    return {"items": items, "next_cursor": next_cursor or None}


def time_arg(value: PlainValue, what: str) -> float:
    """A time filter: seconds since the epoch or an ISO-8601 string (ADR 0011), as seconds."""
    try:
        return parse_time(value, what)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
