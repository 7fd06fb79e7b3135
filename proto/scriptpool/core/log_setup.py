"""How every scriptpool process logs: level and format, from flags or the environment (ADR 0014).

One `LogSettings`, resolved at the CLI's edge: `--log-level` (else `-v` for DEBUG, else
$SCRIPTPOOL_LOG_LEVEL, else INFO for the servers and WARNING for client commands) and `--log-format`
(else $SCRIPTPOOL_LOG_FORMAT, else `text`). `json` writes one JSON object a line (python-json-logger,
in the server and worker extras) with the record's `extra` fields as keys. A server exports what it
resolved to its environment (`export`), so the processes `scriptpool up` starts log the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TextIO

from scriptpool.errors import InvalidArgument

log = logging.getLogger(__name__)
LEVEL_VARIABLE = "SCRIPTPOOL_LOG_LEVEL"
FORMAT_VARIABLE = "SCRIPTPOOL_LOG_FORMAT"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
SERVER_LEVEL = "INFO"
"""The servers' default: the lifecycle (start-up, one line per job) at INFO, problems above it."""
CLIENT_LEVEL = "WARNING"
"""Client commands' default: their output is the answer, not a log."""
TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
JSON_FIELDS = ("asctime", "process", "name", "levelname", "message")
"""Each JSON line's keys (as `time`, `process` (the pid), `logger`, `level`, `message`), then the
record's `extra` fields."""
QUIET_LOGGERS = ("rq.worker", "rq.queue", "rq.job")
"""RQ logs three INFO lines per job ('Job OK', 'Result is kept ...'); scriptpool's one line per job
(`scriptpool.jobs`) replaces them: RQ's loggers show WARNING and above unless the level is DEBUG."""


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    level: str = SERVER_LEVEL
    """One of `LEVELS`."""
    format: str = "text"
    """One of `FORMATS`."""

    @classmethod
    def resolve(
        cls,
        *,
        level: str | None = None,
        format: str | None = None,
        verbose: bool = False,
        server: bool = False,
        environ: Mapping[str, str] = os.environ,
    ) -> LogSettings:
        """Flags first, then the environment, then the default. Raises InvalidArgument (one line)
        for a level or format that is not one of ours."""
        chosen_level = level or ("DEBUG" if verbose else None) or environ.get(LEVEL_VARIABLE) or None
        chosen_format = format or environ.get(FORMAT_VARIABLE) or "text"
        where_level = "--log-level" if level else LEVEL_VARIABLE
        where_format = "--log-format" if format else FORMAT_VARIABLE
        settings = cls(
            level=(chosen_level or (SERVER_LEVEL if server else CLIENT_LEVEL)).upper(), format=chosen_format.lower()
        )
        if settings.level not in LEVELS:
            choices = ", ".join(LEVELS)
            raise InvalidArgument(f"{where_level}: {chosen_level!r} is not a log level (use one of {choices})")
        if settings.format not in FORMATS:
            raise InvalidArgument(f"{where_format}: {chosen_format!r} is not a log format (use text or json)")
        return settings

    def export(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Hand these settings to the processes started from here (they read them in `resolve`)."""
        environ[LEVEL_VARIABLE] = self.level
        environ[FORMAT_VARIABLE] = self.format


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        raise InvalidArgument(
            "--log-format json needs python-json-logger: install scriptpool[server] or scriptpool[worker]"
        ) from None
    return JsonFormatter(list(JSON_FIELDS), rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (and replaces when called again); others are left alone."""


def configure(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr) at `settings.level` in `settings.format`, replacing the handler an
    earlier call installed (a host's own handlers, e.g. pytest's, stay)."""
    handler = _OwnHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(settings.format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OwnHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if settings.level == "DEBUG" else logging.WARNING)
    log.debug("logging at %s in %s format", settings.level, settings.format)


__all__ = [
    "FORMATS",
    "FORMAT_VARIABLE",
    "LEVELS",
    "LEVEL_VARIABLE",
    "QUIET_LOGGERS",
    "LogSettings",
    "configure",
    "formatter",
]
