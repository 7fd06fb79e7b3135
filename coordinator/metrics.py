"""The coordinator's Prometheus metrics: jobs submitted, every call it answers, the queue's depth.

Every label value comes from a fixed set (languages, outcomes, gRPC status codes, the methods the
server registered, the configured queue): never a principal, a job id or anything a caller chooses,
so the number of series is bounded (docs/THREAT_MODEL.md). A method the server does not have is
counted as `unknown`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from scriptpool.coordinator.interceptors import WrappingInterceptor
from scriptpool.core.metrics import scrape_registry
from scriptpool.core.rq_internals import WORKERS_BY_QUEUE_KEY

REGISTRY = CollectorRegistry()
"""Every metric this module defines (and the process's own: CPU, memory, open files)."""
ProcessCollector(registry=REGISTRY)

UNKNOWN_METHOD = "unknown"
SCRAPE_TIMEOUT_SECONDS = 2.0
"""Longest a scrape waits for Redis (connect, then the queue's reply)."""
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

JOBS_SUBMITTED = Counter(
    "scriptpool_jobs_submitted",
    "Jobs queued by SubmitJob/SubmitJobs (a request repeated with its idempotency key counts once).",
    ["language"],
    registry=REGISTRY,
)
JOBS_ENDED = Counter(
    "scriptpool_jobs_ended_by_coordinator",
    "Jobs the coordinator ended itself, by outcome: `worker_lost` (the lease sweeper, once no retry "
    "is left) and `cancelled` (a cancel of a queued job, or its RQ job removed in RQ). Every other "
    "end is a worker's (scriptpool_jobs_finished_total).",
    ["outcome"],
    registry=REGISTRY,
)
QUOTA_REFUSALS = Counter(
    "scriptpool_quota_refusals",
    "Calls refused RESOURCE_EXHAUSTED by a per-principal quota (docs/adr/0020-quotas.md), by quota: "
    "queued_jobs, submissions_per_second, sessions, artifact_bytes, state_bytes, subscriptions.",
    ["quota"],
    registry=REGISTRY,
)
CALLS = Counter(
    "scriptpool_calls",
    "Calls the coordinator answered, by full gRPC method name and status code; a job's global calls "
    "sent on its JobCallService stream count as the method they carry.",
    ["method", "code"],
    registry=REGISTRY,
)
CALL_SECONDS = Histogram(
    "scriptpool_call_duration_seconds",
    "Time from a call's parsed request reaching its handler to its answer (for a streaming RPC: to "
    "the end of the stream).",
    ["method"],
    buckets=CALL_BUCKETS,
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "scriptpool_redis_errors",
    "Redis failures this process met: a call answered UNAVAILABLE because Redis was unreachable, "
    "loading or busy, a failed health probe (one a second while Redis is down), the job-finished "
    "listener losing its connection, a scrape that could not read the queue.",
    registry=REGISTRY,
)


_CALL_SERIES: dict[tuple[str, grpc.StatusCode], tuple[Counter, Histogram]] = {}
"""(method, code) -> its counter and histogram series: `labels()` costs several microseconds a call,
this lookup a fraction of one. As bounded as the series (registered methods x status codes)."""


def record_call(method: str, code: grpc.StatusCode, seconds: float) -> None:
    series = _CALL_SERIES.get((method, code))
    if series is None:
        series = _CALL_SERIES[(method, code)] = (CALLS.labels(method, code.name), CALL_SECONDS.labels(method))
    series[0].inc()
    series[1].observe(seconds)


def _code(context: grpc.ServicerContext, raised: bool) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    if code is not None:
        return code
    if not raised:
        return grpc.StatusCode.OK
    return grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED


def _timed_unary(method: str, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def timed(request: Any, context: grpc.ServicerContext) -> Any:
        started, raised = time.perf_counter(), True
        try:
            response = behavior(request, context)
            raised = False
            return response
        finally:
            record_call(method, _code(context, raised), time.perf_counter() - started)

    return timed


def _timed_stream(method: str, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
    def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started, raised = time.perf_counter(), True
        try:
            yield from behavior(request, context)
            raised = False
        finally:
            record_call(method, _code(context, raised), time.perf_counter() - started)

    return timed


class CallMetrics(WrappingInterceptor):
    """Counts and times every call by method and status code: from its handler getting the parsed
    request to the answer (the request checks and the error mapping of `grpc_service` included)."""

    def missing(self, method: str) -> None:
        # gRPC answers UNIMPLEMENTED; the name is the caller's choice, so never a label value
        record_call(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED, 0.0)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
        timing = _timed_stream if kind.endswith("_stream") else _timed_unary
        timed: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
            **{kind: timing(method, getattr(handler, kind))}
        )
        return timed


class QueueCollector:
    """Read on each scrape, in one round trip: the jobs waiting in the RQ queue and the workers RQ
    has registered for it. When Redis does not answer the scrape leaves them out (and counts a
    Redis error) rather than report a stale value.

    Bounded: one scrape reads Redis at a time (a concurrent one leaves the gauges out), on a
    connection of its own made for the scrape with a `SCRAPE_TIMEOUT_SECONDS` timeout, so a
    hung Redis holds no scrape thread for longer and no connection is kept between scrapes."""

    def __init__(self, redis: Redis, queue_name: str, queue_key: str) -> None:
        pool = redis.connection_pool
        self.connection_class = pool.connection_class
        # the coordinator's connection settings (address, credentials), with a short timeout and no
        # retries (redis-py 8 retries three times by default: a hung Redis would hold a scrape 4x longer)
        kwargs = dict(pool.connection_kwargs)
        for name in ("socket_timeout", "socket_connect_timeout", "orig_socket_timeout", "orig_socket_connect_timeout"):
            if name in kwargs or not name.startswith("orig_"):
                kwargs[name] = SCRAPE_TIMEOUT_SECONDS
        self.connection_kwargs = {**kwargs, "retry": Retry(NoBackoff(), 0)}
        self.queue_name = queue_name
        self.queue_key = queue_key
        self._reading = threading.Lock()

    @staticmethod
    def families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("scriptpool_queue_depth", "Jobs waiting in the RQ queue (LLEN).", labels=["queue"]),
            GaugeMetricFamily(
                "scriptpool_rq_workers", "Workers RQ has registered for the queue (SCARD).", labels=["queue"]
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return self.families()

    def collect(self) -> Iterable[Metric]:
        if not self._reading.acquire(blocking=False):
            return []
        pool = ConnectionPool(connection_class=self.connection_class, max_connections=1, **self.connection_kwargs)
        try:
            pipe = Redis(connection_pool=pool).pipeline(transaction=False)
            pipe.llen(self.queue_key)
            pipe.scard(WORKERS_BY_QUEUE_KEY % self.queue_name)
            depth, workers = pipe.execute()
        except RedisError:
            REDIS_ERRORS.inc()
            return []
        finally:
            pool.disconnect()
            self._reading.release()
        families = self.families()
        for family, value in zip(families, (depth, workers), strict=True):
            family.add_metric([self.queue_name], float(value))
        return families


def coordinator_registry(redis: Redis, queue_name: str, queue_key: str) -> CollectorRegistry:
    """What a coordinator's /metrics serves: this module's metrics and its queue's."""
    return scrape_registry(REGISTRY, QueueCollector(redis, queue_name, queue_key))


__all__ = [
    "CALLS",
    "CALL_SECONDS",
    "JOBS_ENDED",
    "JOBS_SUBMITTED",
    "REDIS_ERRORS",
    "REGISTRY",
    "CallMetrics",
    "QueueCollector",
    "coordinator_registry",
    "record_call",
]
