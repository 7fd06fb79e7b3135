"""Checks shared by the stores: ids, names, tags, metadata size and depth."""

from __future__ import annotations

import re

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAX_NAME = 255
MAX_DESCRIPTION = 4096
MAX_TAG = 64
MAX_TAGS = 100
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 16


def check_uuid(value: str, what: str) -> str:
    if not UUID4.match(value or ""):
        raise InvalidArgument(f"invalid {what} {value!r}: expected a UUIDv4 string")
    return value


def check_text(value: str, what: str, maximum: int) -> str:
    if len(value) > maximum:
        raise InvalidArgument(f"{what} is {len(value)} characters; the maximum is {maximum}")
    return value


def check_tags(tags: list[str], what: str = "tags") -> list[str]:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{what}: {len(tags)} tags; the maximum is {MAX_TAGS}")
    seen: list[str] = []
    for tag in tags:
        if not tag or len(tag) > MAX_TAG:
            raise InvalidArgument(f"{what}: each tag must be 1-{MAX_TAG} characters (got {tag!r})")
        if tag not in seen:
            seen.append(tag)
    return seen


def value_depth(value: common_pb2.Value) -> int:
    """Nesting levels of lists and maps in a value (0 for a scalar)."""
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return 1 + max((value_depth(v) for v in value.list_value.items), default=0)
    if kind == "map_value":
        return 1 + max((value_depth(v) for v in value.map_value.fields.values()), default=0)
    return 0


def check_metadata(metadata: common_pb2.ValueMap, what: str = "metadata") -> bytes:
    data = metadata.SerializeToString(deterministic=True)
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"{what} is {len(data)} bytes; the maximum is {MAX_METADATA_BYTES}")
    depth = 1 + max((value_depth(v) for v in metadata.fields.values()), default=0)
    if depth > MAX_METADATA_DEPTH:
        raise InvalidArgument(f"{what} is nested {depth} levels deep; the maximum is {MAX_METADATA_DEPTH}")
    return data


MAX_CURSOR = 2**53
"""Largest position a page cursor may name (a Redis range index is a signed 64-bit integer)."""


def parse_cursor(cursor: str) -> int:
    """A page cursor (a position this server handed out as `next_cursor`): "" = 0; anything that is
    not a decimal position up to `MAX_CURSOR` is INVALID_ARGUMENT, never read as the first page."""
    if not cursor:
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 16 or int(cursor) > MAX_CURSOR:
        raise InvalidArgument(f"invalid cursor {cursor[:40]!r}: pass back the next_cursor of the previous page")
    return int(cursor)
