"""The coordinator's store scripts, as `.lua` files beside this module, read once at import (the
core's record scripts are in `scriptpool.core.lua`, whose loader this uses: header comments left out,
`${NAME}` placeholders filled from the Python constants)."""

from __future__ import annotations

from scriptpool.core.lua import read


def script(name: str, **values: object) -> str:
    """The store script `name`.lua."""
    return read(__name__, name, **values)


__all__ = ["script"]
