"""The script languages, their file extensions and wire values."""

from __future__ import annotations

import enum

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import jobs_pb2


class Language(enum.StrEnum):
    LUA = "lua"
    JAVASCRIPT = "javascript"
    PYTHON = "python"

    def to_proto(self) -> jobs_pb2.Language.ValueType:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Language:
        found = _FROM_PROTO.get(value)
        if found is None:
            raise InvalidArgument("language: must be one of lua, javascript, python")
        return found

    @classmethod
    def parse(cls, text: str) -> Language:
        key = text.strip().lower().lstrip(".")
        found = _ALIASES.get(key)
        if found is None:
            raise InvalidArgument(f"language: unknown language {text!r}; use lua, javascript or python")
        return found


_TO_PROTO = {language: jobs_pb2.Language.Value("LANGUAGE_" + language.name) for language in Language}
_FROM_PROTO: dict[int, Language] = {value: language for language, value in _TO_PROTO.items()}
"""Wire value <-> language, looked up per job (protobuf's Name()/Value() cost microseconds each)."""

_ALIASES = {
    "lua": Language.LUA,
    "js": Language.JAVASCRIPT,
    "mjs": Language.JAVASCRIPT,
    "javascript": Language.JAVASCRIPT,
    "py": Language.PYTHON,
    "python": Language.PYTHON,
}
