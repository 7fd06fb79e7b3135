"""Execute one queued job: claim it, run it in a sandbox child, record the result.

This is what the RQ job function calls inside the worker process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from scriptpool.core import tracing
from scriptpool.core.job_records import ClaimedJob, JobRecords
from scriptpool.core.lean_redis import Arg, LeanPool, Reply
from scriptpool.core.redis_urls import open_client
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.tls import open_channel
from scriptpool.v1 import sandbox_pb2
from scriptpool.workers import metrics
from scriptpool.workers.bridge.call_stream import CoordinatorStubs
from scriptpool.workers.bridge.host import CoordinatorBridge
from scriptpool.workers.job_log import log_finished
from scriptpool.workers.lease import LeaseKeeper
from scriptpool.workers.settings import WorkerSettings
from scriptpool.workers.supervision.child_reuse import ReuseKey
from scriptpool.workers.supervision.supervisor import ChildRun, Reaper, SparePool, supervise
from scriptpool.workers.supervision.zygote import ZygoteSource

log = logging.getLogger(__name__)


class JobExecutor:
    """Owns a worker's Redis connection, coordinator channel and spare sandbox child."""

    def __init__(self, settings: WorkerSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else open_client(settings.redis_url, protocol=2)
        self.lean = LeanPool(self.redis)
        self._claims: dict[str, ClaimedJob | None] = {}
        """Claims the worker made in RQ's start transaction, by job id, until `execute` takes them."""
        self._pending_finish: dict[str, tuple[bytes, float, int, str, int]] = {}
        """Finishes (result, time, result TTL, outcome, attempt) left to the worker's finishing transaction."""
        self.queue_waits: dict[str, float | None] = {}
        """Seconds each job being started waited in the RQ queue (set by the worker before `execute`)."""
        self.records = JobRecords(self.redis, settings.lease_seconds, lean=self.lean)
        self.channel = open_channel(settings.coordinator, settings.tls)
        self.stubs = CoordinatorStubs(self.channel)
        self.leases = LeaseKeeper(self.records)
        self.reaper = Reaper()
        self.pool = SparePool(
            ZygoteSource() if settings.zygote else None, jobs_per_child=settings.jobs_per_child, reaper=self.reaper
        )

    # --- claim and finish inside the RQ worker's own transactions (workers/worker.py) ------------

    def claim_command(self, job_id: str) -> tuple[Arg, ...]:
        """The claim on `job_id`'s record, for the worker to send in RQ's start transaction."""
        return self.records.start_command(job_id, self.settings.name, time.time())

    def claim_answered(self, job_id: str, reply: Reply) -> None:
        """The claim's reply: `execute` uses it instead of claiming, and leaves the finish to the
        worker's finishing transaction (`finish_commands`, else `finish_pending`)."""
        self._claims[job_id] = JobRecords.claimed(reply)

    def finish_commands(self, job_id: str) -> list[tuple[Arg, ...]]:
        """The finish `execute` left for the worker's finishing transaction (none if it finished
        the job itself)."""
        pending = self._pending_finish.pop(job_id, None)
        return [] if pending is None else [self.records.finish_command(job_id, *pending)]

    def finish_pending(self, job_id: str) -> None:
        """Send a finish the worker's finishing transaction did not carry (RQ took another path)."""
        self._claims.pop(job_id, None)
        self.queue_waits.pop(job_id, None)
        pending = self._pending_finish.pop(job_id, None)
        if pending is not None:
            self._finish_now(job_id, pending)

    def _finish_now(self, job_id: str, finish: tuple[bytes, float, int, str, int]) -> None:
        result, now, ttl, outcome, attempt = finish
        try:
            finished = self.records.finish(job_id, result, now, ttl, outcome=outcome, attempt=attempt)
        except RedisError:
            metrics.REDIS_ERRORS.inc()
            raise
        if not finished:
            log.info("job %s already finished elsewhere, or queued again (cancelled or lease expired)", job_id)

    def execute(self, job_id: str) -> dict[str, Any]:
        queue_wait = self.queue_waits.pop(job_id, None)
        preclaimed = job_id in self._claims
        try:
            claimed = (
                self._claims.pop(job_id) if preclaimed else self.records.start(job_id, self.settings.name, time.time())
            )
        except RedisError:
            metrics.REDIS_ERRORS.inc()
            raise
        if claimed is None:
            return {"job_id": job_id, "outcome": None, "note": "not queued any more (cancelled or already run)"}
        started = time.time()
        spec = sandbox_pb2.ChildJob.FromString(claimed.spec)
        reuse = ReuseKey.for_job(claimed.principal, spec, self.settings.jobs_per_child)
        language = Language.from_proto(spec.language).value
        times = metrics.JobTimes(language, queue_wait)
        with tracing.job_span(job_id, language, claimed.traceparent) as span:
            run = self._run(job_id, spec, claimed.credential, reuse, claimed.attempt, times, span.traceparent)
            span.set_outcome(run.outcome.value)
        times.finished(run.outcome)
        log_finished(
            job_id=job_id,
            principal=claimed.principal,
            language=language,
            outcome=run.outcome.value,
            attempt=claimed.attempt,
            queue_wait_seconds=max(0.0, started - claimed.created_at) if claimed.created_at else 0.0,
            run_seconds=time.time() - started,
        )
        finish = (
            run.to_job_result().SerializeToString(),
            time.time(),
            self.settings.result_ttl_seconds,
            run.outcome.value,
            claimed.attempt,
        )
        if preclaimed:
            self._pending_finish[job_id] = finish
        else:
            self._finish_now(job_id, finish)
        self.pool.refill()  # normally already done while the child ran
        self.reaper.collect()
        return {"job_id": job_id, "outcome": run.outcome.value, "message": run.message}

    def _run(
        self,
        job_id: str,
        spec: sandbox_pb2.ChildJob,
        credential: str,
        reuse: ReuseKey | None,
        attempt: int = 1,
        times: metrics.JobTimes | None = None,
        traceparent: str = "",
    ) -> ChildRun:
        """`traceparent`: the job span's, sent with each global call (empty: not traced)."""
        deadline = time.monotonic() + spec.limits.wall_time_ms / 1000.0
        bridge = CoordinatorBridge(
            self.stubs,
            credential,
            spec.session_id,
            deadline,
            self.settings.call_timeout_seconds,
            artifact_bytes_limit=spec.limits.artifact_bytes,
            content_bytes_limit=spec.limits.memory_bytes,
            use_stream=self.settings.call_stream,
            language=Language.from_proto(spec.language).value,
            traceparent=traceparent,
        )

        self.pool.expect(Language.from_proto(spec.language))

        def handed_over() -> None:
            if times is not None:
                times.handover()
            self.pool.refill()

        try:
            with self.leases.hold(job_id, attempt) as lease:

                def on_tick() -> bool:
                    self.reaper.collect()
                    return lease.should_stop

                child, jobs_after = self.pool.take_for(reuse, spec.limits)
                (metrics.REUSED_CHILDREN if self.pool.reused else metrics.FRESH_CHILDREN).inc()
                for attempt in (1, 2):
                    run = supervise(
                        child,
                        spec,
                        bridge,
                        on_tick,
                        on_handed_over=handed_over,
                        reaper=self.reaper,
                        jobs_after=jobs_after,
                        keep_child=lambda kept, outcome: self.pool.keep(kept, reuse, jobs_after, outcome),
                    )
                    if run.handed_over or attempt == 2:
                        return run
                    # The child died between being chosen and getting the job (killed while it
                    # waited): nothing ran, so the job goes to a fresh spare instead of failing.
                    log.warning(
                        "job %s: sandbox child %d was gone before the handover; using a new one", job_id, child.pid
                    )
                    child = self.pool.take()
                    metrics.FRESH_CHILDREN.inc()
                return run
        except Exception:
            log.exception("job %s: supervising the sandbox failed", job_id)
            return ChildRun(outcome=Outcome.INTERNAL_ERROR, message="the worker failed while supervising the job")
        finally:
            bridge.close()

    def close(self) -> None:
        self.leases.close()
        self.pool.retire_kept()
        self.reaper.close()  # before the pool: a zygote's children are reaped through the zygote
        self.pool.close()
        self.channel.close()
        self.lean.close()
