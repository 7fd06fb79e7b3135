"""Idempotency keys for SubmitJob and SubmitJobs (docs/adr/0006-retries-and-idempotency.md).

A client that sends `idempotency_key` and sends the same request again (its answer was lost: the
coordinator restarted, the connection broke) gets the job(s) the first request queued instead of
new ones. Keys are per principal and kept `idempotency_ttl_seconds`:

  sp:idem:{sha256(principal NUL key)}  hash: fingerprint (sha256 of the request, its wait and key
                                       left out), jobs (the job ids it queued, comma-separated)

The key is claimed and the jobs are written by one Lua script (`SUBMIT_ONCE`), so of two concurrent
submissions with one key exactly one queues its jobs, and the other reads what that one queued. A
request without a key takes the usual MULTI/EXEC and costs nothing more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message
from scriptpool.errors import FailedPrecondition, InvalidArgument

from workers.job_records import PREFIX
from workers.lean_redis import Arg

MAX_IDEMPOTENCY_KEY_BYTES = 256
"""Longest idempotency key (UTF-8 bytes); a longer one is INVALID_ARGUMENT."""

# KEYS[1]: the key's record. ARGV: fingerprint, TTL seconds, the job ids (comma-separated), the
# number of commands, then each command as its argument count and its arguments: the writes
# MULTI/EXEC would have sent for the jobs (records, credentials, sessions, RQ's enqueue). Returns
# nil once it wrote them, else the fingerprint and job ids an earlier request stored.
SUBMIT_ONCE = """
local seen = redis.call('HMGET', KEYS[1], 'fingerprint', 'jobs')
if seen[1] then return seen end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'jobs', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return false
"""


@dataclass(frozen=True, slots=True)
class Idempotency:
    """One submission's idempotency key, checked, and its request's fingerprint."""

    key: str
    """As the client sent it (named in errors)."""
    redis_key: str
    fingerprint: str

    def script_args(self, ttl_seconds: int, job_ids: Sequence[str], commands: Sequence[Sequence[Arg]]) -> list[Arg]:
        args: list[Arg] = [self.fingerprint, ttl_seconds, ",".join(job_ids), len(commands)]
        for command in commands:
            args.append(len(command))
            args.extend(command)
        return args

    def earlier_jobs(self, reply: object) -> list[str]:
        """The job ids an earlier request with this key queued (from `SUBMIT_ONCE`'s reply); that
        request must have been this one."""
        assert isinstance(reply, list) and len(reply) == 2
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
    return Idempotency(key, f"{PREFIX}idem:{digest}", fingerprint)
