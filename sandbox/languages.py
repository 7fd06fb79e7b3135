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
        return jobs_pb2.Language.Value("LANGUAGE_" + self.name)

    @classmethod
    def from_proto(cls, value: int) -> Language:
        if value == jobs_pb2.LANGUAGE_UNSPECIFIED or value not in jobs_pb2.Language.values():
            raise InvalidArgument("language: must be one of lua, javascript, python")
        return cls[jobs_pb2.Language.Name(value).removeprefix("LANGUAGE_")]  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> Language:
        key = text.strip().lower().lstrip(".")
        found = _ALIASES.get(key)
        if found is None:
            raise InvalidArgument(f"language: unknown language {text!r}; use lua, javascript or python")
        return found


_ALIASES = {
    "lua": Language.LUA,
    "js": Language.JAVASCRIPT,
    "mjs": Language.JAVASCRIPT,
    "javascript": Language.JAVASCRIPT,
    "py": Language.PYTHON,
    "python": Language.PYTHON,
}
