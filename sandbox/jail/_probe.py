"""Probe the host: jail a throwaway child exactly as a job's child is jailed, then check each layer.

The child reports, over a pipe, what `apply_jail` said and what it then observed: an empty
environment, a closed descriptor, the rlimits, no-new-privs, no capabilities, a different network
namespace from the parent's, a write refused outside the scratch directory and accepted inside it, a
read refused outside the allowed paths, the seccomp mode and a refused `socket()`. A layer counts as
applied only if the jail says so and its check passes.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket

from scriptpool.sandbox.jail import _process, _scratch
from scriptpool.sandbox.jail._apply import (
    CAPABILITIES,
    ENVIRONMENT,
    FDS,
    LANDLOCK,
    NETNS,
    NO_NEW_PRIVS,
    PR_GET_NO_NEW_PRIVS,
    RLIMITS,
    SECCOMP,
    JailReport,
    _prctl,
    apply_jail,
    prepare_forking_process,
    prepare_spare,
)
from scriptpool.sandbox.jail._seccomp import PR_GET_SECCOMP
from scriptpool.sandbox.jail._syscalls import current_arch
from scriptpool.sandbox.limits import DEFAULT_LIMITS

_OUTSIDE_READ = "/etc/hostname"
_OUTSIDE_WRITE = "probe-outside"


def _refused(action: object) -> str | None:
    """None if `action()` raised PermissionError (what the jail should cause), else what happened."""
    try:
        action() if callable(action) else None
    except PermissionError:
        return None
    except OSError as exc:
        return f"failed with {errno.errorcode.get(exc.errno or 0, exc.errno)} instead of EPERM/EACCES"
    return "it was allowed"


def _write(path: str) -> None:
    with open(path, "w") as handle:
        handle.write("probe")


def _read(path: str) -> None:
    with open(path, "rb") as handle:
        handle.read(1)


def _checks(report: JailReport, new_netns: bool, canary_fd: int) -> dict[str, str | None]:
    """Layer -> None if its effect is observed, else what was observed instead."""
    failed: dict[str, str | None] = {}
    failed[ENVIRONMENT] = None if not os.environ else f"{len(os.environ)} variables remain"
    try:
        os.fstat(canary_fd)
        failed[FDS] = "an inherited descriptor is still open"
    except OSError:
        failed[FDS] = None
    nproc, core = resource.getrlimit(resource.RLIMIT_NPROC), resource.getrlimit(resource.RLIMIT_CORE)
    failed[RLIMITS] = None if nproc == (0, 0) and core == (0, 0) else f"RLIMIT_NPROC={nproc}, RLIMIT_CORE={core}"
    failed[NO_NEW_PRIVS] = None if _prctl(PR_GET_NO_NEW_PRIVS) == 1 else "PR_GET_NO_NEW_PRIVS is not 1"
    failed[NETNS] = None if new_netns else "still in the worker's network namespace"
    arch = current_arch()
    if arch is not None:
        caps = _process.capabilities(arch)
        failed[CAPABILITIES] = None if caps == (0, 0, 0) else f"capabilities remain ({caps[0]:#x})"
    scratch = report.scratch_dir or "/nonexistent"
    outside = os.path.join(os.path.dirname(scratch), _OUTSIDE_WRITE)
    try:
        _write(os.path.join(scratch, "inside"))
        denied = _refused(lambda: _write(outside)) or _refused(lambda: _read(_OUTSIDE_READ))
        failed[LANDLOCK] = None if denied is None else f"a write/read outside the allowed paths: {denied}"
    except OSError as exc:
        failed[LANDLOCK] = f"writing inside the scratch directory failed: {exc.strerror}"
    mode = _prctl(PR_GET_SECCOMP)
    refused = _refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    failed[SECCOMP] = None if mode == 2 and refused is None else f"seccomp mode {mode}, socket(): {refused}"
    return failed


def _child(write_fd: int, parent_netns: int) -> None:
    canary = os.open("/dev/null", os.O_RDONLY)
    prepare_spare()
    new_netns = _process.network_namespace_id() != parent_netns
    report = apply_jail(DEFAULT_LIMITS, write_fd)
    failed = _checks(report, new_netns, canary)
    message = {
        "applied": report.applied,
        "unavailable": report.unavailable,
        "failed": failed,
        "scratch_dir": report.scratch_dir,
        "landlock_abi": report.landlock_abi,
    }
    os.write(write_fd, json.dumps(message).encode())


def probe_host() -> JailReport:
    """Report which layers this host applies, by jailing a throwaway child; the caller is not jailed."""
    prepare_forking_process()  # once here, inherited by every child this process forks later
    scratch_base = _scratch.base()  # made here, so the probe child uses this process's base
    parent_netns = _process.network_namespace_id()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which always _exits
        code = 1
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _child(write_fd, parent_netns)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        chunks.append(reader.read())
    _, status = os.waitpid(pid, 0)
    _scratch.remove(_scratch.path_for(scratch_base, pid))
    _scratch.remove(os.path.join(scratch_base, _OUTSIDE_WRITE))
    return _report_from(b"".join(chunks), status)


def _report_from(raw: bytes, status: int) -> JailReport:
    report = JailReport()
    if not raw or os.waitstatus_to_exitcode(status) != 0:
        why = f"the probe child ended with status {os.waitstatus_to_exitcode(status)} before reporting"
        report.unavailable = {layer: why for layer in (ENVIRONMENT, FDS, NETNS, RLIMITS, NO_NEW_PRIVS, LANDLOCK)}
        report.unavailable[CAPABILITIES] = report.unavailable[SECCOMP] = why
        return report
    message = json.loads(raw)
    failed: dict[str, str | None] = message["failed"]
    report.unavailable.update(message["unavailable"])
    report.landlock_abi = message["landlock_abi"]
    for name in message["applied"]:
        layer = name if name in failed else name.split("(", 1)[0]
        problem = failed.get(layer, "no check for this layer")
        if problem is None:
            report.applied.append(name)
        else:
            report.unavailable[layer] = f"applied but not effective: {problem}"
    return report
