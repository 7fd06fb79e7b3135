"""The coordinator's gRPC health means something: NOT_SERVING while Redis does not answer, SERVING
again once it does (issue 17). Redis is the test's own (AOF on), stopped and started again on the
same socket; the health Watch stream is the handshake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import SERVICE_NAMES, start_coordinator
from scriptpool.coordinator.settings import Settings

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _next_status(watch: Iterator[health_pb2.HealthCheckResponse], wanted: int) -> int:
    """Statuses from the Watch stream until `wanted` (the stream's deadline bounds the wait)."""
    for answer in watch:
        if answer.status == wanted:
            return int(answer.status)
    raise AssertionError(f"the health stream ended before {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}")


def test_health_is_not_serving_while_redis_is_down_and_serving_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_dir = tmp_path / "redis"
    redis = PrivateRedis(redis_dir, persistent=True, die_with_parent=True).start()
    running = start_coordinator(Settings(redis_url=redis.url, listen="127.0.0.1:0", queue="health-test"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", *SERVICE_NAMES):
                assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            assert _next_status(watch, SERVING) == SERVING
            with caplog.at_level(logging.WARNING, logger="scriptpool.coordinator.redis_health"):
                redis.stop()
                assert _next_status(watch, NOT_SERVING) == NOT_SERVING
                for name in SERVICE_NAMES:  # every service, not only the overall status
                    assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == NOT_SERVING
                redis = PrivateRedis(redis_dir, persistent=True, die_with_parent=True).start()
                assert _next_status(watch, SERVING) == SERVING
            watch.cancel()
            messages = [r.getMessage() for r in caplog.records if r.name == "scriptpool.coordinator.redis_health"]
            assert len(messages) == 2, messages  # one line when it goes, one when it is back: no repeats
            assert "unreachable" in messages[0] and "answers again" in messages[1]
    finally:
        running.stop(grace=1)
        redis.stop()
