"""Finish or recover jobs whose worker vanished, every `SWEEP_SECONDS` (less with a lease under 8 s):

- a running job whose lease expired and that asked for retries (`max_retries`) and has some left
  goes back on RQ's queue for its next attempt, record and RQ together in one transaction: the
  record back to `queued` with `attempt` + 1 and a new credential, the job out of RQ's
  StartedJobRegistry and at the head of its queue, `queued` in RQ (what RQ's own `Job.retry` does);
- any other running job whose lease expired ends as `worker_lost`, and RQ's registries are told the same
  (the job leaves RQ's StartedJobRegistry for its FailedJobRegistry, as RQ's own abandoned-job
  cleanup would do once the execution's much longer heartbeat expired);
- the RQ worker that held a job whose lease expired leaves RQ's worker list at once (RQ's own
  `register_death`), if RQ still shows it on that job: `rq info` and `Worker.all()` stop listing a
  dead worker as busy within one lease, instead of when its RQ key expires minutes later;
- a job stranded in RQ's intermediate queue (a worker's dequeue moved its id there, and the worker
  died before its start transaction claimed it) goes back on RQ's queue while its record is still
  `queued`: nothing ran, so another worker runs it once;
- a `queued` job whose RQ job is gone or ended in RQ before it ran (`rq empty`, RQ's `Job.cancel()`
  or `Job.delete()`, its RQ job expired; `finished`/`failed` in RQ only when it is not on RQ's
  queue either) ends `cancelled`, saying so: no worker would ever run it,
  and its client would wait for ever. Job records are looked at a bounded slice per sweep
  (`RECONCILE_SCAN_COUNT`, a SCAN cursor kept between sweeps), so every record is seen once per
  cycle through the keyspace.

RQ has a cleanup for its intermediate queue (`IntermediateQueue.cleanup`, run by a worker's
maintenance every 10 minutes, and only while a worker is not blocked dequeuing): it fails a job
seen there for over a minute, and scriptpool's record would stay `queued`. The sweeper acts first,
after `stranded_after_seconds`, and puts the job back instead. How long an id has sat there is kept
in the sweeper's memory, not in RQ's per-job `first_seen` keys (a key kept 24 h for every id a sweep
happens to see in flight); a restarted coordinator starts counting again.

Time the sweeper could not observe does not count against a lease. A lease lapses when its worker
stopped renewing it, or when Redis (or the coordinator, or the host) stopped for longer than the
lease: live workers then renew as soon as Redis answers again, and expiring their jobs on the first
sweep after the outage would finish healthy jobs as `worker_lost`. So the sweeper expires leases only
once it has seen Redis answer continuously, with no gap between replies longer than two sweep
intervals, for a whole lease interval: from its start, and again after every gap (a Redis outage or
pause, the coordinator paused, the host suspended; `observation_clock` counts suspended time).
A stranded id's wait starts again after a gap too. Workers renew every 0.25 s and keep retrying
through errors (`workers/lease.py`), so a live worker's lease is current again long before the hold
ends; a dead worker's job is finished one lease interval after Redis came back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import WatchError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from scriptpool.coordinator.auth import new_job_credential
from scriptpool.coordinator.metrics import JOBS_ENDED
from scriptpool.coordinator.stores import lua
from scriptpool.core import rq_internals
from scriptpool.core.defaults import LEASE_SECONDS
from scriptpool.core.job_records import JobRecords, JobState, credential_hash, text, texts
from scriptpool.core.keys import LEASES_KEY, job_key
from scriptpool.core.rq_internals import Execution, record_job_failure
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
"""How often the sweeper runs, unless a lease under 4 sweeps asks for more often (`sweep_interval`)."""
MAX_STRANDED_SCAN = 1000
"""Ids of the intermediate queue one sweep looks at (it holds one per worker dequeuing at most,
unless workers died there)."""
WORKER_LOST_MESSAGE = "the worker running this job stopped responding; the job did not finish"
RECONCILE_SCAN_COUNT = 1000
"""Keys one sweep asks Redis's SCAN to look at for queued job records whose RQ job is gone (a hint
to SCAN: a reply holds about this many; the record and RQ reads that follow are two pipelined round
trips for those found)."""
RQ_WILL_RUN = {JobStatus.QUEUED.value, JobStatus.STARTED.value, JobStatus.DEFERRED.value, JobStatus.SCHEDULED.value}
"""RQ statuses after which a worker may still take the job."""
RQ_REMOVED = {JobStatus.CANCELED.value, JobStatus.STOPPED.value}
"""RQ statuses that only an operator's action gives a job that has not run (RQ's cancel or stop)."""
REMOVED_FROM_RQ_MESSAGE = "the job was removed from the RQ queue before it started ({})"
_JOB_KEY_PREFIX = job_key("")

_RECOVER_STRANDED = lua.script("sweeper_recover_stranded")

_DROP_LEASE = lua.script("sweeper_drop_lease")


def sweep_interval(lease_seconds: float) -> float:
    """Seconds between sweeps: `SWEEP_SECONDS`, or a quarter of a shorter lease, so that a gap the
    sweeper does not notice (up to two intervals) is at most half a lease."""
    return min(SWEEP_SECONDS, lease_seconds / 4)


def observation_clock() -> float:
    """Seconds of a clock that never goes back and keeps counting while the host is suspended
    (CLOCK_BOOTTIME; `time.monotonic` stops then, while the wall-clock lease deadlines pass)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class LeaseSweeper:
    def __init__(
        self,
        records: JobRecords,
        result_ttl_seconds: int,
        queue: Queue,
        stranded_after_seconds: float = 10.0,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = observation_clock,
    ) -> None:
        """`lease_seconds`: the workers' lease (`SCRIPTPOOL_LEASE_SECONDS`); how long Redis must have been
        observed before a lapsed lease is taken for a dead worker. `clock`: `observation_clock` (tests
        pass their own)."""
        if not 0 < lease_seconds < math.inf:
            raise ValueError(f"lease_seconds must be positive (got {lease_seconds})")
        self.records = records
        self.result_ttl_seconds = result_ttl_seconds
        self.queue = queue
        self.stranded_after_seconds = stranded_after_seconds
        self.lease_seconds = lease_seconds
        self.interval = sweep_interval(lease_seconds)
        self.gap_seconds = 2 * self.interval
        """Replies further apart than this mean time the sweeper did not observe."""
        self._clock = clock
        self._last_reply: float | None = None
        """When Redis last answered the sweeper (`clock`); None before the first answer."""
        self._observed_since = 0.0
        """Start of the current stretch of replies without a gap (`clock`)."""
        self._first_seen: dict[str, float] = {}
        self.scan_cursor = 0
        """Where `reconcile_queued`'s walk through the job records is (a SCAN cursor; back to 0 once
        a walk is complete)."""
        """Ids in RQ's intermediate queue at the last sweep -> when a sweep first saw them (monotonic)."""
        self._recover_stranded = records.redis.register_script(_RECOVER_STRANDED)  # run only when stranded
        self._drop_lease = records.redis.register_script(_DROP_LEASE)
        self.also: list[Callable[[], object]] = []
        """Other sweeps run after each lease sweep (each catches its own errors)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    @property
    def holding(self) -> bool:
        """True while lapsed leases are left alone: Redis has not yet been observed for a lease
        interval since the sweeper started or since its last gap."""
        return self._last_reply is None or self._last_reply - self._observed_since < self.lease_seconds

    def _replied(self) -> bool:
        """Note that Redis just answered. True once it has answered without a gap for a lease interval."""
        now = self._clock()
        if self._last_reply is None or now - self._last_reply > self.gap_seconds:
            if self._last_reply is not None:
                log.warning(
                    "lease sweeper: Redis was not observed for %.1f s; no lease expires for the next %.0f s "
                    "(live workers renew theirs meanwhile)",
                    now - self._last_reply,
                    self.lease_seconds,
                )
            self._observed_since = now
            self._first_seen.clear()  # a stranded id's wait starts again too
        self._last_reply = now
        return not self.holding

    def sweep_once(self) -> int:
        """Finish the jobs whose lease expired, then recover stranded ones. Returns how many were finished."""
        swept = 0
        now = time.time()
        lapsed = self.records.expired_leases(now)
        lost_workers: dict[str, str] = {}
        if self._replied():
            for job_id in lapsed:
                worker = self.records.redis.hget(job_key(job_id), "worker")
                if worker:
                    lost_workers.setdefault(text(worker), job_id)
                attempt = self._retry(job_id, now)
                if attempt is None:
                    continue  # its record or lease changed while this sweep looked at it: the next sweep decides
                if attempt:
                    log.warning("job %s: worker lost; queued again for attempt %d", job_id, attempt)
                    continue
                result = jobs_pb2.JobResult(outcome=Outcome.WORKER_LOST.to_proto(), message=WORKER_LOST_MESSAGE)
                if self.records.finish(
                    job_id,
                    result.SerializeToString(),
                    now,
                    self.result_ttl_seconds,
                    only_if=JobState.RUNNING,
                    outcome=Outcome.WORKER_LOST.value,
                    lease_lapsed_by=now,
                ):
                    log.warning("job %s: worker lost", job_id)
                    JOBS_ENDED.labels(Outcome.WORKER_LOST.value).inc()
                    self._fail_in_rq(job_id)
                    swept += 1
                else:  # finished meanwhile (its lease goes), or renewed since the read (it stays)
                    self._drop_lease(keys=[job_key(job_id), LEASES_KEY], args=[job_id])
                if not self._replied():
                    break  # a gap in the middle of the sweep: the rest were read before it
        for worker, job_id in lost_workers.items():
            self._forget_rq_worker(worker, job_id)
        self.recover_stranded()
        self.reconcile_queued()
        return swept

    def _forget_rq_worker(self, name: str, job_id: str) -> None:
        """Drop the worker `name`, whose lease on `job_id` lapsed, from RQ's worker list (RQ's own
        `register_death`: out of `rq:workers`, its key marked dead and gone in 60 s), if RQ still
        shows it on that job. A worker that was only paused past its lease and has moved on to
        another job since is left alone. Best effort."""
        try:
            connection = self.queue.connection
            worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
            if worker is None or worker.get_current_job_id() not in (job_id, None):
                return
            worker.register_death()  # type: ignore[no-untyped-call]
            log.warning("worker %s: its lease on job %s lapsed; removed from RQ's worker list", name, job_id)
        except Exception as exc:
            log.warning("worker %s: could not remove it from RQ's worker list (%s)", name, exc)

    def reconcile_queued(self) -> list[str]:
        """End `cancelled` the queued jobs, among the next slice of job records (`RECONCILE_SCAN_COUNT`),
        whose RQ job is gone or ended before it ran (see the module docstring). Returns their ids."""
        redis: Redis = self.records.redis
        self.scan_cursor, keys = redis.scan(self.scan_cursor, match=_JOB_KEY_PREFIX + "*", count=RECONCILE_SCAN_COUNT)
        ids = [key[len(_JOB_KEY_PREFIX) :] for key in texts(keys)]
        ids = [job_id for job_id in ids if job_id and ":" not in job_id]
        if not ids:
            return []
        with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(job_key(job_id), "status")
            queued = [job_id for job_id, status in zip(ids, pipe.execute(), strict=True) if status == b"queued"]
        if not queued:
            return []
        with redis.pipeline(transaction=False) as pipe:
            for job_id in queued:
                pipe.hmget(Job.redis_job_namespace_prefix + job_id, "status", "origin")
            in_rq = pipe.execute()
        ended = []
        for job_id, (rq_status, origin) in zip(queued, in_rq, strict=True):
            status = None if rq_status is None else text(rq_status)
            if status in RQ_WILL_RUN:
                continue
            if status not in RQ_REMOVED and origin is not None and self._in_rq_queue(job_id, text(origin)):
                # `finished`/`failed` while its record is queued, yet on RQ's queue: a worker paused
                # past its lease recorded its end in RQ after the sweeper had queued the next attempt
                # (docs/adr/0006); the next attempt runs.
                continue
            message = REMOVED_FROM_RQ_MESSAGE.format(
                "its RQ job was deleted" if status is None else f"RQ's status for it: {status}"
            )
            if self.records.cancel_queued(job_id, message, time.time(), self.result_ttl_seconds):
                log.warning("job %s: %s; ended cancelled", job_id, message)
                JOBS_ENDED.labels(Outcome.CANCELLED.value).inc()
                ended.append(job_id)
        return ended

    def _in_rq_queue(self, job_id: str, origin: str) -> bool:
        """Whether `job_id` waits in RQ's queue `origin` or its intermediate queue (rare: see the caller)."""
        queue = self.queue if origin == self.queue.name else Queue(origin, connection=self.queue.connection)
        with self.records.redis.pipeline(transaction=True) as pipe:  # both at one instant: a dequeue moves it
            pipe.lpos(queue.key, job_id)
            pipe.lpos(queue.intermediate_queue_key, job_id)
            return any(position is not None for position in pipe.execute())

    def _retry(self, job_id: str, now: float) -> int | None:
        """Queue `job_id` again if it asked for retries and has some left. Returns its new attempt, 0
        if it is not to be retried (it then ends `worker_lost`), None if its record changed meanwhile.
        The record is watched while the decision is made, so a worker finishing the job or a cancel
        in between aborts the transaction instead of racing it."""
        redis: Redis = self.records.redis
        with redis.pipeline() as pipe:
            try:
                pipe.watch(job_key(job_id))  # type: ignore[no-untyped-call]
                status, attempt, most, cancel = pipe.hmget(
                    job_key(job_id), "status", "attempt", "max_retries", "cancel_requested"
                )
                current = int(attempt or 1)
                if status != JobState.RUNNING.value.encode() or cancel or current > int(most or 0):
                    return 0
                lease = pipe.zscore(LEASES_KEY, job_id)
                if lease is not None and lease > now:
                    return None  # renewed since the sweep read it: its worker lives
                try:
                    job = Job.fetch(job_id, connection=self.queue.connection)
                except NoSuchJobError:
                    return 0  # (RQ's job hash expired: nothing to queue again)
                queue = self.queue if job.origin == self.queue.name else Queue(job.origin, connection=redis)
                credential = new_job_credential()
                # As long as the submitted credential could live: the queue TTL plus RQ's timeout.
                credential_ttl = int((job.ttl or 24 * 3600) + (job.timeout or 0))
                entries = self._started_entries(job)
                pipe.multi()
                pipe.eval(
                    self.records.requeue_source,
                    2,
                    *JobRecords.requeue_keys(job_id),
                    *JobRecords.requeue_args(
                        job_id, now, current, credential, credential_hash(credential), credential_ttl
                    ),
                )
                for entry in entries:
                    Execution.from_composite_key(entry, redis).delete(job, pipe)
                rq_internals.enqueue_in_transaction(
                    queue, job, pipe, at_front=True
                )  # RQ's Job.retry, minus retries_left
                return int(pipe.execute()[0])
            except WatchError:
                return None

    def _started_entries(self, job: Job) -> list[str]:
        """`job`'s entries in its queue's StartedJobRegistry ("job_id:execution_id"; one per running
        job, so a short read)."""
        started = job.started_job_registry
        return [e for e in texts(self.queue.connection.zrange(started.key, 0, -1)) if e.startswith(job.id + ":")]

    def recover_stranded(self) -> list[str]:
        """Put back on the queue the jobs stranded in RQ's intermediate queue for
        `stranded_after_seconds` (see the module docstring). Returns their ids."""
        redis: Redis = self.records.redis
        intermediate = self.queue.intermediate_queue_key
        present = texts(redis.lrange(intermediate, 0, MAX_STRANDED_SCAN - 1))
        self._replied()  # after a gap, no wait counts from before it
        seen_now = time.monotonic()
        self._first_seen = {job_id: self._first_seen.get(job_id, seen_now) for job_id in present}
        recovered = []
        for job_id, first_seen in list(self._first_seen.items()):
            if seen_now - first_seen < self.stranded_after_seconds:
                continue
            del self._first_seen[job_id]
            keys = [intermediate, self.queue.key, job_key(job_id), Job.redis_job_namespace_prefix + job_id]
            done = self._recover_stranded(keys=keys, args=[job_id])
            if done and text(done) == "requeued":
                log.warning("job %s: its worker died between dequeuing and claiming it; queued again", job_id)
                recovered.append(job_id)
            elif done:
                log.info("job %s: left RQ's intermediate queue (no longer queued)", job_id)
        return recovered

    def _fail_in_rq(self, job_id: str) -> None:
        """RQ's side of `worker_lost`: what RQ's StartedJobRegistry cleanup does for an abandoned job
        (failed, with a failure result, out of the started registry), done now instead of when the
        RQ execution's heartbeat expires. Best effort: the scriptpool record is already final."""
        try:
            job = Job.fetch(job_id, connection=self.queue.connection)
            if job.get_status(refresh=False) != JobStatus.STARTED:
                return
            entries = self._started_entries(job)  # its own queue's (leases are shared by every queue)
            with self.queue.connection.pipeline() as pipeline:
                for entry in entries:
                    Execution.from_composite_key(entry, self.queue.connection).delete(job, pipeline)
                record_job_failure(job, f"worker_lost: {WORKER_LOST_MESSAGE}", pipeline)
                pipeline.execute()
        except NoSuchJobError:
            return
        except Exception as exc:
            log.warning("job %s: could not mark it failed in RQ (%s)", job_id, exc)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("lease sweep failed: %s", exc)
            for sweep in self.also:
                sweep()
