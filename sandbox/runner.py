"""The one interface every engine implements, and how to pick the engine for a language."""

from __future__ import annotations

import importlib
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


# language -> (module, class). Each engine module may also define `prewarm()`, called once in the
# worker before it forks sandbox children, to do expensive one-time work (imports, compiling).
ENGINES: dict[Language, tuple[str, str]] = {
    Language.LUA: ("sandbox.engines.lua", "LuaRunner"),
    Language.JAVASCRIPT: ("sandbox.engines.javascript", "JavaScriptRunner"),
    Language.PYTHON: ("sandbox.engines.python", "PythonRunner"),
}


def _engine_module(language: Language) -> object:
    module_name, _ = ENGINES[language]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise Unimplemented(f"language {language.value!r} is not available in this version yet") from exc


def runner_for(language: Language) -> Runner:
    module = _engine_module(language)
    runner: Runner = getattr(module, ENGINES[language][1])()
    return runner


def prewarm() -> list[str]:
    """Import every available engine and run its `prewarm()`; returns the languages ready."""
    ready = []
    for language in ENGINES:
        try:
            module = _engine_module(language)
        except Unimplemented:
            continue
        warm = getattr(module, "prewarm", None)
        if callable(warm):
            warm()
        ready.append(language.value)
    return ready
