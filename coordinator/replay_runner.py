"""Every running replay, driven by one coordinator thread (docs/adr/0004-bounded-replay.md).

A replay is a list of recorded jobs to re-submit one after another into its replay session. The
runner submits a replay's next job when the previous one has finished and the recorded gap (scaled
by `speed`) has passed; it learns of finished jobs from the job-finished channel (`JobWaiters.add`)
and re-reads the still unfinished ones every `RECHECK_SECONDS`. No thread is held per replay, and a
principal runs at most `max_per_principal` replays at once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import timeline
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.waiters import RECHECK_SECONDS, FinishedIds, JobWaiters
from scriptpool.core.repeated_log import RepeatedProblem
from scriptpool.errors import ResourceExhausted
from scriptpool.v1 import common_pb2, jobs_pb2, sandbox_pb2
from scriptpool.values import PlainValue, from_value, to_value_map

log = logging.getLogger(__name__)
MAX_GAP_SECONDS = 60.0
SHOWN_RESULT_BYTES = 256
"""A result (or message) up to this size is shown in `first_divergence`; a larger one by its digest."""
RecordedJob = tuple[float, sandbox_pb2.ChildJob, jobs_pb2.JobResult]
"""(created_at, spec with the recorded seed and start time, recorded result)"""


@dataclass(slots=True)
class ReplayRun:
    owner: Caller
    replay_id: str
    jobs: list[RecordedJob]
    speed: float
    cap: jobs_pb2.JobLimits | None = None
    """The replaying job's limits: no replayed job gets more (None: a client replays)."""
    index: int = 0
    current: str = ""
    """The replayed job running now ("" between jobs)."""
    due: float = 0.0
    """Monotonic time the next job may be submitted."""
    matched: int = 0
    diverged: int = 0
    first_divergence: dict[str, PlainValue] | None = field(default=None)


def _shown(result: jobs_pb2.JobResult) -> PlainValue:
    """A result value as `first_divergence` shows it: the value itself when it is small, else its
    digest (the replay session's metadata has a size cap)."""
    data = result.result.SerializeToString(deterministic=True)
    if len(data) <= SHOWN_RESULT_BYTES:
        return from_value(result.result)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def divergence(recorded: jobs_pb2.JobResult, replayed: jobs_pb2.JobResult) -> dict[str, PlainValue] | None:
    """What differs between a recorded job's result and its replay's (None: they match): the
    outcomes, or the result values (shown, or their digests when large)."""
    if recorded.outcome != replayed.outcome:
        return {
            "differs_in": "outcome",
            "recorded_outcome": jobs_pb2.Outcome.Name(recorded.outcome),
            "replayed_outcome": jobs_pb2.Outcome.Name(replayed.outcome),
            "recorded_message": recorded.message[:SHOWN_RESULT_BYTES],
            "replayed_message": replayed.message[:SHOWN_RESULT_BYTES],
        }
    if recorded.result.SerializeToString(deterministic=True) != replayed.result.SerializeToString(deterministic=True):
        return {
            "differs_in": "result",
            "recorded_outcome": jobs_pb2.Outcome.Name(recorded.outcome),
            "replayed_outcome": jobs_pb2.Outcome.Name(replayed.outcome),
            "recorded_result": _shown(recorded),
            "replayed_result": _shown(replayed),
        }
    return None


class ReplayRunner:
    def __init__(self, jobs: JobStore, sessions: SessionStore, waiters: JobWaiters, max_per_principal: int) -> None:
        self.jobs = jobs
        self.sessions = sessions
        self.redis = sessions.redis
        self.waiters = waiters
        self.max_per_principal = max_per_principal
        self._lock = threading.Lock()
        self._runs: dict[str, ReplayRun] = {}
        self._reserved: dict[str, int] = {}
        self._finished = FinishedIds()
        self._thread: threading.Thread | None = None
        self._failing = RepeatedProblem(log, "replay runner step failed")
        """A step fails each RECHECK_SECONDS while Redis is down: logged once, then counted."""

    def reserve(self, principal: str) -> None:
        """Count one more running replay for `principal`, or RESOURCE_EXHAUSTED; `release` if the
        replay then does not start."""
        with self._lock:
            running = self._reserved.get(principal, 0)
            if running >= self.max_per_principal:
                raise ResourceExhausted(
                    f"principal {principal!r} already runs {running} replays, its limit at once "
                    f"(max_running_replays_per_principal {self.max_per_principal}); wait for one to finish"
                )
            self._reserved[principal] = running + 1

    def release(self, principal: str) -> None:
        with self._lock:
            left = self._reserved.get(principal, 1) - 1
            if left > 0:
                self._reserved[principal] = left
            else:
                self._reserved.pop(principal, None)

    def running(self, principal: str) -> int:
        with self._lock:
            return self._reserved.get(principal, 0)

    def start(self, run: ReplayRun) -> None:
        """Run a reserved replay (its first job is submitted at once)."""
        run.due = time.monotonic()
        with self._lock:
            self._runs[run.replay_id] = run
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="replays", daemon=True)
                self._thread.start()
        self._finished.interrupt()

    def _loop(self) -> None:
        recheck_at = time.monotonic() + RECHECK_SECONDS
        while True:
            try:
                recheck_at = self._step(recheck_at)
                self._failing.over()
            except Exception as exc:  # never let one bad step end every replay
                self._failing.happened(exc)
                time.sleep(RECHECK_SECONDS)

    def _step(self, recheck_at: float) -> float:
        with self._lock:
            runs = list(self._runs.values())
        now = time.monotonic()
        wait = max(0.0, recheck_at - now)
        for run in runs:
            if not run.current:
                if run.due <= now:
                    self._submit_next(run)
                else:
                    wait = min(wait, run.due - now)
        arrived = set(self._finished.take(wait))
        waiting = {run.current: run for run in runs if run.current}
        if time.monotonic() >= recheck_at:
            recheck_at = time.monotonic() + RECHECK_SECONDS
            for job_id in waiting:
                if job_id not in arrived and self.jobs.is_finished(job_id):
                    self.waiters.discard(job_id, self._finished)
                    arrived.add(job_id)
        for job_id in arrived:
            finished_run = waiting.get(job_id)
            if finished_run is not None:
                self._job_finished(finished_run)
        return recheck_at

    def _submit_next(self, run: ReplayRun) -> None:
        _, spec, _ = run.jobs[run.index]
        limits = jobs_pb2.JobLimits()
        limits.CopyFrom(spec.limits)
        if run.cap is not None:
            for name in (f.name for f in jobs_pb2.JobLimits.DESCRIPTOR.fields):
                setattr(limits, name, min(getattr(limits, name), getattr(run.cap, name)))
        request = jobs_pb2.SubmitJobRequest(
            language=spec.language, source=spec.source, session_id=run.replay_id, limits=limits, inputs=spec.inputs
        )
        job_id = str(uuid.uuid4())
        self.waiters.add(job_id, self._finished)
        try:
            self.jobs.submit(
                run.owner, request, random_seed=spec.random_seed, clock_start=spec.clock_start,
                clock_replay=spec.clock_replay, job_id=job_id, replayed=True,
            )  # fmt: skip
        except Exception as exc:
            self.waiters.discard(job_id, self._finished)
            if isinstance(exc, ResourceExhausted):  # the owner's quota (docs/adr/0020-quotas.md): no traceback
                log.warning("replay %s could not submit its job %d: %s", run.replay_id, run.index + 1, exc)
            else:
                log.exception("replay %s could not submit its job %d", run.replay_id, run.index + 1)
            self._end(run, "failed")
            return
        run.current = job_id

    def _job_finished(self, run: ReplayRun) -> None:
        started, _, recorded = run.jobs[run.index]
        job_id, run.current = run.current, ""
        try:
            result = self.jobs.get(run.owner, job_id).result
        except Exception:
            log.exception("replay %s lost its job %s", run.replay_id, job_id)
            self._end(run, "failed")
            return
        difference = divergence(recorded, result)
        same = difference is None
        if difference is None:
            run.matched += 1
        else:
            run.diverged += 1
            if run.first_divergence is None:
                run.first_divergence = {"job_index": run.index + 1, "replayed_job_id": job_id, **difference}
        run.index += 1
        progress = run.index / len(run.jobs)
        timeline.append(self.redis, run.replay_id, "replay.progress", f"{progress:.0%}", job_id=job_id,
                        data={"progress": progress, "matched": same})  # fmt: skip
        if run.index == len(run.jobs):
            self._end(run, "finished")
        else:
            gap = (run.jobs[run.index][0] - started) * run.speed if run.speed > 0 else 0.0
            run.due = time.monotonic() + min(max(gap, 0.0), MAX_GAP_SECONDS)

    def _end(self, run: ReplayRun, status: str) -> None:
        with self._lock:
            self._runs.pop(run.replay_id, None)
        self.release(run.owner.principal)
        summary: dict[str, PlainValue] = {
            "status": status,
            "jobs_replayed": run.matched + run.diverged,
            "matched": run.matched,
            "diverged": run.diverged,
            "first_divergence": run.first_divergence,
        }
        try:
            updates = common_pb2.ValueMap()
            updates.CopyFrom(to_value_map(summary))
            self.sessions.update_metadata(run.owner, run.replay_id, updates)
            timeline.append(self.redis, run.replay_id, "replay.finished", status, data=summary)
        except Exception:  # e.g. the replay session was deleted meanwhile
            log.exception("replay %s could not record its end", run.replay_id)
