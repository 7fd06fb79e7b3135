"""Pure script execution: engines, limits, the OS jail, the child process. No Redis, no gRPC."""

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.errors import (
    CallLimitExceeded,
    CpuTimeExceeded,
    LimitExceeded,
    MemoryExceeded,
    OutputExceeded,
    SandboxError,
    SandboxViolation,
    ScriptError,
    WallTimeExceeded,
)
from scriptpool.sandbox.host import GlobalHost, OutputSink
from scriptpool.sandbox.limits import DEFAULT_LIMITS, MAX_LIMITS, JobLimits, LimitPolicy
from scriptpool.sandbox.runner import Runner, ScriptJob, runner_for

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_LIMITS",
    "CallLimitExceeded",
    "CpuTimeExceeded",
    "GlobalHost",
    "JobLimits",
    "Language",
    "LimitExceeded",
    "LimitPolicy",
    "MemoryExceeded",
    "Outcome",
    "OutputExceeded",
    "OutputSink",
    "Runner",
    "SandboxError",
    "SandboxViolation",
    "ScriptError",
    "ScriptJob",
    "WallTimeExceeded",
    "runner_for",
]
