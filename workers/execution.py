"""Execute one queued job: claim it, run it in a sandbox child, record the result.

This is what the RQ job function calls inside the worker process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from redis import Redis
from scriptpool.v1 import sandbox_pb2

from sandbox.languages import Language
from sandbox.outcomes import Outcome
from workers.bridge import CoordinatorBridge
from workers.call_stream import CoordinatorStubs
from workers.child_reuse import ReuseKey
from workers.job_records import JobRecords
from workers.lean_redis import LeanPool
from workers.lease import LeaseKeeper
from workers.settings import WorkerSettings
from workers.supervisor import ChildRun, Reaper, SparePool, supervise
from workers.zygote import ZygoteSource

log = logging.getLogger(__name__)


class JobExecutor:
    """Owns a worker's Redis connection, coordinator channel and spare sandbox child."""

    def __init__(self, settings: WorkerSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else Redis.from_url(settings.redis_url, protocol=2)
        self.lean = LeanPool(self.redis)
        self.records = JobRecords(self.redis, settings.lease_seconds, lean=self.lean)
        self.channel = grpc.insecure_channel(settings.coordinator)
        self.stubs = CoordinatorStubs(self.channel)
        self.leases = LeaseKeeper(self.records)
        self.reaper = Reaper()
        self.pool = SparePool(
            ZygoteSource() if settings.zygote else None, jobs_per_child=settings.jobs_per_child, reaper=self.reaper
        )

    def execute(self, job_id: str) -> dict[str, Any]:
        claimed = self.records.start(job_id, self.settings.name, time.time())
        if claimed is None:
            return {"job_id": job_id, "outcome": None, "note": "not queued any more (cancelled or already run)"}
        spec = sandbox_pb2.ChildJob.FromString(claimed.spec)
        reuse = ReuseKey.for_job(claimed.principal, spec, self.settings.jobs_per_child)
        run = self._run(job_id, spec, claimed.credential, reuse)
        applied = self.records.finish(
            job_id,
            run.to_job_result().SerializeToString(),
            time.time(),
            self.settings.result_ttl_seconds,
            outcome=run.outcome.value,
        )
        if not applied:
            log.info("job %s already finished elsewhere (cancelled or lease expired)", job_id)
        self.pool.refill()  # normally already done while the child ran
        self.reaper.collect()
        return {"job_id": job_id, "outcome": run.outcome.value, "message": run.message}

    def _run(self, job_id: str, spec: sandbox_pb2.ChildJob, credential: str, reuse: ReuseKey | None) -> ChildRun:
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
        )

        self.pool.expect(Language.from_proto(spec.language))
        try:
            with self.leases.hold(job_id) as lease:

                def on_tick() -> bool:
                    self.reaper.collect()
                    return lease.should_stop

                child, jobs_after = self.pool.take_for(reuse, spec.limits)
                for attempt in (1, 2):
                    run = supervise(
                        child,
                        spec,
                        bridge,
                        on_tick,
                        on_handed_over=self.pool.refill,
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
