"""Small helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

from scriptpool.v1 import jobs_pb2
from scriptpool.values import PlainValue, from_value

from coordinator.client import ScriptpoolClient
from sandbox.languages import Language
from sandbox.outcomes import Outcome


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
