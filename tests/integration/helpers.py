"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from scriptpool.v1 import jobs_pb2
from scriptpool.values import PlainValue, from_value

from coordinator.client import ScriptpoolClient
from sandbox.languages import Language
from sandbox.outcomes import Outcome
from workers.job_records import text


def run_lua(client: ScriptpoolClient, source: str, timeout: float = 60, **kwargs: Any) -> jobs_pb2.Job:
    return client.run(Language.LUA, source, timeout=timeout, **kwargs)


def run_js(client: ScriptpoolClient, source: str, timeout: float = 60, **kwargs: Any) -> jobs_pb2.Job:
    return client.run(Language.JAVASCRIPT, source, timeout=timeout, **kwargs)


def outcome(job: jobs_pb2.Job) -> Outcome:
    return Outcome.from_proto(job.result.outcome)


def result_of(job: jobs_pb2.Job) -> PlainValue:
    assert outcome(job) is Outcome.OK, f"job failed: {outcome(job)}: {job.result.message}"
    return from_value(job.result.result)


def assert_worker_healthy(client: ScriptpoolClient) -> None:
    """A normal job still runs correctly after whatever the test did."""
    job = run_lua(client, "local t = {} for i = 1, 100 do t[i] = i * i end return t[12] + #t")
    assert result_of(job) == 244


SPIN_2S = "local t = os.clock() while os.clock() - t < 2 do end return 'done'"


def running_job_credential(client: ScriptpoolClient, redis: Redis) -> tuple[str, str]:
    """Start a job that spins for 2 s; once it runs, its id and its job credential (read from Redis)."""
    job = client.submit(Language.LUA, SPIN_2S, limits={"cpu_time_ms": 10000})
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        credential = redis.hget(f"sp:job:{job.id}", "credential")
        if credential and client.get_job(job.id).status == jobs_pb2.JOB_STATUS_RUNNING:
            return job.id, text(credential)
        time.sleep(0.02)
    raise AssertionError("job did not start")
