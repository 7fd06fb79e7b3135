"""Events: what `Event.emit` publishes and the lifecycle entries the stores append, in one Redis
Stream per principal (`sp:events:{principal}`, proto/scriptpool/core/event_streams.py), each trimmed to the
retention on its own: one principal's emits can never evict another's unread events.

A principal's stream holds its emits, its `state.changed` entries and the lifecycle entries (job and
session changes) of its sessions. Subscriptions are `sp:eventsub:{id}` hashes (principal, glob
pattern, the last stream id delivered, the job that made it) that expire an hour after their last
use; a subscription sees the events after it was made, in order, each once. Live subscriptions are
counted per principal and per job:
  sp:principal:{p}:eventsubs   zset  subscription id -> when it expires
  sp:job:{id}:eventsubs        zset  the same, for the subscriptions a job made
"""

from __future__ import annotations

import fnmatch
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from redis import Redis

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import lua
from scriptpool.coordinator.stores.not_found import refused, session_not_found, subscription_not_found
from scriptpool.coordinator.stores.quotas import LUA_QUOTA_LIMIT, exceeded
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.validation import check_uuid
from scriptpool.core.event_streams import append_event
from scriptpool.core.job_records import hash_fields, text
from scriptpool.core.keys import (
    events_key,
    job_subscriptions_key,
    principal_subscriptions_key,
    quota_key,
    session_key,
    subscription_key,
)
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.sandbox.catalog import reserved_event_name
from scriptpool.v1 import common_pb2, events_pb2

MAX_NAME = 128
MAX_PATTERN = 128
MAX_DATA_BYTES = 64 * 1024
SUBSCRIPTION_TTL_SECONDS = 3600
READ_BATCH = 100
WAIT_SLICE_SECONDS = 1.0
"""Longest single XREAD BLOCK: well under redis-py's socket timeout (5 s by default, which a longer
block would trip as a lost connection), and how soon a wait notices that its call has ended."""


def _slice_end(give_up: float) -> float:
    return min(give_up, time.monotonic() + WAIT_SLICE_SECONDS)


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?\[\]!-]+$")


_SUBSCRIBE = LUA_QUOTA_LIMIT + lua.script("events_subscribe")


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidArgument(
            f"event name must be 1-{MAX_NAME} characters of letters, digits and _ . : - (got {name[:40]!r})"
        )
    return name


def check_emittable(name: str) -> str:
    """A name a script or client may emit: a valid name outside the lifecycle hook points and their
    namespaces (`session.*`, `artifact.*`, `job.*`, `state.changed`), which only the coordinator emits,
    so a hook on one of them fires only for what really happened."""
    check_name(name)
    reserved = reserved_event_name(name)
    if reserved is not None:
        raise InvalidArgument(
            f"event name {name[:60]!r} is in the reserved namespace {reserved!r}: only scriptpool emits "
            "lifecycle events (session.*, artifact.*, job.*, state.changed)"
        )
    return name


def check_pattern(pattern: str) -> str:
    if not pattern or len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern):
        raise InvalidArgument(
            f"event pattern must be a glob of 1-{MAX_PATTERN} characters, e.g. 'session.*' (got {pattern[:40]!r})"
        )
    return pattern


class EventStore:
    def __init__(
        self,
        redis: Redis,
        *,
        max_subscriptions_per_principal: int = 1000,
        max_subscriptions_per_job: int = 100,
        max_scan: int = 1000,
        session_access: SessionAccess | None = None,
    ) -> None:
        self.redis = redis
        self.access = session_access if session_access is not None else SessionAccess(redis)
        """Grants on sessions (ADR 0021): a grantee subscribes to a shared session's events."""
        self.max_scan = max_scan
        """Stream entries one receive (one Stream wakeup, one HookService.Poll) reads at most."""
        self.max_subscriptions_per_principal = max_subscriptions_per_principal
        self.max_subscriptions_per_job = max_subscriptions_per_job
        self._subscribe = redis.register_script(_SUBSCRIBE)

    # ---------------------------------------------------------------- publish
    def emit(self, caller: Caller, name: str, data: common_pb2.Value, session_id: str) -> None:
        check_emittable(name)
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
        append_event(self.redis, caller.principal, session_id, fields)

    # ---------------------------------------------------------------- subscriptions
    def subscribe(
        self, caller: Caller, pattern: str, hooks_key: str = "", max_hooks: int = 0, session_id: str = ""
    ) -> events_pb2.Subscription:
        """A new subscription; with `hooks_key`, also a client's hook (that hash: hook id -> point),
        refused when it already holds `max_hooks` live ones. With `session_id`, only that session's
        events, read from its owner's stream (the caller's own session, or one shared with it)."""
        check_pattern(pattern)
        stream = self.session_stream(caller, session_id, "Event.subscribe") if session_id else caller.principal
        subscription_id = str(uuid.uuid4())
        keys = [
            subscription_key(subscription_id),
            principal_subscriptions_key(caller.principal),
            job_subscriptions_key(caller.job_id) if caller.job_id else "",
            hooks_key,
            quota_key(caller.principal),
        ]
        limits = [SUBSCRIPTION_TTL_SECONDS, self.max_subscriptions_per_principal, self.max_subscriptions_per_job]
        args: list[str | float] = [caller.principal, pattern, self._last_id(stream), caller.job_id]
        args += [time.time(), *limits, max_hooks, subscription_id]
        verdict, held, *limit = self._subscribe(keys=keys, args=args)
        if verdict == b"hooks":
            raise ResourceExhausted(
                f"at most {max_hooks} hooks per principal (this one holds {held}); "
                "unregister some (HookService.Unregister) first"
            )
        if verdict == b"principal":
            raise exceeded(
                caller.principal, "subscriptions", float(limit[0]), held, 1,
                "unsubscribe some (unused ones expire an hour after their last receive)",
            )  # fmt: skip
        if verdict == b"job":
            raise ResourceExhausted(
                f"this job has {held} live subscriptions, its limit ({self.max_subscriptions_per_job}); "
                "unsubscribe some first"
            )
        if session_id:  # (before the id is handed out: no receive can come first)
            self.redis.hset(subscription_key(subscription_id), mapping={"stream": stream, "session_id": session_id})
        return events_pb2.Subscription(subscription_id=subscription_id, pattern=pattern)

    def session_stream(self, caller: Caller, session_id: str, op: str) -> str:
        """The principal whose stream holds `session_id`'s events, when the caller owns the session or
        holds a grant on it (ADR 0021); otherwise refused as `SessionAccess.check` does, audited."""
        check_uuid(session_id, "session_id")
        owner = self.redis.hget(session_key(session_id), "principal")
        if owner is None:
            raise session_not_found(session_id)
        self.access.check(caller, session_id, op, text(owner))
        return text(owner)

    def exists(self, subscription_id: str) -> bool:
        """Whether the subscription is still there (it expires an hour after its last use)."""
        return bool(self.redis.exists(subscription_key(subscription_id)))

    def unsubscribe(self, caller: Caller, subscription_id: str) -> None:
        job_id = self._subscription(caller, subscription_id).job_id
        key = subscription_key(subscription_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zrem(principal_subscriptions_key(caller.principal), key)
        if job_id:
            pipe.zrem(job_subscriptions_key(job_id), key)
        pipe.execute()

    def receive(
        self,
        caller: Caller,
        subscription_id: str,
        timeout_seconds: float,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> events_pb2.Event | None:
        """The subscription's next event, waiting up to `timeout_seconds` for one; None if none came
        (or the call read `max_scan` entries without a match: the next call continues after them).
        Waits in slices of at most `WAIT_SLICE_SECONDS` and stops once `still_wanted()` is false."""
        sub = self._subscription(caller, subscription_id)
        if sub.session_id:  # a grant revoked since: refused at once
            self.session_stream(caller, sub.session_id, "Event.receive")
        last = sub.last
        give_up = time.monotonic() + timeout_seconds
        budget = self.max_scan
        while True:
            found, last, scanned = self._scan(
                sub.stream, sub.pattern, last, _slice_end(give_up), want=1, budget=budget, session_id=sub.session_id
            )
            budget -= scanned
            if found or budget <= 0 or time.monotonic() >= give_up or not still_wanted():
                break
        self._advance(caller, subscription_id, last)
        return found[0] if found else None

    def receive_many(
        self, caller: Caller, subscription_id: str, limit: int, budget: int
    ) -> tuple[list[events_pb2.Event], int]:
        """Up to `limit` of the subscription's waiting events, without waiting, reading at most
        `budget` entries: (events, entries read). HookService.Poll shares its budget out this way."""
        sub = self._subscription(caller, subscription_id)
        found, last, scanned = self._scan(
            sub.stream, sub.pattern, sub.last, 0.0, want=limit, budget=budget, session_id=sub.session_id
        )
        self._advance(caller, subscription_id, last)
        return found, scanned

    def _advance(self, caller: Caller, subscription_id: str, last: str) -> None:
        """Record the subscription's new position and keep it alive another hour."""
        key = subscription_key(subscription_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "last", last)
        pipe.expire(key, SUBSCRIPTION_TTL_SECONDS)
        pipe.zadd(principal_subscriptions_key(caller.principal), {key: time.time() + SUBSCRIPTION_TTL_SECONDS}, xx=True)
        pipe.execute()

    def follow(
        self, caller: Caller, pattern: str, still_wanted: Callable[[], bool], session_id: str = ""
    ) -> Iterator[events_pb2.Event]:
        """Every event for the caller matching `pattern` from now on, for as long as `still_wanted()`
        (asked at least once a second). Each wakeup reads at most `max_scan` entries. With
        `session_id`, that session's events only, its access checked again at every wakeup."""
        check_pattern(pattern)
        stream = self.session_stream(caller, session_id, "Event.stream") if session_id else caller.principal
        last = self._last_id(stream)
        while still_wanted():
            if session_id:
                self.session_stream(caller, session_id, "Event.stream")
            give_up = time.monotonic() + 1.0
            found, last, _ = self._scan(
                stream, pattern, last, give_up, want=1, budget=self.max_scan, session_id=session_id
            )
            yield from found

    # ---------------------------------------------------------------- reading
    def _subscription(self, caller: Caller, subscription_id: str) -> _Subscribed:
        """The caller's subscription, as stored."""
        check_uuid(subscription_id, "subscription_id")
        raw = hash_fields(self.redis.hgetall(subscription_key(subscription_id)))
        owner = raw.get("principal", b"").decode()
        if owner != caller.principal:
            if owner:
                refused(caller, "subscription", subscription_id, owner)
            raise subscription_not_found(subscription_id)
        return _Subscribed(
            pattern=raw["pattern"].decode(),
            last=raw["last"].decode(),
            job_id=raw.get("job_id", b"").decode(),
            stream=raw.get("stream", owner.encode()).decode(),
            session_id=raw.get("session_id", b"").decode(),
        )

    def _last_id(self, principal: str) -> str:
        newest = self.redis.xrevrange(events_key(principal), count=1)
        return text(newest[0][0]) if newest else "0-0"

    def tip(self, principal: str) -> str:
        """The id of the principal's newest event ("0-0" if none): `wait_past` waits for a newer one."""
        return self._last_id(principal)

    def wait_past(
        self, principal: str, tip: str, give_up: float, still_wanted: Callable[[], bool] = lambda: True
    ) -> int:
        """Wait (XREAD BLOCK in slices of at most `WAIT_SLICE_SECONDS`, no polling) until the
        principal's stream holds an entry after `tip`, `give_up` passes or `still_wanted()` is false;
        the entries read to learn it (0 or 1)."""
        while still_wanted():
            left_ms = int((_slice_end(give_up) - time.monotonic()) * 1000)
            if left_ms <= 0:
                return 0
            if self.redis.xread({events_key(principal): tip}, count=1, block=left_ms):
                return 1
        return 0

    def _scan(
        self, principal: str, pattern: str, last: str, give_up: float, *, want: int, budget: int, session_id: str = ""
    ) -> tuple[list[events_pb2.Event], str, int]:
        """Up to `want` events after `last` matching `pattern`, reading at most `budget` entries of the
        stream: (events, the id to continue after, entries read). Blocks (XREAD BLOCK) while nothing
        was found and there is time left; then reads on without blocking until it has seen every entry
        already there, so a 0 timeout still returns what is waiting. Past the budget it stops, and
        the position it returns lets the next call continue where this one stopped."""
        found: list[events_pb2.Event] = []
        scanned = 0
        stream = events_key(principal)
        while scanned < budget:
            left_ms = int((give_up - time.monotonic()) * 1000)
            block = left_ms if left_ms > 0 and not found else None
            count = min(READ_BATCH, budget - scanned)
            batches: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = self.redis.xread(  # type: ignore[assignment]
                {stream: last}, count=count, block=block
            )
            entries = batches[0][1] if batches else []
            if not entries:
                if block is None:
                    break
                continue
            scanned += len(entries)
            for entry_id, raw_fields in entries:
                last = text(entry_id)
                fields = hash_fields(raw_fields)
                name = fields.get("type", b"").decode()
                if fnmatch.fnmatchcase(name, pattern) and (
                    not session_id or fields.get("session_id") == session_id.encode()
                ):
                    found.append(_event(last, name, fields))
                    if len(found) >= want:
                        return found, last, scanned
        return found, last, scanned


@dataclass(frozen=True, slots=True)
class _Subscribed:
    pattern: str
    last: str
    """The stream id last delivered."""
    job_id: str
    """The job that made it, or ''."""
    stream: str
    """The principal whose stream it reads: the subscriber's, or a shared session's owner's."""
    session_id: str
    """'' for every event of the stream; else that session's only."""


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


__all__ = ["EventStore", "check_emittable", "check_name", "check_pattern"]
