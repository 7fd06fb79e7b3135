"""The coordinator's gRPC health follows Redis, its system of record.

One thread PINGs Redis every `PROBE_SECONDS` on a connection of its own (with a short timeout, so a
hung server counts as down): while Redis does not answer, every service and the overall health are
`NOT_SERVING` (a load balancer or Kubernetes readiness probe stops sending work); when it answers
again they are `SERVING` again. Each change is logged once, with how long the outage lasted. Work: one
PING per probe, one thread per coordinator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from grpc_health.v1 import health, health_pb2
from redis import ConnectionPool, Redis
from redis.exceptions import RedisError

from scriptpool.coordinator.metrics import REDIS_ERRORS
from scriptpool.coordinator.status import REDIS_UNAVAILABLE_LOG

log = logging.getLogger(__name__)
PROBE_SECONDS = 1.0
"""How often Redis is probed (and so how soon health changes after an outage begins or ends)."""
PROBE_TIMEOUT_SECONDS = 1.0


def probe_client(redis: Redis, timeout: float = PROBE_TIMEOUT_SECONDS) -> Redis:
    """A client on the same server as `redis`, with one connection and a short timeout."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs))


class RedisHealth:
    def __init__(
        self,
        redis: Redis,
        servicer: health.HealthServicer,
        services: Iterable[str],
        probe_seconds: float = PROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe_client(redis)
        self._servicer = servicer
        self._services = ("", *services)
        self._probe_seconds = probe_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="redis-health", daemon=True)
        self.serving: bool | None = None
        self._down_since = 0.0

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._probe_seconds + PROBE_TIMEOUT_SECONDS + 1)
        self._probe.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._probe_seconds):
            self.check()

    def check(self) -> bool:
        """Probe Redis once and set the health accordingly; True if it answered."""
        try:
            self._probe.ping()
            reachable, cause = True, ""
        except (RedisError, OSError) as exc:
            reachable, cause = False, " ".join(str(exc).split()) or type(exc).__name__
            REDIS_ERRORS.inc()
            self._probe.connection_pool.disconnect()  # close the socket now, not when it is collected
        if reachable == self.serving:
            return reachable
        if not reachable:
            self._down_since = self._clock()
            log.warning("Redis is unreachable (%s): gRPC health NOT_SERVING until it answers", cause)
        elif self.serving is False:
            log.warning("Redis answers again after %.1fs: gRPC health SERVING", self._clock() - self._down_since)
            REDIS_UNAVAILABLE_LOG.over()
        self.serving = reachable
        status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._services:
            self._servicer.set(name, status)
        return reachable


__all__ = ["PROBE_SECONDS", "RedisHealth", "probe_client"]
