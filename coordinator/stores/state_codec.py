"""How a State value is stored in its scope's Redis hash, so the Lua scripts can do arithmetic on it.

  -?[0-9]+            an integer, as HINCRBY writes it (exact 64-bit arithmetic, overflow refused)
  'f' + 8 bytes       a float, big-endian IEEE 754 (Lua's `struct` reads and writes it exactly)
  'v' + Value bytes   anything else: bool, string, bytes, list, map (deterministic protobuf)

null is never stored: setting a key to null deletes it. A stored value is never empty, so the
scripts use `HSTRLEN == 0` for "absent", and the field `""` (never a valid key) holds the bytes used.
"""

from __future__ import annotations

import struct

from scriptpool.coordinator.stores.validation import value_depth
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2

MAX_DEPTH = 32

_KIND_NAMES = {
    "bool_value": "a boolean",
    "string_value": "a string",
    "bytes_value": "bytes",
    "list_value": "a list",
    "map_value": "a map",
}


def is_null(value: common_pb2.Value) -> bool:
    return value.WhichOneof("kind") in (None, "null_value")


def encode(value: common_pb2.Value, what: str, max_bytes: int) -> bytes:
    """A non-null value as stored; INVALID_ARGUMENT if it is too big or too deeply nested."""
    kind = value.WhichOneof("kind")
    if kind == "int_value":
        return str(value.int_value).encode()
    if kind == "float_value":
        return b"f" + struct.pack(">d", value.float_value)
    depth = value_depth(value)
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{what} is nested {depth} levels deep; the maximum is {MAX_DEPTH}")
    data = b"v" + value.SerializeToString(deterministic=True)
    if len(data) > max_bytes:
        raise InvalidArgument(
            f"{what} is {len(data)} bytes encoded; the maximum is {max_bytes} (store large data as an Artifact)"
        )
    return data


def encode_number(value: common_pb2.Value, what: str) -> bytes:
    """An increment: an integer or a float; absent means 1."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return b"1"
    if kind in ("int_value", "float_value"):
        return encode(value, what, 16)
    raise InvalidArgument(f"{what} must be an integer or a float, got {_KIND_NAMES.get(kind or '', 'null')}")


def decode(raw: bytes) -> common_pb2.Value:
    tag = raw[:1]
    if tag == b"f":
        return common_pb2.Value(float_value=struct.unpack(">d", raw[1:9])[0])
    if tag == b"v":
        return common_pb2.Value.FromString(raw[1:])
    return common_pb2.Value(int_value=int(raw))


def kind_name(raw: bytes) -> str:
    """What a stored value is, for messages: "a string", "a map", ..."""
    value = decode(raw)
    return _KIND_NAMES.get(value.WhichOneof("kind") or "", "a number")
