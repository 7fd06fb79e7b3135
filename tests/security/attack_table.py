"""The shape of one attack and how the suites run it through the real stack."""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.client import ScriptpoolClient
from sandbox.languages import Language
from sandbox.outcomes import Outcome
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
    assert_worker_healthy(client)
