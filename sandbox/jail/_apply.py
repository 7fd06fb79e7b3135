"""Apply the jail layers in a fixed order: environment, file descriptors, rlimits, no-new-privs."""

from __future__ import annotations

import ctypes
import math
import os
import resource
from dataclasses import dataclass, field

from sandbox.limits import JobLimits

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_DUMPABLE = 4
# Room above the engine's heap limit for the interpreter, the engine's own structures and
# marshalling: the address-space cap is "what the process already maps + heap limit + this".
ADDRESS_SPACE_MARGIN = 256 * 1024 * 1024
MAX_OPEN_FILES = 32


@dataclass(slots=True)
class JailReport:
    """What the jail applied, and what the host could not provide (with the reason)."""

    applied: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = ["applied: " + (", ".join(self.applied) or "nothing")]
        if self.unavailable:
            parts.append("unavailable: " + "; ".join(f"{k} ({v})" for k, v in self.unavailable.items()))
        return " | ".join(parts)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int = 0) -> int:
    result: int = _libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return result


def _mapped_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _set(limit: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(limit, (soft, soft if hard is None else hard))


def apply_rlimits(limits: JobLimits, report: JailReport) -> None:
    cpu_seconds = math.ceil(limits.cpu_time_ms / 1000) + 1
    # SIGXCPU at the soft limit, SIGKILL at the hard one: the kernel stops a spin the engine missed.
    _set(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
    _set(resource.RLIMIT_AS, _mapped_bytes() + limits.memory_bytes + ADDRESS_SPACE_MARGIN)
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_FSIZE, limits.artifact_bytes)
    _set(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    _set(resource.RLIMIT_NPROC, 0)
    report.applied.append("rlimits(cpu,as,core,fsize,nofile,nproc)")


def close_inherited_fds(keep: int) -> None:
    """Close every descriptor but stdin/stdout/stderr and the worker socket."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def apply_jail(limits: JobLimits, keep_fd: int) -> JailReport:
    """Jail the current (child) process. Call once, after fork, before running any script."""
    report = JailReport()
    os.environ.clear()
    report.applied.append("empty-environment")
    close_inherited_fds(keep_fd)
    report.applied.append("inherited-fds-closed")
    apply_rlimits(limits, report)
    _prctl(PR_SET_DUMPABLE, 0)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1) == 0:
        report.applied.append("no-new-privs")
    else:
        report.unavailable["no-new-privs"] = os.strerror(ctypes.get_errno())
    report.unavailable.setdefault("seccomp", "not implemented in this version (see docs/THREAT_MODEL.md)")
    report.unavailable.setdefault("landlock", "not implemented in this version (see docs/THREAT_MODEL.md)")
    report.unavailable.setdefault("network-namespace", "not implemented in this version (see docs/THREAT_MODEL.md)")
    return report


def probe_host() -> JailReport:
    """Report which layers this host could apply, without jailing the caller."""
    report = JailReport()
    report.applied.extend(["empty-environment", "inherited-fds-closed", "rlimits(cpu,as,core,fsize,nofile,nproc)"])
    current = _prctl(PR_GET_NO_NEW_PRIVS)
    if current in (0, 1):
        report.applied.append("no-new-privs")
    else:
        report.unavailable["no-new-privs"] = "prctl(PR_GET_NO_NEW_PRIVS) failed"
    report.unavailable["seccomp"] = "not implemented in this version (see docs/THREAT_MODEL.md)"
    report.unavailable["landlock"] = "not implemented in this version (see docs/THREAT_MODEL.md)"
    report.unavailable["network-namespace"] = "not implemented in this version (see docs/THREAT_MODEL.md)"
    return report
