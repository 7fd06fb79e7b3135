"""A worker process's Prometheus metrics: its jobs, their sandbox children, its jail, its state.

Each worker process serves its own /metrics (docs/adr/0013-metrics.md); the sandbox children never
touch metrics: the worker records what happened to them. Label values come from fixed sets
(languages, outcomes, jail layer names, `fresh`/`reused`, `busy`/`idle`), so the number of series is
bounded (docs/THREAT_MODEL.md).
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import JailReport

REGISTRY = CollectorRegistry()
"""Every metric this module defines (and the process's own: CPU, memory, open files)."""
ProcessCollector(registry=REGISTRY)

JOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SETUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BUSY, IDLE = "busy", "idle"
FRESH, REUSED = "fresh", "reused"

JOBS_FINISHED = Counter(
    "scriptpool_jobs_finished",
    "Jobs this worker ran to an end, by language and outcome.",
    ["language", "outcome"],
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "scriptpool_job_queue_wait_seconds",
    "Time a job waited in the RQ queue: from its enqueueing (or its requeueing) to a worker starting it.",
    ["language"],
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "scriptpool_job_run_seconds",
    "Time a job ran in its sandbox child: from the child getting the job to its end.",
    ["language"],
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
SETUP_SECONDS = Histogram(
    "scriptpool_sandbox_setup_seconds",
    "Time from a worker starting a job to its sandbox child having it (choosing or forking the child, "
    "moving its limits, handing the job over).",
    ["language"],
    buckets=SETUP_BUCKETS,
    registry=REGISTRY,
)
CHILDREN = Counter(
    "scriptpool_sandbox_children",
    "Sandbox children chosen for a job: `fresh` (never used) or `reused` (kept from the principal's previous "
    "job); a fresh child found dead before the handover is replaced by another, counted too.",
    ["kind"],
    registry=REGISTRY,
)
WORKER_STATE = Gauge(
    "scriptpool_worker_processes",
    "This worker process: 1 for its state (`busy` running a job, or `idle`), 0 for the other; "
    "summed over the workers, how many are busy and idle.",
    ["state"],
    registry=REGISTRY,
)
JAIL_LAYERS = Gauge(
    "scriptpool_jail_layer_applied",
    "Sandbox jail layers on this worker's host (from its start-up probe): 1 applied, 0 unavailable.",
    ["layer"],
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "scriptpool_redis_errors",
    "Redis failures this worker met while claiming or finishing a job (each failed attempt to "
    "record a job's end through an outage counts).",
    registry=REGISTRY,
)


# The series a job touches, looked up once: `labels()` costs microseconds a call. Bounded like the
# series themselves (3 languages x 11 outcomes).
_BUSY, _IDLE = WORKER_STATE.labels(BUSY), WORKER_STATE.labels(IDLE)
FRESH_CHILDREN, REUSED_CHILDREN = CHILDREN.labels(FRESH), CHILDREN.labels(REUSED)


@functools.cache
def _job_series(language: str) -> tuple[Histogram, Histogram, Histogram]:
    return QUEUE_WAIT_SECONDS.labels(language), SETUP_SECONDS.labels(language), RUN_SECONDS.labels(language)


@functools.cache
def _finished(language: str, outcome: Outcome) -> Counter:
    return JOBS_FINISHED.labels(language, outcome.value)


def layer_name(applied: str) -> str:
    """`landlock(abi=7)` -> `landlock`: the label is the layer, its detail is not."""
    return applied.split("(", 1)[0]


def record_jail(report: JailReport) -> None:
    for layer in report.applied:
        JAIL_LAYERS.labels(layer_name(layer)).set(1)
    for layer in report.unavailable:
        JAIL_LAYERS.labels(layer_name(layer)).set(0)


def set_busy(busy: bool) -> None:
    _BUSY.set(1 if busy else 0)
    _IDLE.set(0 if busy else 1)


def seconds_since(enqueued_at: datetime | None, now: float | None = None) -> float | None:
    """Seconds from RQ's `enqueued_at` (UTC, naive or aware) to `now`; None without one."""
    if enqueued_at is None:
        return None
    moment = enqueued_at if enqueued_at.tzinfo is not None else enqueued_at.replace(tzinfo=UTC)
    return max(0.0, (time.time() if now is None else now) - moment.timestamp())


class JobTimes:
    """One job's moments, observed into the histograms once the job ends."""

    def __init__(self, language: str, queue_wait: float | None) -> None:
        self.language = language
        self.queue_wait = queue_wait
        self.started = time.perf_counter()
        self.handed_over: float | None = None

    def handover(self) -> None:
        if self.handed_over is None:
            self.handed_over = time.perf_counter()

    def finished(self, outcome: Outcome) -> None:
        ended = time.perf_counter()
        _finished(self.language, outcome).inc()
        queue_wait, setup, run = _job_series(self.language)
        if self.queue_wait is not None:
            queue_wait.observe(self.queue_wait)
        if self.handed_over is not None:
            setup.observe(self.handed_over - self.started)
            run.observe(ended - self.handed_over)


__all__ = [
    "CHILDREN",
    "FRESH_CHILDREN",
    "REUSED_CHILDREN",
    "JAIL_LAYERS",
    "JOBS_FINISHED",
    "QUEUE_WAIT_SECONDS",
    "REDIS_ERRORS",
    "REGISTRY",
    "RUN_SECONDS",
    "SETUP_SECONDS",
    "WORKER_STATE",
    "JobTimes",
    "record_jail",
    "seconds_since",
    "set_busy",
]
