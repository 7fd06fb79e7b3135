"""Per-job limits: the values a job runs under, their defaults and the server maximums.

A job may ask for any limit up to the server maximum; asking for more is refused (not clamped),
so a caller never silently gets less than it asked for. 0 in a request means "the default".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import jobs_pb2

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class JobLimits:
    cpu_time_ms: int = 5_000
    """CPU seconds the script's process may use (engine interrupt first, RLIMIT_CPU and a kill behind it)."""
    wall_time_ms: int = 30_000
    """Time from the job reaching the sandbox child to its end, enforced by the parent killing the child."""
    memory_bytes: int = 64 * MIB
    """Heap the script's engine may allocate; the child's address space is capped a fixed margin above it."""
    output_bytes: int = 1 * MIB
    """Bytes of print output kept; output past it ends the job as output_exceeded, keeping what came first."""
    max_global_calls: int = 10_000
    """Calls to Session/Artifact/State/Hook/Event a job may make."""
    artifact_bytes: int = 100 * MIB
    """Artifact content bytes a job may write in total."""

    @classmethod
    def from_message(cls, message: jobs_pb2.JobLimits) -> JobLimits:
        """The limits a job's spec carries (every field already resolved by the coordinator)."""
        return cls(**{name: getattr(message, name) for name in LIMIT_FIELDS})


DEFAULT_LIMITS = JobLimits()

MAX_LIMITS = JobLimits(
    cpu_time_ms=300_000,
    wall_time_ms=900_000,
    memory_bytes=2048 * MIB,
    output_bytes=64 * MIB,
    max_global_calls=1_000_000,
    artifact_bytes=10 * 1024 * MIB,
)

LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(JobLimits))


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitPolicy:
    defaults: JobLimits = DEFAULT_LIMITS
    """Limits a job gets for every field it leaves at 0."""
    maximums: JobLimits = MAX_LIMITS
    """The most any job may ask for."""

    def resolve(self, requested: dict[str, int]) -> JobLimits:
        """Fill defaults into a request and refuse any field above its maximum, naming the field."""
        values: dict[str, int] = {}
        for name in LIMIT_FIELDS:
            asked = int(requested.get(name, 0) or 0)
            maximum = getattr(self.maximums, name)
            if asked < 0:
                raise InvalidArgument(f"limits.{name} must not be negative (got {asked})")
            if asked > maximum:
                raise InvalidArgument(f"limits.{name} = {asked} is above the server maximum {maximum}")
            values[name] = asked or min(getattr(self.defaults, name), maximum)
        return JobLimits(**values)


@dataclass(frozen=True, kw_only=True, slots=True)
class ScratchBounds:
    """What one job may put in its scratch directory (its files' root) through `Artifact.saveToFile`
    and the script's own file operations (sandbox/scratch_files.py, enforced in the jailed child).
    Bytes are bounded by the job's `artifact_bytes`, in total over the job's files (each file also by
    RLIMIT_FSIZE, the OS backstop); the tree's shape by these, so the directory can always be emptied
    quickly between jobs."""

    max_depth: int = 16
    """Components a scratch path may have (its directories and the file): deeper is INVALID_ARGUMENT."""
    max_entries: int = 1024
    """Files and directories one job may create: one more is RESOURCE_EXHAUSTED."""
    max_open_files: int = 16
    """Files a script may hold open at once (`io.open`, `open()`): one more is RESOURCE_EXHAUSTED
    (the child's RLIMIT_NOFILE, 32, is the OS backstop)."""


SCRATCH_BOUNDS = ScratchBounds()
