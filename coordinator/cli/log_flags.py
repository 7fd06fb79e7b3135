"""The logging flags every subcommand shares (`-v`, `--log-level`, `--log-format`), applied before
the command runs (`scriptpool.core.log_setup`, docs/adr/0014-logs-and-tracing.md)."""

from __future__ import annotations

import argparse

from scriptpool.core.log_setup import FORMATS, LEVELS, LogSettings, configure

SERVER_COMMANDS = frozenset({"up", "coordinator", "worker"})
"""They log at INFO by default."""
STARTING_COMMANDS = SERVER_COMMANDS | {"demo", "bench"}
"""They start scriptpool processes, which log as they do (`demo`'s and `bench`'s stacks stay at
WARNING unless asked otherwise)."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    # No `choices`: a bad value is refused by LogSettings.resolve in one line (exit 2), as the
    # environment variables are.
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"{', '.join(LEVELS)} (default $SCRIPTPOOL_LOG_LEVEL, else INFO for up/coordinator/worker, "
        "WARNING otherwise)",
    )
    parser.add_argument(
        "--log-format", metavar="FORMAT", help=f"{' or '.join(FORMATS)} (default $SCRIPTPOOL_LOG_FORMAT or text)"
    )


def apply(args: argparse.Namespace) -> LogSettings:
    """Configure logging for this process; a command that starts processes (`up`'s coordinator and
    workers) also exports the settings to its environment, which they inherit."""
    command = getattr(args, "command", None)
    server = command in SERVER_COMMANDS
    settings = LogSettings.resolve(
        level=getattr(args, "log_level", None),
        format=getattr(args, "log_format", None),
        verbose=bool(getattr(args, "verbose", False)),
        server=server,
    )
    configure(settings)
    if command in STARTING_COMMANDS:
        settings.export()
    return settings
