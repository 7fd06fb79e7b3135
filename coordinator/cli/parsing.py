"""How `scriptpool` reads its command line: global flags in any position, one-line mistakes.

Global flags (`GLOBAL_FLAGS`) may come before or after the subcommand (`scriptpool --json job get ID`
and `scriptpool job get ID --json` are the same): `split_global_flags` takes them out of the words
wherever they are (up to a `--`) before argparse sees the rest, and `apply_global_flags` puts their
values on the parsed namespace under the same names the subcommands' own flags use. A new global
flag is one more `GlobalFlag` in the table.

Every mistake argparse finds (an unknown flag in any position, a bad number, a missing argument) is
one line on stderr and exit 2 (`OneLineParser`); the numeric types below refuse negative and
non-finite numbers the same way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: INVALID_ARGUMENT: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class UsageError(Exception):
    """A global flag written wrongly (a missing value, a value given to a switch)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GlobalFlag:
    names: tuple[str, ...]
    """Every spelling, e.g. ("-v", "--verbose")."""
    dest: str
    """The namespace attribute it sets (the same one a subcommand's own flag of that name sets)."""
    takes_value: bool
    """True: `--flag VALUE` or `--flag=VALUE`; False: a switch that sets True."""
    help: str


GLOBAL_FLAGS: tuple[GlobalFlag, ...] = (
    GlobalFlag(
        names=("--coordinator",),
        dest="coordinator",
        takes_value=True,
        help="coordinator address (default: $SCRIPTPOOL_COORDINATOR or 127.0.0.1:50051)",
    ),
    GlobalFlag(
        names=("--api-key",),
        dest="api_key",
        takes_value=True,
        help="API key (default: $SCRIPTPOOL_API_KEY or the one `scriptpool up` wrote)",
    ),
    GlobalFlag(names=("-v", "--verbose"), dest="verbose", takes_value=False, help="log at INFO level"),
    GlobalFlag(names=("--json",), dest="json", takes_value=False, help="machine-readable output (JSON)"),
)


def _by_name(flags: Sequence[GlobalFlag]) -> dict[str, GlobalFlag]:
    return {name: flag for flag in flags for name in flag.names}


def split_global_flags(
    words: Sequence[str], flags: Sequence[GlobalFlag] = GLOBAL_FLAGS
) -> tuple[list[str], dict[str, object]]:
    """(the words without the global flags, {dest: value} of the global flags found)."""
    by_name = _by_name(flags)
    rest: list[str] = []
    found: dict[str, object] = {}
    position = 0
    while position < len(words):
        word = words[position]
        if word == "--":
            rest.extend(words[position:])
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        flag = by_name.get(name)
        if flag is None:
            rest.append(word)
        elif flag.takes_value:
            if not equals:
                if position + 1 >= len(words):
                    raise UsageError(f"{name} needs a value")
                position += 1
                value = words[position]
            found[flag.dest] = value
        else:
            if equals:
                raise UsageError(f"{name} takes no value")
            found[flag.dest] = True
        position += 1
    return rest, found


def add_global_flags(parser: argparse.ArgumentParser, flags: Sequence[GlobalFlag] = GLOBAL_FLAGS) -> None:
    """Show the global flags in `scriptpool --help` (they never reach argparse: see split_global_flags)."""
    group = parser.add_argument_group("global flags (before or after the subcommand)")
    for flag in flags:
        if flag.takes_value:
            group.add_argument(*flag.names, dest=f"global_{flag.dest}", metavar=flag.dest.upper(), help=flag.help)
        else:
            group.add_argument(*flag.names, dest=f"global_{flag.dest}", action="store_true", help=flag.help)


def apply_global_flags(
    args: argparse.Namespace, found: dict[str, object], flags: Sequence[GlobalFlag] = GLOBAL_FLAGS
) -> None:
    """Every global flag's value on `args` under its dest: the one given, else the subcommand's default."""
    for flag in flags:
        if flag.dest in found:
            setattr(args, flag.dest, found[flag.dest])
        elif not hasattr(args, flag.dest):
            setattr(args, flag.dest, None if flag.takes_value else False)


def parse(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """Parse `words` (global flags anywhere); a mistake exits 2 with one line."""
    try:
        rest, found = split_global_flags(words)
    except UsageError as exc:
        parser.error(str(exc))
    args = parser.parse_args(rest)
    apply_global_flags(args, found)
    return args


# ------------------------------------------------------------------ numeric flag types
def _number(kind: Callable[[str], float], text: str, *, allow_zero: bool) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"must be {'0 or more' if allow_zero else 'more than 0'} (got {text!r})")
    return value


def non_negative_int(text: str) -> int:
    return int(_number(int, text, allow_zero=True))


def positive_int(text: str) -> int:
    return int(_number(int, text, allow_zero=False))


def non_negative_float(text: str) -> float:
    return _number(float, text, allow_zero=True)


def positive_float(text: str) -> float:
    return _number(float, text, allow_zero=False)
