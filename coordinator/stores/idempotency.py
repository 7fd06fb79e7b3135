"""Idempotency keys for SubmitJob and SubmitJobs (docs/adr/0006-retries-and-idempotency.md).

A client that sends `idempotency_key` and sends the same request again (its answer was lost: the
coordinator restarted, the connection broke) gets the job(s) the first request queued instead of
new ones. Keys are per principal and kept `idempotency_ttl_seconds`:

  sp:idem:{sha256(principal NUL key)}  hash: fingerprint (sha256 of the request, its wait and key
                                       left out), jobs (the job ids it queued, comma-separated)

The key is claimed in the transaction that writes the jobs, which WATCHes it: a script sent with
the transaction (`TOUCH_IF_PRESENT`, in the same round trip) modifies the key if it already exists,
which aborts the transaction; so of two concurrent submissions with one key exactly one queues its
jobs, and the other then reads what that one queued. A request without a key takes the usual
MULTI/EXEC and costs nothing more; one with a new key costs the same round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from scriptpool.coordinator.stores import lua
from scriptpool.core.keys import idempotency_key
from scriptpool.core.lean_redis import Arg
from scriptpool.errors import FailedPrecondition, InvalidArgument

MAX_IDEMPOTENCY_KEY_BYTES = 256
"""Longest idempotency key (UTF-8 bytes); a longer one is INVALID_ARGUMENT."""

TOUCH_IF_PRESENT = lua.script("idempotency_touch_if_present")


@dataclass(frozen=True, slots=True)
class Idempotency:
    """One submission's idempotency key, checked, and its request's fingerprint."""

    key: str
    """As the client sent it (named in errors)."""
    redis_key: str
    fingerprint: str

    def touch(self) -> tuple[Arg, ...]:
        """The command between WATCH and MULTI (see the module docstring)."""
        return ("EVAL", TOUCH_IF_PRESENT, 1, self.redis_key)

    def claim(self, ttl_seconds: int, job_ids: Sequence[str]) -> list[tuple[Arg, ...]]:
        """The transaction's commands that claim the key for `job_ids`."""
        return [
            ("HSET", self.redis_key, "fingerprint", self.fingerprint, "jobs", ",".join(job_ids)),
            ("EXPIRE", self.redis_key, ttl_seconds),
        ]

    def earlier_jobs(self, reply: object) -> list[str] | None:
        """The job ids an earlier request with this key queued (`reply`: HMGET of its fingerprint and
        jobs; None if the key is gone); that request must have been this one."""
        assert isinstance(reply, list) and len(reply) == 2
        if reply[0] is None:
            return None
        fingerprint, jobs = (value.decode() if isinstance(value, bytes) else str(value) for value in reply)
        if fingerprint != self.fingerprint:
            raise FailedPrecondition(
                f"idempotency_key {self.key!r} was already used for a different request; "
                "send a new key for a new request"
            )
        return jobs.split(",")


def idempotency(principal: str, key: str, request: Message, field: str = "idempotency_key") -> Idempotency | None:
    """The checked idempotency key of `request` (None without one). Its fingerprint covers the
    whole request but its wait (`wait_seconds`) and the key itself."""
    if not key:
        return None
    size = len(key.encode("utf-8"))
    if size > MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgument(f"{field}: {size} bytes is above the maximum of {MAX_IDEMPOTENCY_KEY_BYTES} bytes")
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("wait_seconds")
    bare.ClearField("idempotency_key")
    fingerprint = hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()
    digest = hashlib.sha256(principal.encode() + b"\0" + key.encode()).hexdigest()
    return Idempotency(key, idempotency_key(digest), fingerprint)
