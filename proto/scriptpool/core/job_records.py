"""The job record in Redis: the one schema the coordinator writes and the worker advances.

Keys (all under the `sp:` prefix):
  sp:job:{id}:state      hash: the job's `job` State scope (coordinator/stores/state.py), deleted here at finish
  sp:job:{id}            hash: spec (ChildJob bytes), principal, session_id, status, credential, cred_hash,
                         created_at, started_at, finished_at, worker, result (JobResult bytes),
                         cancel_requested, max_retries (only when > 0), attempt (only from the
                         second run on: absent means 1), traceparent (only when the coordinator
                         traced the submit: the W3C trace context the worker's job span continues,
                         docs/adr/0014-logs-and-tracing.md)
  sp:cred:{sha256}       hash: job_id, principal, session_id -- a job credential, deleted when the job ends
  sp:jobs:leases         zset: running job id -> lease expiry (epoch s); an expired lease = worker lost
  sp:principal:{p}:queued   zset: the principal's queued job ids -> when queued (the coordinator adds
                         them at submission; the scripts here move them: count_job.lua)
  sp:principal:{p}:running  set: the principal's running job ids
  sp:session:{id}:jobs   zset: job id -> created_at
  sp:session:{id}        fields `created_by_job` and `retention_seconds` on a session the coordinator made
                         for a job submitted without one (coordinator/stores/sessions.py)
  sp:sessions:expiring   zset: job-created session id -> when its retention ends (epoch s); the
                         coordinator's sweeper deletes it then (coordinator/session_expiry.py)
  channel sp:job-finished  job ids as they finish

Every status change is one Lua script, so a job finishes exactly once whoever races
(worker result, cancel, lease sweeper). A job with retries left whose worker was lost goes back to
`queued` with `attempt` + 1 (`REQUEUE`); a worker's heartbeat and finish name the attempt they
claimed, so a worker whose lease was taken away cannot renew or finish a later attempt.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from redis import Redis

from scriptpool.core import lua
from scriptpool.core.defaults import LEASE_SECONDS
from scriptpool.core.event_streams import LUA_APPEND_EVENT
from scriptpool.core.keys import EXPIRING_SESSIONS_KEY, FINISHED_CHANNEL, LEASES_KEY, job_key
from scriptpool.core.lean_redis import Arg, LeanPool, LeanScript, Reply
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from scriptpool.values import to_value_map

RQ_FUNCTION = "scriptpool.workers.rq_entry.execute_job"
"""The RQ job function every scriptpool job is enqueued with (its one argument: the job id)."""
LEGACY_RQ_FUNCTIONS = {"workers.rq_entry.execute_job": RQ_FUNCTION}
"""Job function names an older version wrote into RQ job hashes (before the one `scriptpool` import
package, ADR 0008), each with the function it now is. The worker reads a job queued under an old name
as naming the new one, so jobs queued before an upgrade in place still run; the hash is not rewritten."""
TIMELINE_MAX = 100_000
"""Entries a session's timeline keeps (`coordinator/stores/timeline.py`): every XADD to it trims to
about this many (MAXLEN ~: Redis drops whole stream nodes, so up to 100 more may stay)."""


SESSION_JOB_FIELD = "created_by_job"
"""Field of a session record holding the id of the job it was made for (a job submitted without a
session). Only that job's end completes the session and starts its retention; a later job submitted
into it, or a snapshot loaded into it, removes the field: the session is then the principal's own."""
SESSION_RETENTION_FIELD = "retention_seconds"
"""Field of a job-created session: how long it stays once its job ended (0 = for good), written by
the coordinator from `Settings.job_session_retention_seconds` when it made the session."""

# The `data` of the timeline entry and events of a job-created session completed at its job's end
# (what a `Session.complete` writes), from each state it may be in.
_COMPLETED_DATA = {
    old: to_value_map({"old_state": old, "new_state": "completed"}).SerializeToString()
    for old in ("active", "suspended")
}


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


def text(value: object) -> str:
    """A Redis reply (bytes with decode_responses off) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: object) -> list[str]:
    assert isinstance(values, list)
    return [text(v) for v in values]


def hash_fields(raw: object) -> dict[str, bytes]:
    """An HGETALL reply with text field names and raw byte values."""
    assert isinstance(raw, dict)
    return {text(k): v if isinstance(v, bytes) else str(v).encode() for k, v in raw.items()}


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


# The record scripts (proto/scriptpool/core/lua/), each with the Lua functions it calls before it.
_LOG_JOB = LUA_APPEND_EVENT + lua.load("log_job", TIMELINE_MAX=TIMELINE_MAX)
_END_JOB_SESSION = lua.load(
    "end_job_session",
    SESSION_JOB_FIELD=SESSION_JOB_FIELD,
    SESSION_RETENTION_FIELD=SESSION_RETENTION_FIELD,
    TIMELINE_MAX=TIMELINE_MAX,
    EXPIRING_SESSIONS_KEY=EXPIRING_SESSIONS_KEY,
)
_COUNT_JOB = lua.load("count_job")
_START = _LOG_JOB + _COUNT_JOB + lua.load("job_start")
_FINISH = _LOG_JOB + _END_JOB_SESSION + _COUNT_JOB + lua.load("job_finish")
_REQUEST_CANCEL = lua.load("job_request_cancel")
_HEARTBEAT = lua.load("job_heartbeat")
_REQUEUE = _LOG_JOB + _COUNT_JOB + lua.load("job_requeue")


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker has claimed: its spec (ChildJob bytes), its credential, whose it is, and
    which attempt of it this is (the fence its heartbeats and finish carry)."""

    spec: bytes
    credential: str
    principal: str
    attempt: int = 1
    created_at: float = 0.0
    """When it was submitted (epoch s): the worker logs its queue wait."""
    traceparent: str = ""
    """The submit's W3C trace context ("" when it was not traced)."""


class JobRecords:
    """Atomic transitions of job records. Shared by the coordinator and the workers."""

    def __init__(self, redis: Redis, lease_seconds: float = LEASE_SECONDS, lean: LeanPool | None = None) -> None:
        """`lean`: run the scripts over that pool's per-thread RESP2 connections (a worker claims and
        finishes every job through them: redis-py's layers cost more than the round trip)."""
        self.redis = redis
        self.lease_seconds = lease_seconds
        self._own_pool = lean is None
        self._pool = LeanPool(redis) if lean is None else lean
        self._start, self._finish, self._request_cancel, self._heartbeat = (
            LeanScript(redis, self._pool, source) for source in (_START, _FINISH, _REQUEST_CANCEL, _HEARTBEAT)
        )
        self.requeue_source = _REQUEUE
        """The requeue script's source, for the lease sweeper to send inside its transaction (with RQ's
        writes for the job: `coordinator/sweeper.py`). Its arguments: `requeue_args`."""

    def close(self) -> None:
        """Close the lean connections, if this object opened the pool (a pool passed in is its owner's)."""
        if self._own_pool:
            self._pool.close()

    def start(self, job_id: str, worker: str, now: float) -> ClaimedJob | None:
        """Claim a queued job. Returns what running it needs, or None if it is no longer queued."""
        return self.claimed(self._start(keys=[job_key(job_id), LEASES_KEY], args=self._start_args(job_id, worker, now)))

    def start_command(self, job_id: str, worker: str, now: float) -> tuple[Arg, ...]:
        """`start` as one command to send inside another transaction (the worker's RQ start
        transaction); its reply goes to `claimed`. EVAL, not EVALSHA: a transaction cannot load a
        missing script and retry."""
        return ("EVAL", _START, 2, job_key(job_id), LEASES_KEY, *self._start_args(job_id, worker, now))

    def _start_args(self, job_id: str, worker: str, now: float) -> list[Arg]:
        return [worker, now, now + self.lease_seconds, job_id]

    @staticmethod
    def claimed(reply: Reply) -> ClaimedJob | None:
        """What the start script answered: the claimed job, or None if it was no longer queued."""
        if not reply:
            return None
        assert isinstance(reply, list)
        spec, credential, principal, attempt, created_at, traceparent = reply
        assert isinstance(spec, bytes) and isinstance(credential, bytes)
        return ClaimedJob(
            spec,
            credential.decode(),
            text(principal or b""),
            int(text(attempt or b"1")),
            created_at=float(text(created_at or b"0")),
            traceparent=text(traceparent or b""),
        )

    def finish(
        self,
        job_id: str,
        result: bytes,
        now: float,
        ttl_seconds: int,
        only_if: JobState | None = None,
        outcome: str = "",
        attempt: int = 0,
        lease_lapsed_by: float | None = None,
    ) -> bool:
        """Record the result of a job that has not finished yet. True if this call finished it.
        `attempt` > 0: only if that attempt is the job's current one (a worker's finish).
        `lease_lapsed_by`: only if the job's lease expires no later than this (the lease sweeper's)."""
        applied = self._finish(
            keys=[job_key(job_id), LEASES_KEY],
            args=self._finish_args(job_id, result, now, ttl_seconds, only_if, outcome, attempt, lease_lapsed_by),
        )
        return bool(applied)

    def cancel_queued(self, job_id: str, message: str, now: float, ttl_seconds: int) -> bool:
        """Finish `job_id` as `cancelled` with `message`, only if it is still queued (a client's
        cancel, or its RQ job removed in RQ). True if this call finished it."""
        result = jobs_pb2.JobResult(outcome=Outcome.CANCELLED.to_proto(), message=message)
        return self.finish(
            job_id,
            result.SerializeToString(),
            now,
            ttl_seconds,
            only_if=JobState.QUEUED,
            outcome=Outcome.CANCELLED.value,
        )

    def finish_command(
        self, job_id: str, result: bytes, now: float, ttl_seconds: int, outcome: str, attempt: int
    ) -> tuple[Arg, ...]:
        """`finish` as one command to send inside another transaction (the worker's RQ finishing
        transaction); it replies 1 if it finished the job."""
        args = self._finish_args(job_id, result, now, ttl_seconds, None, outcome, attempt)
        return ("EVAL", _FINISH, 2, job_key(job_id), LEASES_KEY, *args)

    @staticmethod
    def _finish_args(
        job_id: str,
        result: bytes,
        now: float,
        ttl_seconds: int,
        only_if: JobState | None,
        outcome: str,
        attempt: int,
        lease_lapsed_by: float | None = None,
    ) -> list[Arg]:
        return [
            result, now, ttl_seconds, job_id, FINISHED_CHANNEL, only_if.value if only_if else "", outcome,
            _COMPLETED_DATA["active"], _COMPLETED_DATA["suspended"], str(attempt) if attempt else "",
            "" if lease_lapsed_by is None else lease_lapsed_by,
        ]  # fmt: skip

    def request_cancel(self, job_id: str) -> JobState | None:
        status = self._request_cancel(keys=[job_key(job_id)], args=[])
        return JobState(text(status)) if status else None

    def heartbeat(self, job_id: str, now: float, attempt: int = 1) -> bool | None:
        """Extend a running job's lease. Returns True if cancel was requested, None if `attempt` of it
        is not running (finished, or queued again after this lease expired)."""
        answer = self._heartbeat(keys=[job_key(job_id), LEASES_KEY], args=[now + self.lease_seconds, job_id, attempt])
        assert isinstance(answer, int)
        return None if answer < 0 else answer == 1

    @staticmethod
    def requeue_keys(job_id: str) -> list[str]:
        return [job_key(job_id), LEASES_KEY]

    @staticmethod
    def requeue_args(
        job_id: str, now: float, attempt: int, credential: str, cred_hash: str, credential_ttl: int
    ) -> list[Arg]:
        return [job_id, now, attempt, credential, cred_hash, credential_ttl, FINISHED_CHANNEL]

    def expired_leases(self, now: float, limit: int = 100) -> list[str]:
        return texts(self.redis.zrangebyscore(LEASES_KEY, "-inf", now, start=0, num=limit))
