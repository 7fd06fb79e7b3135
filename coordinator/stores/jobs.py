"""Job submission and job records, on top of `scriptpool.core.job_records` (the shared schema).

Submitting writes the job record, the job's credential, its new session (when it has none) and the
RQ job in one Redis transaction, so a job is either fully enqueued or not at all. A batch
(SubmitJobs) is checked whole first, then written in one transaction too: all of its jobs or none.
A submission with an idempotency key claims the key in that transaction, which is dropped if the key
was claimed already (`coordinator/stores/idempotency.py`): it then answers with the jobs it queued.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.queue import EnqueueData

from scriptpool.coordinator.auth import Caller, new_job_credential
from scriptpool.coordinator.metrics import JOBS_ENDED, JOBS_SUBMITTED
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores.admission import Admission
from scriptpool.coordinator.stores.fair_queue import reorder_command
from scriptpool.coordinator.stores.idempotency import Idempotency, idempotency
from scriptpool.coordinator.stores.not_found import job_not_found, refused, session_not_found
from scriptpool.coordinator.stores.sessions import NewSession, SessionStore
from scriptpool.coordinator.stores.validation import check_uuid, parse_cursor
from scriptpool.core import tracing
from scriptpool.core.job_records import (
    RQ_FUNCTION,
    SESSION_JOB_FIELD,
    JobRecords,
    JobState,
    credential_hash,
    hash_fields,
    texts,
)
from scriptpool.core.keys import credential_key, job_key, queued_jobs_key, session_jobs_key, session_key
from scriptpool.core.lean_redis import Arg, LeanPool, Reply, read, read_many, transaction, watched_transaction
from scriptpool.core.rq_serializers import pass_default_serializer_as_none
from scriptpool.core.tracing import TRACEPARENT
from scriptpool.errors import InvalidArgument, NotFound, ScriptpoolError, Unavailable
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import LIMIT_FIELDS, JobLimits, LimitPolicy
from scriptpool.v1 import jobs_pb2, sandbox_pb2

log = logging.getLogger(__name__)

RQ_TIMEOUT_MARGIN_SECONDS = 60
DEFAULT_JOB_PAGE = 100
MAX_JOB_PAGE = 1000
REPLAYED_FIELD = "replayed"
"""Field of a job's record set ("1") when a replay submitted the job (coordinator/stores/replay.py)."""
MAX_RETRIES_FIELD = "max_retries"
"""Field of a job's record: the retries it asked for (only when > 0; read by the requeue script)."""
REPLAYS_FIELD = "replays"
"""Field of a job's record counting the replays its script started."""
_STATUS = {
    JobState.QUEUED: jobs_pb2.JOB_STATUS_QUEUED,
    JobState.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    JobState.FINISHED: jobs_pb2.JOB_STATUS_FINISHED,
}

_LANGUAGES = {language.to_proto(): language for language in Language}


@functools.lru_cache(maxsize=256)
def _resolve(policy: LimitPolicy, requested: tuple[int, ...]) -> JobLimits:
    """`policy.resolve` once per distinct request (the jobs of a batch mostly ask for the same)."""
    return policy.resolve(dict(zip(LIMIT_FIELDS, requested, strict=True)))


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
        max_batch_jobs: int = 1000,
        max_list_bytes: int = 4 * 1024 * 1024,
        max_job_retries: int = 10,
        idempotency_ttl_seconds: int = 24 * 3600,
        fair_queue: bool = True,
        lean: LeanPool | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.redis = redis
        # The submit transaction (RQ's enqueue plus our records, ~15 commands) is packed and sent on
        # the gRPC thread's lean connection: redis-py's packing and parsing were half of SubmitJob.
        self.lean = lean if lean is not None else LeanPool(redis)
        self.records = JobRecords(redis, lean=self.lean)
        self.sessions = sessions
        self.queue = Queue(queue, connection=redis)
        pass_default_serializer_as_none(self.queue)
        self.policy = policy
        self.max_source_bytes = max_source_bytes
        self.queue_ttl_seconds = queue_ttl_seconds
        self.result_ttl_seconds = result_ttl_seconds
        self.max_batch_jobs = max_batch_jobs
        self.max_list_bytes = max_list_bytes
        """Job record bytes (sources and results) one ListJobs call reads (settings.max_list_jobs_bytes)."""
        self.max_job_retries = max_job_retries
        self.idempotency_ttl_seconds = min(idempotency_ttl_seconds, result_ttl_seconds)
        """Capped at the result TTL: a key never names jobs whose records have expired."""
        self.admission = admission if admission is not None else Admission.from_settings(redis, Settings())
        """The queued-jobs quota and submission rate (`stores/admission.py`), with their server maxima."""
        self.fair_queue = fair_queue
        """Round-robin order across principals on RQ's queue (coordinator/stores/fair_queue.py)."""

    def _check(self, request: jobs_pb2.SubmitJobRequest) -> CheckedJob:
        """Every check of one job that needs no Redis; its session is checked with the batch's."""
        language = _LANGUAGES.get(request.language) or Language.from_proto(request.language)
        if not request.source.strip():
            raise InvalidArgument("source: the script is empty")
        size = len(request.source.encode("utf-8"))
        if size > self.max_source_bytes:
            raise InvalidArgument(f"source: {size} bytes is above the maximum of {self.max_source_bytes} bytes")
        if request.session_id:
            check_uuid(request.session_id, "session id")
        if request.max_retries > self.max_job_retries:
            raise InvalidArgument(
                f"max_retries: {request.max_retries} is above the maximum of {self.max_job_retries} retries per job"
            )
        limits = _resolve(self.policy, tuple(getattr(request.limits, name) for name in LIMIT_FIELDS))
        spec = sandbox_pb2.ChildJob(
            language=language.to_proto(),
            source=request.source,
            inputs=request.inputs,
            random_seed=secrets.randbits(48) | 1,
            limits=jobs_pb2.JobLimits(**{name: getattr(limits, name) for name in LIMIT_FIELDS}),
        )
        return CheckedJob(language, spec, request.session_id, max_retries=request.max_retries)

    def check_batch(self, caller: Caller, whole: jobs_pb2.SubmitJobsRequest) -> JobBatch:
        """Check every job of a SubmitJobs call, and their sessions, before anything is written; an
        error names the job (`jobs[3]: source: the script is empty`). The batch's idempotency key is
        checked too (the jobs' own must be empty)."""
        caller.require_client("JobService.SubmitJobs")
        requests = whole.jobs
        once = idempotency(caller.principal, whole.idempotency_key, whole)
        if not requests:
            raise InvalidArgument(f"jobs: the batch is empty; send 1 to {self.max_batch_jobs} jobs")
        if len(requests) > self.max_batch_jobs:
            raise InvalidArgument(
                f"jobs: {len(requests)} jobs is above the maximum of {self.max_batch_jobs} per call; "
                "split them into several SubmitJobs calls"
            )
        checked = []
        for index, request in enumerate(requests):
            try:
                if request.wait_seconds:
                    raise InvalidArgument("wait_seconds: must be 0 in a batch (SubmitJobsRequest.wait_seconds waits)")
                if request.idempotency_key:
                    raise InvalidArgument(
                        "idempotency_key: must be empty in a batch (SubmitJobsRequest.idempotency_key covers it)"
                    )
                checked.append(self._check(request))
            except ScriptpoolError as exc:
                raise type(exc)(f"jobs[{index}]: {exc.message}") from None
        return self._batch(caller, checked, "jobs[{}]: ", idempotent=once)

    def _batch(
        self,
        caller: Caller,
        checked: list[CheckedJob],
        where: str,
        job_id: str = "",
        idempotent: Idempotency | None = None,
    ) -> JobBatch:
        """Check the jobs' sessions (given ones must be the caller's, new ones must fit under the
        principal's maximum) and draw the job ids. `where` prefixes errors (formatted with the index)."""
        given = {job.session_id for job in checked if job.session_id}
        unknown = self.sessions.unknown(caller, given) if given else set()
        for index, job in enumerate(checked):
            if job.session_id in unknown:  # never confirm another principal's session
                raise NotFound(f"{where.format(index)}{session_not_found(job.session_id).message}")
        names = [f"{job.language.value} job" for job in checked if not job.session_id]
        new_sessions = self.sessions.prepare_for_jobs(caller, names) if names else []
        job_ids = [job_id] if job_id else [str(uuid.uuid4()) for _ in checked]
        return JobBatch(caller.principal, checked, job_ids, new_sessions, idempotent)

    def submit(
        self,
        caller: Caller,
        request: jobs_pb2.SubmitJobRequest,
        *,
        random_seed: int = 0,
        clock_start: float = 0.0,
        clock_replay: Sequence[float] = (),
        job_id: str = "",
        replayed: bool = False,
    ) -> jobs_pb2.Job:
        """Enqueue a job. `random_seed`, `clock_start` and `clock_replay` are for replays (the recorded
        job's seed, start time and clock reads); otherwise a fresh seed is drawn and kept in the job's
        spec, and the clock is real.
        `job_id` is a new UUID the caller drew (to watch for the job's end before it exists).
        `replayed` marks a job a replay submitted (its record's `replayed` field): it cannot replay.
        With an idempotency key already used for this request, the job it queued, as it is now
        (its id is then not `job_id`)."""
        caller.require_client("JobService.SubmitJob")
        once = idempotency(caller.principal, request.idempotency_key, request)
        checked = self._check(request)
        if random_seed:
            checked.spec.random_seed = random_seed
        checked.spec.clock_start = clock_start
        checked.spec.clock_replay.extend(clock_replay)
        checked.replayed = replayed
        return self.write(self._batch(caller, [checked], "", job_id, once))[0]

    def write(self, batch: JobBatch) -> list[jobs_pb2.Job]:
        """Enqueue a checked batch in one Redis transaction: every job or none, and none past the
        principal's queued-jobs quota or submission rate (`stores/admission.py`: RESOURCE_EXHAUSTED,
        nothing written). The jobs as queued, in the batch's order; with an idempotency key another
        request already used, the jobs that request queued instead, as they are now (nothing is written)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.multi()
        rq_jobs: list[EnqueueData] = []
        new_sessions = iter(batch.new_sessions)
        now = time.time()
        jobs = [
            self._append(
                pipe, rq_jobs, batch.principal, job, job_id, None if job.session_id else next(new_sessions), now
            )
            for job, job_id in zip(batch.jobs, batch.job_ids, strict=True)
        ]
        # A job submitted into a session made for another job makes it the principal's own (see
        # coordinator/stores/sessions.py): it is no longer completed and removed for that job.
        for session_id in {job.session_id for job in batch.jobs if job.session_id}:
            pipe.hdel(session_key(session_id), SESSION_JOB_FIELD)
        # RQ's own enqueue, so `rq info` and RQ's API see the jobs; for many jobs at once it costs
        # a quarter less than one `enqueue_call` each.
        self.queue.enqueue_many(rq_jobs, pipeline=pipe)
        writes: list[tuple[Arg, ...]] = [args for args, _ in pipe.command_stack]
        pipe.reset()
        if self.fair_queue:  # (run by the admission script as a function of its own: Lua cannot EVAL)
            writes.append(
                reorder_command(self.queue.name, self.queue.key, batch.principal, batch.job_ids, self.queue_ttl_seconds)
            )
        writes.append(("ZADD", queued_jobs_key(batch.principal), *(v for i in batch.job_ids for v in (now, i))))
        if batch.idempotency is not None:
            return self._write_once(batch.idempotency, batch, writes, jobs)
        admit = self.admission.command(batch.principal, len(jobs), writes)
        if self.lean.supported:
            reply = self.admission.run(lambda: transaction(self.lean, [admit], acknowledge="the submission")[0])
        else:
            reply = self.admission.run(lambda: self.redis.execute_command(*admit))  # type: ignore[no-untyped-call]
        self.admission.check(batch.principal, len(jobs), reply)
        _count_submitted(batch)
        return jobs

    def _write_once(
        self, once: Idempotency, batch: JobBatch, writes: list[tuple[Arg, ...]], jobs: list[jobs_pb2.Job]
    ) -> list[jobs_pb2.Job]:
        """`writes`, with the claim of the idempotency key, sent in a transaction (one round trip,
        like an unkeyed submit) that is dropped if the key was there: the jobs, or the earlier
        request's (read in a second round trip)."""
        claim = once.claim(self.idempotency_ttl_seconds, batch.job_ids)
        admit = self.admission.command(batch.principal, len(jobs), [*claim, *writes])
        for _ in range(3):  # (a key claimed, then gone before it is read: it expired; claim it again)
            reply = self.admission.run(lambda: self._claimed(once, admit))
            if reply is not None:
                self.admission.check(batch.principal, len(jobs), reply)
                _count_submitted(batch)
                return jobs
            ids = once.earlier_jobs(self.redis.hmget(once.redis_key, "fingerprint", "jobs"))
            if ids is not None:
                return self._earlier(once, batch.principal, ids)
        raise Unavailable(f"idempotency_key {once.key!r}: could not claim it; send the request again")

    def _claimed(self, once: Idempotency, admit: tuple[Arg, ...]) -> Reply | None:
        """The admission script's reply, or None if the key was claimed already (nothing ran)."""
        if self.lean.supported:
            claimed = watched_transaction(
                self.lean, once.redis_key, once.touch(), [admit], acknowledge="the submission"
            )
            return None if claimed is None else claimed[0]
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(once.redis_key)  # type: ignore[no-untyped-call]
                pipe.execute_command(*once.touch())  # type: ignore[no-untyped-call]
                pipe.multi()
                pipe.execute_command(*admit)  # type: ignore[no-untyped-call]
                reply: Reply = pipe.execute()[0]
                return reply
            except WatchError:
                return None

    def _earlier(self, once: Idempotency, principal: str, ids: list[str]) -> list[jobs_pb2.Job]:
        records = self.redis.pipeline(transaction=False)
        for job_id in ids:
            records.hgetall(job_key(job_id))
        found = []
        for job_id, raw in zip(ids, records.execute(), strict=True):
            if not raw or hash_fields(raw)["principal"].decode() != principal:
                raise NotFound(f"job {job_id} of idempotency_key {once.key!r} not found (its record expired)")
            found.append(_to_job(job_id, hash_fields(raw)))
        return found

    def _append(
        self,
        pipe: Pipeline,
        rq_jobs: list[EnqueueData],
        principal: str,
        job: CheckedJob,
        job_id: str,
        new_session: NewSession | None,
        now: float,
    ) -> jobs_pb2.Job:
        """Add one job's writes to the transaction `pipe` (its new session if it has none, its record,
        its credential, its session's job index) and its RQ job to `rq_jobs`. Returns the job as
        queued, built from what is written (no second round trip to read it back)."""
        spec = job.spec
        session_id = new_session.session.id if new_session is not None else job.session_id
        spec.job_id = job_id
        spec.session_id = session_id
        credential = new_job_credential()
        cred_hash = credential_hash(credential)
        wall_s = spec.limits.wall_time_ms / 1000.0
        rq_jobs.append(
            Queue.prepare_data(
                RQ_FUNCTION,
                args=(job_id,),
                job_id=job_id,
                timeout=int(wall_s + RQ_TIMEOUT_MARGIN_SECONDS),
                ttl=self.queue_ttl_seconds,
                result_ttl=self.result_ttl_seconds,
                failure_ttl=self.result_ttl_seconds,
                description=f"scriptpool {job.language.value} job {job_id} (session {session_id})",
            )
        )
        if new_session is not None:
            self.sessions.write(pipe, new_session, for_job=job_id)
        record: dict[str, str | bytes] = {
            "spec": spec.SerializeToString(),
            "principal": principal,
            "session_id": session_id,
            "status": JobState.QUEUED.value,
            "credential": credential,
            "cred_hash": cred_hash,
            "created_at": repr(now),
        }
        if job.replayed:
            record[REPLAYED_FIELD] = "1"
        if job.max_retries:
            record[MAX_RETRIES_FIELD] = str(job.max_retries)
        traceparent = tracing.current_traceparent()  # (the submit's span, when tracing is on)
        if traceparent:
            record[TRACEPARENT] = traceparent
        pipe.hset(job_key(job_id), mapping=record)  # type: ignore[arg-type]
        pipe.hset(
            credential_key(cred_hash), mapping={"job_id": job_id, "principal": principal, "session_id": session_id}
        )
        pipe.expire(credential_key(cred_hash), int(self.queue_ttl_seconds + wall_s + RQ_TIMEOUT_MARGIN_SECONDS))
        pipe.zadd(session_jobs_key(session_id), {job_id: now})
        return jobs_pb2.Job(
            id=job_id,
            session_id=session_id,
            language=spec.language,
            status=jobs_pb2.JOB_STATUS_QUEUED,
            limits=spec.limits,
            principal=principal,
            created_at=now,
            attempt=1,
            max_retries=job.max_retries,
        )

    def refresh(self, jobs: Sequence[jobs_pb2.Job]) -> list[jobs_pb2.Job]:
        """Bring jobs this store returned (to their submitter: no access check) up to date from their
        records, in one round trip, reading only the fields that change. Returns those finished."""
        replies = read_many(self.lean, self.redis, [("HMGET", job_key(job.id), *_LIVE_FIELDS) for job in jobs])
        finished = []
        for job, reply in zip(jobs, replies, strict=True):
            assert isinstance(reply, list)
            if reply[0] is not None:  # (a record that expired meanwhile is left as last seen)
                _apply_live(job, dict(zip(_LIVE_FIELDS, reply, strict=True)))  # type: ignore[arg-type]
                if job.status == jobs_pb2.JOB_STATUS_FINISHED:
                    finished.append(job)
        return finished

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
            raise job_not_found(job_id)
        return hash_fields(raw)

    def get(self, caller: Caller, job_id: str) -> jobs_pb2.Job:
        raw = self._raw(job_id)
        owner = raw["principal"].decode()
        if owner != caller.principal:
            refused(caller, "job", job_id, owner)
            raise job_not_found(job_id)
        return _to_job(job_id, raw)

    def is_finished(self, job_id: str) -> bool:
        return self.redis.hget(job_key(job_id), "status") == JobState.FINISHED.value.encode()

    def cancel(self, caller: Caller, job_id: str) -> jobs_pb2.Job:
        caller.require_client("JobService.CancelJob")
        self.get(caller, job_id)
        state = self.records.request_cancel(job_id)
        if state is JobState.QUEUED:
            applied = self.records.cancel_queued(
                job_id, "the job was cancelled before it started", time.time(), self.result_ttl_seconds
            )
            if applied:
                JOBS_ENDED.labels(Outcome.CANCELLED.value).inc()
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
        """A page of the session's jobs, newest first. It reads the page's ids only (a ranged read from
        the cursor), then the records' sizes, then at most `max_list_bytes` of records (always at least
        one): a page over that many bytes ends early with a `next_cursor`. Four round trips at most,
        whatever the session holds."""
        limit = request.page.limit or DEFAULT_JOB_PAGE
        if limit > MAX_JOB_PAGE:
            raise InvalidArgument(f"page.limit {limit} is above the maximum {MAX_JOB_PAGE}")
        offset = parse_cursor(request.page.cursor)
        self.sessions.get(caller, request.session_id, "Job.list")
        ids = texts(self.redis.zrevrange(session_jobs_key(request.session_id), offset, offset + limit))
        more = len(ids) > limit
        ids = ids[:limit]
        sizes = self.redis.pipeline(transaction=False)
        for job_id in ids:
            sizes.hstrlen(job_key(job_id), "spec")
            sizes.hstrlen(job_key(job_id), "result")
        lengths = sizes.execute()
        taken, total = 0, 0
        for index in range(len(ids)):
            total += int(lengths[2 * index]) + int(lengths[2 * index + 1])
            if taken and total > self.max_list_bytes:
                more = True
                break
            taken += 1
        records = self.redis.pipeline(transaction=False)
        for job_id in ids[:taken]:
            records.hgetall(job_key(job_id))
        response = jobs_pb2.ListJobsResponse()
        for job_id, raw in zip(ids[:taken], records.execute() if taken else [], strict=True):
            if raw:  # (a record that expired: its id stays in the session's index)
                response.jobs.append(_to_job(job_id, hash_fields(raw)))
        if more:
            response.next_cursor = str(offset + taken)
        return response


@dataclass(slots=True)
class CheckedJob:
    """One job request that passed the checks that need no Redis; not written yet."""

    language: Language
    spec: sandbox_pb2.ChildJob
    """Complete but for `job_id` and `session_id`, filled in when it is written."""
    session_id: str
    """The session it was submitted with; "" = a new session is made for it."""
    replayed: bool = False
    """Submitted by a replay (`JobStore.submit(replayed=True)`): its script cannot start a replay."""
    max_retries: int = 0
    """Times it is queued again when its worker is lost mid-run (`coordinator/sweeper.py`)."""


@dataclass(frozen=True, slots=True)
class JobBatch:
    """Jobs checked together, sessions included (`JobStore.check_batch`), and not written yet. The
    ids are drawn here so a caller can watch for the jobs' ends before they exist."""

    principal: str
    jobs: list[CheckedJob]
    job_ids: list[str]
    new_sessions: list[NewSession]
    """One for each job without a session, in order."""
    idempotency: Idempotency | None = None
    """The submission's idempotency key, if it sent one: the batch is written only if it is new."""


# The fields of a job record that change after it is queued (what `refresh` reads).
_LIVE_FIELDS = ("status", "started_at", "finished_at", "worker", "result", "attempt")


def _count_submitted(batch: JobBatch) -> None:
    for job in batch.jobs:
        JOBS_SUBMITTED.labels(job.language.value).inc()


def _apply_live(job: jobs_pb2.Job, raw: dict[str, bytes | None]) -> None:
    status = raw["status"]
    assert status is not None
    job.status = _STATUS[JobState(status.decode())]
    job.started_at = float(raw.get("started_at") or b"0")
    job.finished_at = float(raw.get("finished_at") or b"0")
    job.worker = (raw.get("worker") or b"").decode()
    job.attempt = int(raw.get("attempt") or b"1")
    result = raw.get("result")
    if result is not None:
        job.result.ParseFromString(result)


def _to_job(job_id: str, raw: dict[str, bytes]) -> jobs_pb2.Job:
    spec = sandbox_pb2.ChildJob.FromString(raw["spec"])
    job = jobs_pb2.Job(
        id=job_id,
        session_id=spec.session_id,
        language=spec.language,
        limits=spec.limits,
        principal=raw["principal"].decode(),
        created_at=float(raw.get("created_at", b"0")),
        max_retries=int(raw.get(MAX_RETRIES_FIELD, b"0")),
    )
    _apply_live(job, raw)  # type: ignore[arg-type]
    return job
