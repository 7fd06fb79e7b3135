"""The shape of one attack and how the suites run it through the real stack."""

from __future__ import annotations

from dataclasses import dataclass, field

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2, sessions_pb2
from tests.integration.helpers import assert_worker_healthy, outcome

MB = 1024 * 1024
CPU = {"cpu_time_ms": 400, "wall_time_ms": 20_000}
SMALL_MEMORY = {"memory_bytes": 32 * MB}


@dataclass(frozen=True)
class Attack:
    source: str
    expected: Outcome
    message: str = ""
    limits: dict[str, int] = field(default_factory=dict)


def run_attack(client: ScriptpoolClient, language: Language, name: str, attack: Attack) -> None:
    job = client.run(language, attack.source, limits=attack.limits, timeout=60)
    assert outcome(job) is attack.expected, f"{name}: {outcome(job)}: {job.result.message}"
    if attack.message:
        assert attack.message in job.result.message, job.result.message
    assert "/work/" not in job.result.message and "Traceback (most recent" not in job.result.message
    assert "site-packages" not in job.result.message + job.result.error.traceback
    assert_limits_held(client, job, attack.limits)
    assert_worker_healthy(client)


def assert_limits_held(client: ScriptpoolClient, job: jobs_pb2.Job, limits: dict[str, int]) -> None:
    """Side effects, not only the outcome: no more output was kept, and no more global calls were
    made (counted by the worker) or recorded on the session (at the coordinator), than the limits allow."""
    usage = job.result.usage
    if "output_bytes" in limits:
        assert usage.output_bytes <= limits["output_bytes"]
        assert len(job.result.output.encode()) <= limits["output_bytes"]
    if "max_global_calls" in limits:
        allowed = limits["max_global_calls"]
        if outcome(job) is Outcome.CALL_LIMIT_EXCEEDED:
            assert usage.global_calls == allowed  # stopped exactly at the limit
        request = sessions_pb2.GetTimelineRequest(session_id=job.session_id, types=["global_call"], limit=allowed + 10)
        recorded = client.sessions.get_timeline(request).entries
        assert len(recorded) <= allowed
