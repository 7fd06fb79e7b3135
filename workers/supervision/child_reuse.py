"""When a sandbox child may run another job, and the CPU checks that keep each job to its budget.

A child that ran a Lua or JavaScript job to a normal end (its result delivered, nothing killed or
exceeded) may be given later jobs of the **same principal with identical limits and language**, up
to `WorkerSettings.jobs_per_child` jobs in all. Each job still gets a fresh engine instance, built
inside the jail after the previous job ended (`sandbox/child.py`); the process, its jail and its
scratch directory (emptied between jobs) are what is reused. Python jobs never reuse a child: a
RestrictedPython script shares the host interpreter's objects, so only a new process is fresh.
Why this is the boundary, and what it costs in isolation: docs/adr/0003-child-reuse-within-a-principal.md.

CPU: the child's kernel CPU limit is cumulative, so a reusable child is jailed with a hard limit
covering all its jobs and the worker moves the soft limit on before each later job (`prlimit` from
outside; the child's seccomp filter forbids raising it). The supervisor also measures each job's
CPU from `/proc` (`CpuWatch`) and kills a job past its budget, whatever the guest did to its signals.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import cpu_limit_seconds
from scriptpool.sandbox.limits import JobLimits
from scriptpool.v1 import jobs_pb2, sandbox_pb2
from scriptpool.workers.supervision.children import SandboxChild

REUSABLE_LANGUAGES = frozenset({Language.LUA, Language.JAVASCRIPT})
REUSABLE_OUTCOMES = frozenset({Outcome.OK, Outcome.SCRIPT_ERROR})
"""Endings after which the engine instance was dropped in an orderly way. Any limit, kill, crash
or sandbox violation retires the child."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ReuseKey:
    """What a later job must share with the child's first job to run in the same process."""

    principal: str
    language: int
    limits: bytes
    """The job's `JobLimits` message, serialized."""
    memory_bytes: int
    """Its memory limit (also in `limits`): how much a kept child may grow before it is retired."""

    @classmethod
    def for_job(cls, principal: str, spec: sandbox_pb2.ChildJob, jobs_per_child: int) -> ReuseKey | None:
        """The key for a job that may share its child, or None when its child must be single-use."""
        if jobs_per_child <= 1 or not principal or Language.from_proto(spec.language) not in REUSABLE_LANGUAGES:
            return None
        limits = spec.limits
        return cls(principal, spec.language, limits.SerializeToString(deterministic=True), limits.memory_bytes)


@dataclass(slots=True)
class KeptChild:
    """A child that finished a job normally and waits for the next one with the same key."""

    child: SandboxChild
    key: ReuseKey
    jobs_left: int


MIN_GROWTH_BYTES = 32 * 1024 * 1024
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def grew_too_much(child: SandboxChild, memory_bytes: int) -> bool:
    """Whether a child's resident memory has grown, since its first job ended, by more than half its
    jobs' memory limit (at least 32 MiB). Each job's engine instance is freed after it, so such growth
    is a leak or fragmentation that would eat into later jobs' address-space limit: retire the child."""
    try:
        with open(f"/proc/{child.pid}/statm", "rb") as statm:
            resident = int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return True
    if not child.resident_after_first_job:
        child.resident_after_first_job = resident
        return False
    return resident - child.resident_after_first_job > max(MIN_GROWTH_BYTES, memory_bytes // 2)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process, from /proc (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def move_cpu_limit(child: SandboxChild, limits: jobs_pb2.JobLimits) -> bool:
    """Set a reused child's soft CPU limit to what it has used plus this job's budget. False when the
    child is gone or its hard limit has no room left for the job (it must not be reused then). The
    reading is left on the child for the job's `CpuWatch`."""
    used = process_cpu_seconds(child.pid)
    if used is None:
        return False
    try:
        _, hard = resource.prlimit(child.pid, resource.RLIMIT_CPU)
        soft = math.ceil(used) + cpu_limit_seconds(JobLimits.from_message(limits))
        if hard != resource.RLIM_INFINITY and soft >= hard:
            return False
        resource.prlimit(child.pid, resource.RLIMIT_CPU, (soft, hard))
    except (OSError, ValueError):
        return False
    child.cpu_seconds_at_handover = used
    return True


class CpuWatch:
    """One job's CPU, measured from outside the child: `exceeded()` once the job has used more than
    its budget plus the engine's grace second (the kernel's soft limit, moved per job, is the other
    guard; this one holds even if the guest caught SIGXCPU)."""

    def __init__(self, child: SandboxChild, limits: jobs_pb2.JobLimits) -> None:
        self.pid = child.pid
        self.allowed = float(cpu_limit_seconds(JobLimits.from_message(limits)))
        start, child.cpu_seconds_at_handover = child.cpu_seconds_at_handover, None
        self.start = start if start is not None else process_cpu_seconds(child.pid)

    def used_seconds(self) -> float | None:
        now = process_cpu_seconds(self.pid)
        if now is None or self.start is None:
            return None
        return now - self.start

    def exceeded(self) -> bool:
        used = self.used_seconds()
        return used is not None and used > self.allowed


__all__ = [
    "REUSABLE_LANGUAGES",
    "REUSABLE_OUTCOMES",
    "CpuWatch",
    "KeptChild",
    "ReuseKey",
    "grew_too_much",
    "move_cpu_limit",
]
