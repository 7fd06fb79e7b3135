"""Job submission and job records, on top of `workers.job_records` (the shared schema).

Submitting writes the job record, the job's credential and the RQ job in one Redis transaction,
so a job is either fully enqueued or not at all.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.v1 import jobs_pb2, sandbox_pb2, sessions_pb2

from coordinator.auth import Caller, new_job_credential
from coordinator.stores.sessions import SessionStore
from coordinator.stores.validation import check_uuid
from sandbox.languages import Language
from sandbox.limits import LIMIT_FIELDS, LimitPolicy
from sandbox.outcomes import Outcome
from workers.job_records import (
    JobRecords,
    JobState,
    credential_hash,
    credential_key,
    hash_fields,
    job_key,
    session_jobs_key,
    texts,
)
from workers.lean_redis import LeanPool, read, transaction

log = logging.getLogger(__name__)

RQ_FUNCTION = "workers.rq_entry.execute_job"
RQ_TIMEOUT_MARGIN_SECONDS = 60
_STATUS = {
    JobState.QUEUED: jobs_pb2.JOB_STATUS_QUEUED,
    JobState.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    JobState.FINISHED: jobs_pb2.JOB_STATUS_FINISHED,
}


class JobStore:
    def __init__(
        self,
        redis: Redis,
        sessions: SessionStore,
        *,
        queue: str,
        policy: LimitPolicy,
        max_source_bytes: int,
        queue_ttl_seconds: int,
        result_ttl_seconds: int,
        lean: LeanPool | None = None,
    ) -> None:
        self.redis = redis
        # The submit transaction (RQ's enqueue plus our records, ~15 commands) is packed and sent on
        # the gRPC thread's lean connection: redis-py's packing and parsing were half of SubmitJob.
        self.lean = lean if lean is not None else LeanPool(redis)
        self.records = JobRecords(redis, lean=self.lean)
        self.sessions = sessions
        self.queue = Queue(queue, connection=redis)
        self.policy = policy
        self.max_source_bytes = max_source_bytes
        self.queue_ttl_seconds = queue_ttl_seconds
        self.result_ttl_seconds = result_ttl_seconds

    def _validate(self, request: jobs_pb2.SubmitJobRequest) -> tuple[Language, sandbox_pb2.ChildJob]:
        language = Language.from_proto(request.language)
        if not request.source.strip():
            raise InvalidArgument("source: the script is empty")
        size = len(request.source.encode("utf-8"))
        if size > self.max_source_bytes:
            raise InvalidArgument(f"source: {size} bytes is above the maximum of {self.max_source_bytes} bytes")
        limits = self.policy.resolve({name: getattr(request.limits, name) for name in LIMIT_FIELDS})
        spec = sandbox_pb2.ChildJob(language=language.to_proto(), source=request.source, inputs=request.inputs)
        for name in LIMIT_FIELDS:
            setattr(spec.limits, name, getattr(limits, name))
        return language, spec

    def submit(
        self,
        caller: Caller,
        request: jobs_pb2.SubmitJobRequest,
        *,
        random_seed: int = 0,
        clock_start: float = 0.0,
        job_id: str = "",
    ) -> jobs_pb2.Job:
        """Enqueue a job. `random_seed` and `clock_start` are for replays (the recorded job's seed and
        start time); otherwise a fresh seed is drawn and kept in the job's spec, and the clock is real.
        `job_id` is a new UUID the caller drew (to watch for the job's end before it exists)."""
        caller.require_client("JobService.SubmitJob")
        language, spec = self._validate(request)
        spec.random_seed = random_seed or secrets.randbits(48) | 1
        spec.clock_start = clock_start
        new_session = None
        if request.session_id:
            session = self.sessions.get(caller, request.session_id)
        else:  # written below, in the job's own transaction
            new_session = self.sessions.prepare(caller, sessions_pb2.CreateSessionRequest(name=f"{language.value} job"))
            session = new_session.session
        job_id = job_id or str(uuid.uuid4())
        spec.job_id = job_id
        spec.session_id = session.id
        credential = new_job_credential()
        cred_hash = credential_hash(credential)
        now = time.time()
        wall_s = spec.limits.wall_time_ms / 1000.0
        # RQ starts the MULTI itself, so it goes first; the rest joins the same transaction.
        pipe = self.redis.pipeline(transaction=True)
        self.queue.enqueue_call(
            RQ_FUNCTION,
            args=(job_id,),
            job_id=job_id,
            timeout=int(wall_s + RQ_TIMEOUT_MARGIN_SECONDS),
            ttl=self.queue_ttl_seconds,
            result_ttl=self.result_ttl_seconds,
            failure_ttl=self.result_ttl_seconds,
            description=f"scriptpool {language.value} job {job_id} (session {session.id})",
            pipeline=pipe,
        )
        if new_session is not None:
            self.sessions.write(pipe, new_session)
        pipe.hset(
            job_key(job_id),
            mapping={
                "spec": spec.SerializeToString(),
                "principal": caller.principal,
                "session_id": session.id,
                "status": JobState.QUEUED.value,
                "credential": credential,
                "cred_hash": cred_hash,
                "created_at": repr(now),
            },
        )
        pipe.hset(
            credential_key(cred_hash),
            mapping={"job_id": job_id, "principal": caller.principal, "session_id": session.id},
        )
        pipe.expire(credential_key(cred_hash), int(self.queue_ttl_seconds + wall_s + RQ_TIMEOUT_MARGIN_SECONDS))
        pipe.zadd(session_jobs_key(session.id), {job_id: now})
        if self.lean.supported:
            transaction(self.lean, [args for args, _ in pipe.command_stack])
            pipe.reset()
        else:
            pipe.execute()
        # Built from what was just written: no second round trip to read it back.
        return jobs_pb2.Job(
            id=job_id,
            session_id=session.id,
            language=spec.language,
            status=jobs_pb2.JOB_STATUS_QUEUED,
            limits=spec.limits,
            principal=caller.principal,
            created_at=now,
        )

    def _raw(self, job_id: str) -> dict[str, bytes]:
        check_uuid(job_id, "job id")
        raw: object
        if self.lean.supported:
            flat = read(self.lean, "HGETALL", job_key(job_id))
            assert isinstance(flat, list)
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
        else:
            raw = self.redis.hgetall(job_key(job_id))
        if not raw:
            raise NotFound(f"job {job_id} not found (unknown, or its record expired)")
        return hash_fields(raw)

    def get(self, caller: Caller, job_id: str) -> jobs_pb2.Job:
        raw = self._raw(job_id)
        if raw["principal"].decode() != caller.principal:
            raise NotFound(f"job {job_id} not found (unknown, or its record expired)")
        return _to_job(job_id, raw)

    def is_finished(self, job_id: str) -> bool:
        return self.redis.hget(job_key(job_id), "status") == JobState.FINISHED.value.encode()

    def cancel(self, caller: Caller, job_id: str) -> jobs_pb2.Job:
        caller.require_client("JobService.CancelJob")
        self.get(caller, job_id)
        state = self.records.request_cancel(job_id)
        if state is JobState.QUEUED:
            result = jobs_pb2.JobResult(
                outcome=Outcome.CANCELLED.to_proto(), message="the job was cancelled before it started"
            )
            applied = self.records.finish(
                job_id,
                result.SerializeToString(),
                time.time(),
                self.result_ttl_seconds,
                only_if=JobState.QUEUED,
                outcome=Outcome.CANCELLED.value,
            )
            if applied:
                self._cancel_rq_job(job_id)
        return self.get(caller, job_id)

    def _cancel_rq_job(self, job_id: str) -> None:
        """Take a job cancelled while queued out of RQ's queue (so `rq info` agrees). Best effort: a
        worker may be dequeuing it at this moment, and RQ's cancel then races the worker's own
        bookkeeping (e.g. "Execution ... not found"). Our record is already finished as cancelled,
        so that worker's claim is refused and the script never runs either way."""
        try:
            RQJob.fetch(job_id, connection=self.redis).cancel()
        except (NoSuchJobError, InvalidJobOperation, ValueError) as exc:
            log.info("job %s: RQ's cancel raced a worker (%s); the job record is already cancelled", job_id, exc)

    def list_for_session(self, caller: Caller, request: jobs_pb2.ListJobsRequest) -> jobs_pb2.ListJobsResponse:
        self.sessions.get(caller, request.session_id)
        ids = texts(self.redis.zrevrange(session_jobs_key(request.session_id), 0, -1))
        offset = int(request.page.cursor) if request.page.cursor.isdigit() else 0
        limit = min(request.page.limit or 100, 1000)
        response = jobs_pb2.ListJobsResponse()
        for job_id in ids[offset : offset + limit]:
            raw = self.redis.hgetall(job_key(job_id))
            if raw:
                response.jobs.append(_to_job(job_id, hash_fields(raw)))
        if offset + limit < len(ids):
            response.next_cursor = str(offset + limit)
        return response


def _to_job(job_id: str, raw: dict[str, bytes]) -> jobs_pb2.Job:
    spec = sandbox_pb2.ChildJob.FromString(raw["spec"])
    job = jobs_pb2.Job(
        id=job_id,
        session_id=spec.session_id,
        language=spec.language,
        status=_STATUS[JobState(raw["status"].decode())],
        limits=spec.limits,
        principal=raw["principal"].decode(),
        created_at=float(raw.get("created_at", b"0")),
        started_at=float(raw.get("started_at", b"0")),
        finished_at=float(raw.get("finished_at", b"0")),
        worker=raw.get("worker", b"").decode(),
    )
    if "result" in raw:
        job.result.ParseFromString(raw["result"])
    return job
