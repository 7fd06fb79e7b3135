"""Pure script execution: engines, limits, the OS jail, the child process. No Redis, no gRPC."""

from sandbox.errors import (
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
from sandbox.host import GlobalHost, OutputSink
from sandbox.languages import Language
from sandbox.limits import DEFAULT_LIMITS, MAX_LIMITS, JobLimits, LimitPolicy
from sandbox.outcomes import Outcome
from sandbox.runner import Runner, ScriptJob, runner_for

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
