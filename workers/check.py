"""`scriptpool worker --check`: a liveness and readiness probe for a worker host (exit code).

Three checks, one line each: Redis answers (and is new enough), the coordinator's gRPC health is
SERVING (it turns NOT_SERVING while its Redis is down), and at least one scriptpool worker of this
host is registered in RQ on the queue (RQ drops a worker's registration when its heartbeat stops,
so a registered worker is a live one). A Kubernetes liveness or readiness probe runs it in the
worker's container; `scriptpool worker --check --no-worker` leaves the third check out (for a
readiness probe before the worker has started).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rq import Queue, Worker

from scriptpool.core import redis_connect
from scriptpool.errors import ScriptpoolError
from scriptpool.tls import open_channel, tls_failure_reason
from scriptpool.workers.settings import WorkerSettings

CHECK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def check_redis(settings: WorkerSettings) -> Check:
    try:
        redis_connect.connect(settings.redis_url).close()
    except ScriptpoolError as exc:
        return Check("redis", False, exc.message)
    return Check("redis", True, f"answers at {redis_connect.redacted(settings.redis_url)}")


def check_coordinator(settings: WorkerSettings) -> Check:
    try:
        with open_channel(settings.coordinator, settings.tls) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_SECONDS
            )
    except ScriptpoolError as exc:  # a TLS file that cannot be used
        return Check("coordinator", False, f"{settings.coordinator}: {exc.message}")
    except grpc.RpcError as exc:
        reason = tls_failure_reason(exc.details() or "")
        detail = f"TLS: {reason}" if reason else f"{exc.code().name} {exc.details() or ''}".strip()
        return Check("coordinator", False, f"{settings.coordinator}: {detail}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return Check(
        "coordinator", answer.status == health_pb2.HealthCheckResponse.SERVING, f"{settings.coordinator} {status}"
    )


def check_registered_worker(settings: WorkerSettings, hostname: str | None = None) -> Check:
    host = hostname or socket.gethostname()
    try:
        redis = redis_connect.connect(settings.redis_url)
    except ScriptpoolError as exc:
        return Check("worker", False, exc.message)
    try:
        workers = Worker.all(queue=Queue(settings.queue, connection=redis))
        mine = sorted(w.name for w in workers if w.hostname == host)
    finally:
        redis.close()
    if not mine:
        return Check("worker", False, f"no worker of host {host!r} is registered on queue {settings.queue!r}")
    return Check("worker", True, f"{len(mine)} registered on queue {settings.queue!r}: {', '.join(mine[:5])}")


def run_checks(settings: WorkerSettings, *, worker: bool = True) -> list[Check]:
    checks = [check_redis(settings), check_coordinator(settings)]
    if worker:
        checks.append(check_registered_worker(settings))
    return checks


__all__ = ["Check", "check_coordinator", "check_redis", "check_registered_worker", "run_checks"]
