"""The `JSON` global of Lua scripts (rs-llmspell's `JSON.stringify` / `JSON.parse`), run in the
sandbox child itself: no coordinator call, and not counted as a global call.

`stringify(v)` gives compact JSON with sorted object keys (what serde_json gives rs-llmspell): nil
and `null` are `null`, a table with the keys 1..n an array, any other table of string keys an object
(`{}` is `{}`). A function, a table mixing key kinds, a table containing itself, a value nested
deeper than MAX_DEPTH, a NaN or an infinity, or a string that is no UTF-8 is refused
(INVALID_ARGUMENT). `parse(s)` gives Lua values (null is nil, arrays are 1-based, integers stay
integers; an integer outside 64 bits becomes a float); bad JSON, NaN/Infinity, or nesting deeper than
MAX_DEPTH is refused (INVALID_ARGUMENT). The answer must fit in the job's memory limit like any other.
"""

from __future__ import annotations

import json
from typing import NoReturn

from scriptpool.errors import InvalidArgument
from scriptpool.values import MAX_DEPTH, PlainValue

JSON_OPS = frozenset({"JSON.stringify", "JSON.parse"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_LUA_KINDS = {bool: "boolean", int: "number", float: "number", bytes: "string"}


def _depth(value: PlainValue) -> int:
    deepest = 0
    pending: list[tuple[PlainValue, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                return deepest
            pending.extend((nested, depth + 1) for nested in (item.values() if isinstance(item, dict) else item))
    return deepest


def _integer(text: str) -> int | float:
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else float(number)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def stringify(value: PlainValue) -> str:
    if isinstance(value, bytes):
        raise InvalidArgument("JSON.stringify: the string is not UTF-8 text")
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except ValueError:
        raise InvalidArgument("JSON.stringify: NaN and infinity have no JSON form") from None
    except TypeError:  # bytes nested inside (a string that is no UTF-8)
        raise InvalidArgument("JSON.stringify: a string in the value is not UTF-8 text") from None


def parse(text: PlainValue) -> PlainValue:
    if not isinstance(text, str):
        kind = "a table" if isinstance(text, (list, dict)) else "nil" if text is None else "a " + _LUA_KINDS[type(text)]
        raise InvalidArgument(f"JSON.parse: expected a JSON string, got {kind}")
    try:
        value: PlainValue = json.loads(text, parse_int=_integer, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidArgument(f"JSON.parse: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"JSON.parse: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise InvalidArgument(f"JSON.parse: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidArgument(f"JSON.parse: nested deeper than {MAX_DEPTH} levels")
    return value


def json_op(op: str, args: list[PlainValue]) -> PlainValue:
    value = args[0] if args else None
    return stringify(value) if op == "JSON.stringify" else parse(value)


__all__ = ["JSON_OPS", "json_op", "parse", "stringify"]
