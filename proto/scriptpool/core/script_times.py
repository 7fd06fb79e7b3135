"""Times as scripts see them (ADR 0011): rs-llmspell gives scripts RFC 3339 / ISO-8601 strings for
`created_at`, `updated_at` and an event's `timestamp`; scriptpool gives the same strings under those
names and keeps the number of seconds since the epoch beside each, as `<name>_unix`. The wire
contract (gRPC) keeps numbers."""

from __future__ import annotations

import datetime
import math

from scriptpool.values import PlainValue


def iso_utc(seconds: float) -> str:
    """`seconds` since the epoch as ISO-8601 in UTC with microseconds, e.g.
    `2026-12-05T12:00:00.250000+00:00` (what Python's and chrono's RFC 3339 formatting give)."""
    if not math.isfinite(seconds):
        raise ValueError(f"not a time: {seconds!r}")
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="microseconds")


def parse_time(value: PlainValue, what: str) -> float:
    """A time a script gave: seconds since the epoch, or an ISO-8601 string (a naive one is UTC).
    Raises ValueError naming `what` for anything else."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be seconds since the epoch or an ISO-8601 string")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number of seconds")
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what}: {value[:40]!r} is not an ISO-8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    raise ValueError(f"{what} must be seconds since the epoch or an ISO-8601 string")


def with_times(plain: dict[str, PlainValue], **times: float) -> dict[str, PlainValue]:
    """`plain` with each of `times` as an ISO-8601 string under its name and as seconds under
    `<name>_unix` (a zero time, never set, becomes None under both)."""
    for name, seconds in times.items():
        plain[name] = iso_utc(seconds) if seconds else None
        plain[f"{name}_unix"] = seconds if seconds else None
    return plain


__all__ = ["iso_utc", "parse_time", "with_times"]
