"""How durable an acknowledgement is: the Redis settings that decide it, checked at start-up.

Redis is the system of record. A write it has acknowledged is in its append-only file (AOF), but
whether the file is on disk yet depends on `appendfsync`: `everysec` (the private Redis's default)
fsyncs once a second, so a host crash or power loss can lose the last second or so of acknowledged
writes; `always` fsyncs before Redis answers, so nothing acknowledged is lost. A crash of the
redis-server process alone loses nothing either way (the file's pages are the kernel's).

`SCRIPTPOOL_ACK_AFTER_FSYNC=1` asks that scriptpool acknowledge submissions (the SubmitJob and
SubmitJobs answers) and record results only once they are fsynced. It is met by a Redis that
fsyncs before it answers (`appendonly yes`, `appendfsync always`): `scriptpool up` starts its
private Redis that way; the coordinator and the workers check any other Redis at start and refuse
to start, in one line, against one that does not (docs/adr/0007-durability.md says why this and not
`WAITAOF`).
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError

from scriptpool.core.redis_connect import redacted
from scriptpool.errors import InvalidArgument

APPENDFSYNC_CHOICES = ("always", "everysec", "no")
"""Redis's `appendfsync` values: fsync before every answer, once a second, or when the kernel likes."""
DEFAULT_APPENDFSYNC = "everysec"
"""The private Redis's `appendfsync` unless `SCRIPTPOOL_ACK_AFTER_FSYNC` asks for `always`."""
ACK_AFTER_FSYNC_VARIABLE = "SCRIPTPOOL_ACK_AFTER_FSYNC"


def flag(variable: str, raw: str) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (or empty)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{variable} must be 1 or 0 (got {raw!r})")


def appendfsync_choice(variable: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in APPENDFSYNC_CHOICES:
        raise InvalidArgument(f"{variable} must be one of {', '.join(APPENDFSYNC_CHOICES)} (got {raw!r})")
    return value


def check_ack_after_fsync(redis: Redis, url: str) -> None:
    """Refuse (InvalidArgument: one line naming the Redis and what it lacks) a Redis that may answer
    a write before it is fsynced, when acknowledgements must follow the fsync."""
    try:
        config = redis.config_get("append*")
    except RedisError as exc:
        raise InvalidArgument(
            f"{ACK_AFTER_FSYNC_VARIABLE} is on, but Redis at {redacted(url)!r} does not say how it persists "
            f"(CONFIG GET: {exc}); allow CONFIG GET, or turn {ACK_AFTER_FSYNC_VARIABLE} off"
        ) from exc
    settings = {_text(k): _text(v) for k, v in config.items()}
    appendonly, appendfsync = settings.get("appendonly", "?"), settings.get("appendfsync", "?")
    if appendonly != "yes" or appendfsync != "always":
        raise InvalidArgument(
            f"{ACK_AFTER_FSYNC_VARIABLE} is on, but Redis at {redacted(url)!r} answers writes before they are "
            f"on disk (appendonly {appendonly}, appendfsync {appendfsync}); set appendonly yes and "
            f"appendfsync always there, or turn {ACK_AFTER_FSYNC_VARIABLE} off"
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
