"""Events: what `Event.emit` publishes and the lifecycle entries the stores append, in one Redis
Stream (`sp:events`, capped at ~100 000 entries), each principal reading only its own.

An entry is visible to a principal when it names that principal (`principal` field, written by
`emit`) or, for lifecycle entries (job and session changes, which carry a `session_id`), when that
session is the principal's. Subscriptions are `sp:eventsub:{id}` hashes (principal, glob pattern,
the last stream id delivered) that expire an hour after their last use; a subscription sees the
events after it was made, in order, each once.
"""

from __future__ import annotations

import fnmatch
import re
import time
import uuid
from collections.abc import Callable, Iterator

from redis import Redis
from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.v1 import common_pb2, events_pb2

from coordinator.auth import Caller
from coordinator.stores.sessions import session_key
from coordinator.stores.timeline import EVENTS_KEY, EVENTS_MAX
from coordinator.stores.validation import check_uuid
from workers.job_records import hash_fields, text

MAX_NAME = 128
MAX_PATTERN = 128
MAX_DATA_BYTES = 64 * 1024
SUBSCRIPTION_TTL_SECONDS = 3600
READ_BATCH = 100
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?\[\]!-]+$")
_OWNER_CACHE_MAX = 10_000


def _subscription_key(subscription_id: str) -> str:
    return f"sp:eventsub:{subscription_id}"


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidArgument(
            f"event name must be 1-{MAX_NAME} characters of letters, digits and _ . : - (got {name[:40]!r})"
        )
    return name


def check_pattern(pattern: str) -> str:
    if not pattern or len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern):
        raise InvalidArgument(
            f"event pattern must be a glob of 1-{MAX_PATTERN} characters, e.g. 'session.*' (got {pattern[:40]!r})"
        )
    return pattern


class EventStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._owners: dict[str, str] = {}
        """session id -> principal, for lifecycle entries (a session never changes owner)."""

    # ---------------------------------------------------------------- publish
    def emit(self, caller: Caller, name: str, data: common_pb2.Value, session_id: str) -> str:
        check_name(name)
        raw = data.SerializeToString()
        if len(raw) > MAX_DATA_BYTES:
            raise InvalidArgument(f"event data is {len(raw)} bytes; at most {MAX_DATA_BYTES} are allowed")
        fields: dict[str, str | bytes] = {
            "type": name,
            "description": name,
            "job_id": caller.job_id,
            "ts": repr(time.time()),
            "value": raw,
            "principal": caller.principal,
            "session_id": session_id,
        }
        return text(self.redis.xadd(EVENTS_KEY, fields, maxlen=EVENTS_MAX))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- subscriptions
    def subscribe(self, caller: Caller, pattern: str) -> events_pb2.Subscription:
        check_pattern(pattern)
        subscription_id = str(uuid.uuid4())
        key = _subscription_key(subscription_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"principal": caller.principal, "pattern": pattern, "last": self._last_id()})
        pipe.expire(key, SUBSCRIPTION_TTL_SECONDS)
        pipe.execute()
        return events_pb2.Subscription(subscription_id=subscription_id, pattern=pattern)

    def exists(self, subscription_id: str) -> bool:
        """Whether the subscription is still there (it expires an hour after its last use)."""
        return bool(self.redis.exists(_subscription_key(subscription_id)))

    def unsubscribe(self, caller: Caller, subscription_id: str) -> None:
        self._subscription(caller, subscription_id)
        self.redis.delete(_subscription_key(subscription_id))

    def receive(
        self,
        caller: Caller,
        subscription_id: str,
        timeout_seconds: float,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> events_pb2.Event | None:
        """The subscription's next event, waiting up to `timeout_seconds` for one; None if none came.
        Stops waiting once `still_wanted()` is false (asked at least once a second)."""
        pattern, last = self._subscription(caller, subscription_id)
        key = _subscription_key(subscription_id)
        give_up = time.monotonic() + timeout_seconds
        while True:
            found, last = self._next(caller.principal, pattern, last, min(give_up, time.monotonic() + 1.0))
            if found is not None or time.monotonic() >= give_up or not still_wanted():
                break
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "last", last)
        pipe.expire(key, SUBSCRIPTION_TTL_SECONDS)
        pipe.execute()
        return found

    def follow(self, caller: Caller, pattern: str, still_wanted: Callable[[], bool]) -> Iterator[events_pb2.Event]:
        """Every event for the caller matching `pattern` from now on, for as long as `still_wanted()`
        (asked at least once a second)."""
        check_pattern(pattern)
        last = self._last_id()
        while still_wanted():
            found, last = self._next(caller.principal, pattern, last, time.monotonic() + 1.0)
            if found is not None:
                yield found

    # ---------------------------------------------------------------- reading
    def _subscription(self, caller: Caller, subscription_id: str) -> tuple[str, str]:
        check_uuid(subscription_id, "subscription_id")
        raw = hash_fields(self.redis.hgetall(_subscription_key(subscription_id)))
        if not raw or raw.get("principal", b"").decode() != caller.principal:
            raise NotFound(f"subscription {subscription_id} not found (it may have expired: an hour unused)")
        return raw["pattern"].decode(), raw["last"].decode()

    def _last_id(self) -> str:
        newest = self.redis.xrevrange(EVENTS_KEY, count=1)
        return text(newest[0][0]) if newest else "0-0"

    def _next(self, principal: str, pattern: str, last: str, give_up: float) -> tuple[events_pb2.Event | None, str]:
        while True:
            # Blocks while there is time left; after that, reads on without blocking until it has
            # seen every entry already there (so a 0 timeout still returns what is waiting).
            left_ms = int((give_up - time.monotonic()) * 1000)
            block = left_ms if left_ms > 0 else None
            batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = self.redis.xread(  # type: ignore[assignment]
                {EVENTS_KEY: last}, count=READ_BATCH, block=block
            )
            if not batches and block is None:
                return None, last
            for _, entries in batches or ():
                for entry_id, raw_fields in entries:
                    last = text(entry_id)
                    fields = hash_fields(raw_fields)
                    name = fields.get("type", b"").decode()
                    if fnmatch.fnmatchcase(name, pattern) and self._visible_to(principal, fields):
                        return _event(last, name, fields), last

    def _visible_to(self, principal: str, fields: dict[str, bytes]) -> bool:
        if "principal" in fields:
            return fields["principal"].decode() == principal
        session_id = fields.get("session_id", b"").decode()
        return bool(session_id) and self._owner(session_id) == principal

    def _owner(self, session_id: str) -> str:
        owner = self._owners.get(session_id)
        if owner is None:
            owner = text(self.redis.hget(session_key(session_id), "principal") or b"")
            if owner:  # a deleted session's events are nobody's
                if len(self._owners) >= _OWNER_CACHE_MAX:
                    self._owners.clear()
                self._owners[session_id] = owner
        return owner


def _event(entry_id: str, name: str, fields: dict[str, bytes]) -> events_pb2.Event:
    event = events_pb2.Event(
        id=entry_id,
        name=name,
        session_id=fields.get("session_id", b"").decode(),
        job_id=fields.get("job_id", b"").decode(),
        timestamp=float(fields.get("ts", b"0") or 0),
    )
    if "value" in fields:
        event.data.ParseFromString(fields["value"])
    elif fields.get("data"):  # a lifecycle entry: its data is a ValueMap
        event.data.map_value.ParseFromString(fields["data"])
    return event


__all__ = ["EventStore", "check_name", "check_pattern"]
