"""The one interface every engine implements, and how to pick the engine for a language."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from scriptpool.errors import Unimplemented
from scriptpool.values import PlainValue

from sandbox.host import GlobalHost, OutputSink
from sandbox.languages import Language
from sandbox.limits import DEFAULT_LIMITS, JobLimits


@dataclass(frozen=True, kw_only=True, slots=True)
class ScriptJob:
    """Everything an engine needs to run one script."""

    language: Language
    source: str
    limits: JobLimits = DEFAULT_LIMITS
    job_id: str = ""
    session_id: str = ""
    inputs: dict[str, PlainValue] = field(default_factory=dict)


class Runner(Protocol):
    """Runs one script in a fresh engine instance and returns its result as a plain value.

    Raises a `sandbox.errors.SandboxError` subclass for every other ending. The instance is never
    reused: each `run` builds its engine from nothing and drops it afterwards.
    """

    def run(self, job: ScriptJob, host: GlobalHost, output: OutputSink) -> PlainValue: ...


def runner_for(language: Language) -> Runner:
    if language is Language.LUA:
        from sandbox.engines.lua import LuaRunner

        return LuaRunner()
    raise Unimplemented(f"language {language.value!r} is not available in this version yet; use lua")
