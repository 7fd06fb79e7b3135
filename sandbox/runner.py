"""The one interface every engine implements, and how to pick the engine for a language."""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from scriptpool.errors import Unimplemented
from scriptpool.languages import Language
from scriptpool.sandbox.host import GlobalHost, OutputSink
from scriptpool.sandbox.limits import DEFAULT_LIMITS, JobLimits
from scriptpool.values import PlainValue


@dataclass(frozen=True, kw_only=True, slots=True)
class ScriptJob:
    """Everything an engine needs to run one script."""

    language: Language
    source: str
    limits: JobLimits = DEFAULT_LIMITS
    job_id: str = ""
    session_id: str = ""
    inputs: dict[str, PlainValue] = field(default_factory=dict)
    random_seed: int = 0
    """Seed for the script's random generator; 0 = fresh entropy (see `seed_for`)."""
    clock_start: float = 0.0
    """Epoch seconds the script's wall clock starts at; 0 = the real clock (see `clock_offset`)."""
    clock_replay: tuple[float, ...] = ()
    """A replay: the clock values the recorded job's script read, given back in order first."""
    clock_reads: list[float] = field(default_factory=list)
    """Filled by the engine: the clock values this job's script read (`script_clock.py`)."""


def clock_offset(job: ScriptJob) -> float:
    """Seconds to add to the real clock for this job's scripts: 0 unless a replay fixed its start."""
    return job.clock_start - time.time() if job.clock_start else 0.0


def seed_for(job: ScriptJob) -> int:
    """The job's random seed, or fresh entropy when it has none: a forked child must never reuse
    its parent's generator state."""
    return job.random_seed or int.from_bytes(os.urandom(6), "big")


class Runner(Protocol):
    """Runs one script in a fresh engine instance and returns its result as a plain value.

    Raises a `scriptpool.sandbox.errors.SandboxError` subclass for every other ending. The instance is never
    reused: each `run` builds its engine from nothing and drops it afterwards.
    """

    def run(self, job: ScriptJob, host: GlobalHost, output: OutputSink) -> PlainValue: ...


# language -> (module, class). Each engine module may also define `prewarm()`, called once in the
# worker before it forks sandbox children, to do expensive one-time work (imports, compiling).
ENGINES: dict[Language, tuple[str, str]] = {
    Language.LUA: ("scriptpool.sandbox.engines.lua", "LuaRunner"),
    Language.JAVASCRIPT: ("scriptpool.sandbox.engines.javascript", "JavaScriptRunner"),
    Language.PYTHON: ("scriptpool.sandbox.engines.python", "PythonRunner"),
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


class _DiscardHost:
    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        return None


WARM_UP_SOURCES = {Language.LUA: "return 1", Language.PYTHON: "1", Language.JAVASCRIPT: "1"}
# Lua and Python warm up in well under a millisecond; JavaScript costs ~3.5 ms of CPU, so the worker
# asks for it only when its jobs are JavaScript (see workers/supervision/supervisor.py, SparePool).
DEFAULT_WARM_UP = (Language.LUA, Language.PYTHON)


def prepare_instance(language: Language, memory_bytes: int) -> None:
    """Build the next job's fresh instance now, for an engine that can (Lua, JavaScript); else nothing."""
    prepare = getattr(_engine_module(language), "prepare_spare_instance", None)
    if callable(prepare):
        prepare(memory_bytes)


def warm_up_spare(languages: tuple[Language, ...] = DEFAULT_WARM_UP) -> None:
    """Run a throwaway trivial script in each engine, in a spare child before it gets its job.

    A forked child pays copy-on-write faults the first time it touches the engine's memory; doing
    that here, while the spare waits, takes them off the job's critical path. The job still gets a
    fresh engine instance of its own: these instances are discarded and never saw a job. An engine
    with `prepare_spare_instance(memory_bytes)` (Lua, JavaScript: see engines/spare_instance.py)
    builds the job's own fresh instance here instead, configured for the job only when it arrives.
    """
    for language in languages:
        try:
            module = _engine_module(language)
        except Unimplemented:
            continue
        prepare = getattr(module, "prepare_spare_instance", None)
        if callable(prepare):  # the engine builds the job's own instance ahead instead (Lua, JavaScript)
            prepare(DEFAULT_LIMITS.memory_bytes)
            continue
        runner = runner_for(language)
        runner.run(ScriptJob(language=language, source=WARM_UP_SOURCES[language]), _DiscardHost(), OutputSink(1024))
