"""The loops that retry against Redis (the worker's lease keeper, the coordinator's session expiry
and lease sweeper) log an outage once, then count it (`scriptpool.core.repeated_log`), however
often they retry; and say when it is over. Against a real Redis client whose server is not there."""

from __future__ import annotations

import logging
import socket
from typing import cast

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scriptpool.coordinator.session_expiry import SessionExpiry
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.core.job_records import JobRecords
from scriptpool.workers.lease import LeaseKeeper
from tests.conftest import wait_for


def _nobody_listening() -> Redis:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


class CountingRecords(JobRecords):
    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, lease_seconds=0.03)  # renewals every 10 ms
        self.heartbeats = 0

    def heartbeat(self, job_id: str, now: float, attempt: int = 1) -> bool | None:
        self.heartbeats += 1
        return super().heartbeat(job_id, now, attempt)


def test_lease_renewals_failing_in_a_loop_log_one_line(caplog: pytest.LogCaptureFixture) -> None:
    redis = _nobody_listening()
    records = CountingRecords(redis)
    keeper = LeaseKeeper(records)
    try:
        with caplog.at_level(logging.WARNING, logger="scriptpool.workers.lease"), keeper.hold("job-1"):
            assert wait_for(lambda: records.heartbeats >= 20, timeout=30)
    finally:
        keeper.close()
        records.close()
        redis.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "scriptpool.workers.lease"]
    assert len(lines) == 1 and lines[0].startswith("lease renewal failed; retrying: job job-1: "), lines


class Sessions:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis


def test_session_expiry_failing_each_sweep_logs_once_then_says_it_is_over(
    caplog: pytest.LogCaptureFixture, redis_client: Redis
) -> None:
    down = _nobody_listening()
    sessions = Sessions(down)
    expiry = SessionExpiry(cast(SessionStore, sessions))
    with caplog.at_level(logging.WARNING, logger="scriptpool.coordinator.session_expiry"):
        for _ in range(10):
            assert expiry.sweep() == 0
        sessions.redis = redis_client  # Redis is back
        expiry.sweep()
    down.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "scriptpool.coordinator.session_expiry"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("session expiry sweep failed: ")
    assert lines[1].startswith("session expiry sweep failed: over after 10 occurrences")
