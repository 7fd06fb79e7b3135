"""The record scripts, as `.lua` files beside this module (the way dramatiq keeps
`brokers/redis/*.lua`), read once when the module that uses them is imported.

A file's leading `--` comment lines describe it and are not sent to Redis; `${NAME}` in a file is
replaced with the value its loader passes (a key or field name, a bound), so a name is still defined
once, in Python. A file that needs another's functions (`append_event`, `log_job`) says so in its
first line and is loaded after it."""

from __future__ import annotations

from importlib import resources
from string import Template


def read(package: str, name: str, **values: object) -> str:
    """The script `name`.lua in `package`, its header comment left out and its `${NAME}`s filled in
    (a missing value raises KeyError at import, not a Lua error at run time)."""
    lines = resources.files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return Template("".join(lines)).substitute({key: str(value) for key, value in values.items()})


def load(name: str, **values: object) -> str:
    """A record script of the core (`read` in this package)."""
    return read(__name__, name, **values)


__all__ = ["load", "read"]
