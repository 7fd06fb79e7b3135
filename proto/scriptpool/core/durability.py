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

`SCRIPTPOOL_ACK_REPLICAS=N` covers a failover instead (docs/adr/0016-redis-sentinel.md): replication
is asynchronous, so a replica promoted when its primary dies may miss writes the primary had already
acknowledged. With N > 0 the write that acknowledges a submission (the coordinator's submit
transaction) or a result (the worker's finishing transaction) is followed, on the same connection
and in the same round trip, by `WAIT N timeout`: fewer than N replicas confirming within
`SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS` (default 1000) makes the submission fail `UNAVAILABLE`
(`ReplicasBehind`) instead of answering as if the job were safe; a worker logs the shortfall as a
warning (the result stays recorded on the primary).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from scriptpool.core.redis_urls import redacted
from scriptpool.errors import InvalidArgument, Unavailable

APPENDFSYNC_CHOICES = ("always", "everysec", "no")
"""Redis's `appendfsync` values: fsync before every answer, once a second, or when the kernel likes."""
DEFAULT_APPENDFSYNC = "everysec"
"""The private Redis's `appendfsync` unless `SCRIPTPOOL_ACK_AFTER_FSYNC` asks for `always`."""
ACK_AFTER_FSYNC_VARIABLE = "SCRIPTPOOL_ACK_AFTER_FSYNC"
ACK_REPLICAS_VARIABLE = "SCRIPTPOOL_ACK_REPLICAS"
ACK_REPLICAS_TIMEOUT_VARIABLE = "SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS"
MAX_ACK_REPLICAS_TIMEOUT_MS = 60_000
"""Longest WAIT a write may take (it holds a gRPC thread, or a worker, that long)."""


class ReplicasBehind(Unavailable):
    """A write ran on the primary, but fewer replicas than asked confirmed it in time: it may be lost
    if the primary fails now. `replies` are the write's own replies."""

    def __init__(self, message: str, replies: list[object]) -> None:
        super().__init__(message)
        self.replies = replies


@dataclass(frozen=True, kw_only=True)
class ReplicaAck:
    """How many replicas must confirm an acknowledging write (`WAIT replicas timeout_ms`)."""

    replicas: int = 0
    """Replicas that must have the write before it is acknowledged (0: do not wait)."""
    timeout_ms: int = 1000
    """How long to wait for them, in milliseconds."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReplicaAck:
        replicas = _bounded_int(ACK_REPLICAS_VARIABLE, env.get(ACK_REPLICAS_VARIABLE, "") or "0", 0, 100)
        timeout_raw = env.get(ACK_REPLICAS_TIMEOUT_VARIABLE, "") or "1000"
        timeout_ms = _bounded_int(ACK_REPLICAS_TIMEOUT_VARIABLE, timeout_raw, 1, MAX_ACK_REPLICAS_TIMEOUT_MS)
        return cls(replicas=replicas, timeout_ms=timeout_ms)

    def command(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def check(self, confirmed: object, replies: list[object], what: str) -> None:
        """Raise ReplicasBehind unless `confirmed` (WAIT's reply) reaches `replicas`."""
        count = confirmed if isinstance(confirmed, int) else -1
        if count < self.replicas:
            raise ReplicasBehind(
                f"{what} was written to the Redis primary, but only {max(count, 0)} of the {self.replicas} "
                f"replicas {ACK_REPLICAS_VARIABLE} asks for confirmed it within {self.timeout_ms} ms; "
                "it may be lost if the primary fails now",
                replies,
            )


NO_REPLICA_ACK = ReplicaAck()
"""Acknowledge without waiting for replicas (the default)."""


def _bounded_int(variable: str, raw: str, low: int, high: int) -> int:
    text = raw.strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidArgument(f"{variable} must be a whole number from {low} to {high} (got {raw!r})")
    return int(text)


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
