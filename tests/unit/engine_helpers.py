"""What the engine unit tests share: a host that records calls, and a job with inputs, a seed and a
replayed clock."""

from __future__ import annotations

from scriptpool.languages import Language
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob
from scriptpool.values import PlainValue


class AnsweringHost:
    """Records every global call and answers "answer"."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        return "answer"


def seeded_job(language: Language, source: str, limits: JobLimits | None = None) -> ScriptJob:
    """INPUT {x: [1, "two"]}, seed 12345, clock starting 2000-07-01 (a replay's settings)."""
    return ScriptJob(
        language=language, source=source, limits=limits or JobLimits(), inputs={"x": [1, "two"]},
        random_seed=12345, clock_start=962409600.0,
    )  # fmt: skip
