"""Apply the jail layers in a fixed order, each reported as applied or unavailable with the reason.

Order matters: the network namespace (needs CAP_SYS_ADMIN and `unshare`) and the scratch directory
come first; then rlimits, no-new-privs, Landlock, the capability drop, and seccomp last, because it
forbids what the earlier steps use. A layer that fails is reported, never silently skipped; the job
still runs (the worker's startup log and `scriptpool doctor` say what this host provides).
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
from dataclasses import dataclass, field

from scriptpool.sandbox.jail import _landlock, _process, _scratch, _seccomp
from scriptpool.sandbox.jail._syscalls import current_arch
from scriptpool.sandbox.limits import JobLimits

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_DUMPABLE = 4
# Room above the engine's heap limit for the interpreter, the engine's own structures and
# marshalling: the address-space cap is "what the process already maps + heap limit + this".
ADDRESS_SPACE_MARGIN = 256 * 1024 * 1024
MAX_OPEN_FILES = 32

ENVIRONMENT = "empty-environment"
FDS = "inherited-fds-closed"
RLIMITS = "rlimits(cpu,as,core,fsize,nofile,nproc)"
NO_NEW_PRIVS = "no-new-privs"
NETNS = "network-namespace"
LANDLOCK = "landlock"
CAPABILITIES = "capabilities-dropped"
SECCOMP = "seccomp"
LAYERS = (ENVIRONMENT, FDS, NETNS, RLIMITS, NO_NEW_PRIVS, LANDLOCK, CAPABILITIES, SECCOMP)


@dataclass(slots=True)
class JailReport:
    """What the jail applied, and what the host could not provide (with the reason)."""

    applied: list[str] = field(default_factory=list)
    """Layer names, some with a detail in parentheses, e.g. `landlock(abi=7)`."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Layer name -> why it is not protecting this job."""
    scratch_dir: str | None = None
    """The job's private, initially empty directory (also the current directory); None if not created."""
    landlock_abi: int = 0
    """The Landlock ABI the ruleset was built for (0: no Landlock)."""
    locked_down: bool = False
    """The job-independent layers are applied (`lock_down_spare`)."""
    mapped_bytes: int = 0
    """Address space mapped when the spare was locked down (Landlock then hides /proc/self/statm)."""

    def summary(self) -> str:
        parts = ["applied: " + (", ".join(self.applied) or "nothing")]
        if self.unavailable:
            parts.append("unavailable: " + "; ".join(f"{k} ({v})" for k, v in self.unavailable.items()))
        return " | ".join(parts)

    def has(self, layer: str) -> bool:
        return any(name == layer or name.startswith(layer + "(") for name in self.applied)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int = 0) -> int:
    result: int = _LIBC.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return result


def _mapped_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _set(limit: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(limit, (soft, soft if hard is None else hard))


def cpu_limit_seconds(limits: JobLimits) -> int:
    """One job's CPU rlimit step: its budget rounded up, plus a second for the engine's own check."""
    return math.ceil(limits.cpu_time_ms / 1000) + 1


def apply_rlimits(limits: JobLimits, report: JailReport, jobs_in_process: int = 1) -> None:
    cpu_seconds = cpu_limit_seconds(limits)
    # SIGXCPU at the soft limit, SIGKILL at the hard one: the kernel stops a spin the engine missed.
    # A process that may serve several jobs gets a hard limit covering all of them; the worker moves
    # the soft limit on before each later job (`prlimit` from outside: the filter forbids it here)
    # and also checks each job's CPU itself (workers/supervision/child_reuse.py).
    _set(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds * max(jobs_in_process, 1) + 1)
    mapped = report.mapped_bytes or _mapped_bytes()
    _set(resource.RLIMIT_AS, mapped + limits.memory_bytes + ADDRESS_SPACE_MARGIN)
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_FSIZE, limits.artifact_bytes)
    _set(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    _set(resource.RLIMIT_NPROC, 0)
    report.applied.append(RLIMITS)


def close_inherited_fds(keep: int) -> None:
    """Close every descriptor but stdin/stdout/stderr and the worker socket."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def _attempt(report: JailReport, layer: str, step: object) -> bool:
    """Run one layer; an OSError makes it unavailable (with the reason), never a crash or a silent skip."""
    try:
        detail = step() if callable(step) else None
    except OSError as exc:
        report.unavailable[layer] = exc.strerror or str(exc)
        return False
    report.applied.append(f"{layer}({detail})" if isinstance(detail, str) else layer)
    return True


_prepared: JailReport | None = None
"""What `prepare_spare` did in this (spare child) process, merged into the job's report."""


_forked_by_cleaning_parent = False
"""Set in a zygote (and so inherited by its children): the parent has already emptied its own
environment, and it removes each child's scratch directory when it reaps the child."""


def _environment() -> None:
    if not _forked_by_cleaning_parent:  # else emptied in the zygote, before it forked this child
        _empty_environment()


def _empty_environment() -> None:
    os.environ.clear()
    try:
        _process.wipe_environment_block()
    except (OSError, ValueError, IndexError):
        pass  # os.environ is empty either way; the block is defence in depth


def become_cleaning_parent(scratch_base: str | None = None) -> None:
    """For a process that only forks sandbox children (the zygote), once, after it read what it needs
    from its environment: empty that environment here instead of in every child, and take over
    removing the children's scratch directories (`child_exited`) instead of each spare sweeping.
    The sweep never raises (`_scratch.sweep`)."""
    global _forked_by_cleaning_parent
    _empty_environment()
    _forked_by_cleaning_parent = True
    _scratch.sweep(scratch_base or _scratch.base())


def child_exited(pid: int, scratch_base: str | None = None) -> bool:
    """A cleaning parent reaped `pid`: remove its scratch directory (emptied by the child already,
    unless it was killed). Never raises; False (logged) if something was left."""
    return _scratch.remove(_scratch.path_for(scratch_base or _scratch.base(), pid))


def scratch_dir_of(pid: int) -> str:
    """Where the child `pid` of this process (or of its zygote) has its scratch directory."""
    return _scratch.path_for(_scratch.base(), pid)


def scratch_is_empty(pid: int) -> bool:
    """Whether the child `pid`'s scratch directory exists and holds nothing (checked from outside,
    e.g. by the worker before it gives a kept child its next job)."""
    return _scratch.is_empty(scratch_dir_of(pid))


def _scratch_dir(report: JailReport, scratch_base: str) -> None:
    try:
        report.scratch_dir = _scratch.create(scratch_base)
        os.chdir(report.scratch_dir)
    except OSError as exc:
        report.scratch_dir = None
        report.unavailable["scratch-directory"] = exc.strerror or str(exc)


def _job_independent(report: JailReport, scratch_base: str) -> None:
    _environment()
    report.applied.append(ENVIRONMENT)
    _attempt(report, NETNS, _process.unshare_network)
    _scratch_dir(report, scratch_base)


def prepare_forking_process() -> None:
    """What is the same for every child of the calling process, computed once before it forks them:
    the seccomp program template and the Landlock read paths (cached, inherited by each child; ~2.5 ms
    of CPU per child otherwise)."""
    _landlock.interpreter_read_paths()
    arch = current_arch()
    if arch is not None:
        _seccomp.prepare(arch)


def prepare_spare(scratch_base: str | None = None) -> JailReport:
    """The part of the jail that is the same for every job, done in the spare child before a job arrives.

    Empties the environment, moves the process into a fresh network namespace (about 0.7 ms, up to
    several ms under load), creates the scratch directory (its name is the pid, so it is this job's),
    removes the scratch directories of dead children, and precomputes the seccomp program and the
    Landlock paths. `apply_jail` then only applies what depends on the job or must come last.
    """
    global _prepared
    report = JailReport()
    base = scratch_base or _scratch.base()
    if not _forked_by_cleaning_parent:
        _scratch.sweep(base)
    _job_independent(report, base)
    arch = current_arch()
    if arch is not None:
        _seccomp.prepare(arch)
    _landlock.interpreter_read_paths()
    _prepared = report
    return report


def _apply_landlock(report: JailReport) -> str:
    abi = _landlock.abi_version()
    if report.scratch_dir is None:
        raise OSError(0, "no scratch directory to grant")
    _landlock.restrict_self(abi, report.scratch_dir)
    report.landlock_abi = min(abi, _landlock.NEWEST_KNOWN_ABI)
    return f"abi={report.landlock_abi}"


def lock_down_spare(keep_fd: int) -> JailReport:
    """The job-independent layers, applied in the spare child once its engines are warm and before
    its job arrives: descriptors closed, non-dumpable, no-new-privs, Landlock, capabilities dropped.
    `apply_jail` then adds only what depends on the job (rlimits) and what must come last (seccomp),
    which takes them off the job's critical path. Nothing but our own code has run at this point,
    so the order is as strong as applying everything at once."""
    global _prepared
    if _prepared is None:
        _prepared = JailReport()
    _lock_down(_prepared, keep_fd)
    return _prepared


def _lock_down(report: JailReport, keep_fd: int) -> None:
    close_inherited_fds(keep_fd)
    report.applied.append(FDS)
    _prctl(PR_SET_DUMPABLE, 0)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1) == 0:
        report.applied.append(NO_NEW_PRIVS)
    else:
        report.unavailable[NO_NEW_PRIVS] = os.strerror(ctypes.get_errno())
    report.mapped_bytes = _mapped_bytes()  # the job's address-space limit builds on this
    _attempt(report, LANDLOCK, lambda: _apply_landlock(report))
    arch = current_arch()
    if arch is None:
        report.unavailable[CAPABILITIES] = "no system-call table for this CPU"
    else:
        _attempt(report, CAPABILITIES, lambda: _process.drop_capabilities(arch))
    report.locked_down = True


def apply_jail(
    limits: JobLimits,
    keep_fd: int,
    scratch_base: str | None = None,
    jobs_in_process: int = 1,
) -> JailReport:
    """Jail the current (child) process. Call once, after fork, before running any script.

    `keep_fd` is the worker's socketpair: the only descriptor left open besides stdio, and the only
    socket the script's process may use. The scratch directory is created under `scratch_base`
    (by `prepare_spare`, when it ran in this process, with its own `scratch_base`). The layers
    `lock_down_spare` applies are applied here unless the spare already did. `jobs_in_process` > 1
    when the worker may give this process more jobs with the same limits (CPU hard limit above).
    """
    global _prepared
    report, _prepared = _prepared, None
    if report is None:  # no spare preparation (e.g. called directly): do it now
        report = JailReport()
        _job_independent(report, scratch_base or _scratch.base())
    if not report.locked_down:
        _lock_down(report, keep_fd)
    apply_rlimits(limits, report, jobs_in_process)
    arch = current_arch()
    if arch is None:
        report.unavailable[SECCOMP] = "no system-call table for this CPU"
        return report
    _attempt(report, SECCOMP, lambda: _seccomp.install(arch, keep_fd, os.getpid()) and None)
    return report


def release_scratch(report: JailReport) -> bool:
    """Empty the job's scratch directory when the job ends (its parent or the next spare child removes
    the directory). True when it is verified empty (or there is none); never raises."""
    if report.scratch_dir is None:
        return True
    return _scratch.empty(report.scratch_dir)
