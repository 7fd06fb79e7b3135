"""Errors raised while running a script. Each one maps to exactly one job outcome."""

from __future__ import annotations

from scriptpool.errors import ScriptpoolError
from scriptpool.outcomes import Outcome


class SandboxError(ScriptpoolError):
    """A job ended in a way other than success. `outcome` says which."""

    outcome: Outcome = Outcome.INTERNAL_ERROR


class ScriptError(SandboxError):
    """The script itself failed: syntax error, runtime error, an error it raised, a bad result."""

    outcome = Outcome.SCRIPT_ERROR

    def __init__(self, language: str, message: str, line: int = 0, guest_traceback: str = "") -> None:
        super().__init__(message)
        self.language = language
        self.line = line
        self.guest_traceback = guest_traceback


class SandboxViolation(SandboxError):
    """The script tried something the jail forbids (a blocked syscall, a file outside its scratch)."""

    outcome = Outcome.SANDBOX_VIOLATION


class LimitExceeded(SandboxError):
    """A per-job limit was reached. Subclasses name which one."""


class CpuTimeExceeded(LimitExceeded):
    outcome = Outcome.CPU_TIME_EXCEEDED


class WallTimeExceeded(LimitExceeded):
    outcome = Outcome.WALL_TIME_EXCEEDED


class MemoryExceeded(LimitExceeded, MemoryError):
    outcome = Outcome.MEMORY_EXCEEDED


class OutputExceeded(LimitExceeded):
    outcome = Outcome.OUTPUT_EXCEEDED


class CallLimitExceeded(LimitExceeded):
    outcome = Outcome.CALL_LIMIT_EXCEEDED


LIMIT_ERRORS: dict[str, type[LimitExceeded]] = {
    "cpu": CpuTimeExceeded,
    "wall": WallTimeExceeded,
    "memory": MemoryExceeded,
    "output": OutputExceeded,
    "calls": CallLimitExceeded,
}
