"""The OS jail, layer by layer, in children forked from the test process.

Each test forks a child, jails it with the real `apply_jail`, attempts one forbidden (or allowed)
thing and reports through its socketpair, the one socket the jail leaves usable. The parent asserts
the exact result: death by SIGSYS, EPERM, PermissionError, or success. Every child is reaped.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scriptpool.sandbox.jail import (
    JailReport,
    _scratch,
    _seccomp,
    apply_jail,
    prepare_spare,
    probe_host,
    release_scratch,
    scratch_base,
)
from scriptpool.sandbox.jail._syscalls import ARCHES, current_arch
from scriptpool.sandbox.limits import JobLimits

LIMITS = JobLimits(cpu_time_ms=5_000, memory_bytes=64 * 1024 * 1024)
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
EVERY_LAYER = (
    "empty-environment",
    "inherited-fds-closed",
    "network-namespace",
    "rlimits",
    "no-new-privs",
    "landlock",
    "capabilities-dropped",
    "seccomp",
)

Action = Callable[[JailReport], object]


def _describe(exc: BaseException) -> dict[str, object]:
    code = exc.errno if isinstance(exc, OSError) else None
    return {"raised": type(exc).__name__, "errno": errno.errorcode.get(code or 0, code)}


def _run_jailed(
    action: Action,
    scratch_base: Path,
    *,
    jail: bool = True,
    before: Callable[[], object] | None = None,
) -> tuple[int, object]:
    """Fork, jail, run `action`; return (wait status, what the child reported or None)."""
    parent_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child always _exits
        try:
            parent_end.close()
            if before is not None:
                before()
            prepare_spare(str(scratch_base))
            report = apply_jail(LIMITS, child_end.fileno(), str(scratch_base)) if jail else JailReport()
            try:
                outcome: object = {"value": action(report)}
            except Exception as exc:
                outcome = _describe(exc)
            child_end.sendall(json.dumps(outcome).encode())
        finally:
            os._exit(0)
    child_end.close()
    chunks = []
    with parent_end:
        while chunk := parent_end.recv(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return status, json.loads(b"".join(chunks)) if chunks else None


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)  # a private base, as `_scratch.make_worker_base` makes
    yield scratch
    _scratch.sweep(str(scratch))


def _killed_by_sigsys(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _ok(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ---------------------------------------------------------------- the report and the probe
def test_every_layer_is_applied_on_this_host(base: Path) -> None:
    status, got = _run_jailed(
        lambda r: {"applied": r.applied, "unavailable": r.unavailable, "abi": r.landlock_abi}, base
    )
    assert _ok(status)
    assert isinstance(got, dict)
    report = got["value"]
    assert report["unavailable"] == {}
    for layer in EVERY_LAYER:
        assert any(name.startswith(layer) for name in report["applied"]), layer
    assert report["abi"] >= 1
    assert f"landlock(abi={report['abi']})" in report["applied"]


def test_probe_host_verifies_every_layer_in_a_throwaway_child() -> None:
    report = probe_host()
    assert report.unavailable == {}
    assert [name.split("(")[0] for name in report.applied] == [  # in the order they are applied
        "empty-environment",
        "network-namespace",
        "inherited-fds-closed",
        "no-new-privs",
        "landlock",
        "capabilities-dropped",
        "rlimits",  # the job's own limits: applied once the job has arrived
        "seccomp",  # last
    ]
    assert report.landlock_abi >= 1
    assert not os.path.exists(os.path.join(scratch_base(), "probe-outside"))


def test_probe_reports_a_layer_that_does_not_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seccomp, "install", lambda arch, fd, pid: 0)  # "applied", but nothing installed
    report = probe_host()
    assert "seccomp" not in report.applied
    assert report.unavailable["seccomp"].startswith("applied but not effective: seccomp mode 0")


def test_doctor_exits_non_zero_when_a_layer_does_not_hold(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scriptpool.coordinator.cli.main import EXIT_JAIL_INCOMPLETE, EXIT_OK, main

    assert main(["doctor"]) == EXIT_OK  # every layer holds on this host
    assert "UNAVAILABLE" not in capsys.readouterr().out
    monkeypatch.setattr(_seccomp, "install", lambda arch, fd, pid: 0)
    assert main(["doctor"]) == EXIT_JAIL_INCOMPLETE
    assert "UNAVAILABLE  seccomp: applied but not effective" in capsys.readouterr().out


# ---------------------------------------------------------------- seccomp: killed outright
def test_execve_kills_the_process_with_sigsys(base: Path) -> None:
    status, got = _run_jailed(lambda r: os.execv("/bin/true", ["true"]), base)
    assert _killed_by_sigsys(status) and got is None


def test_fork_kills_the_process_with_sigsys(base: Path) -> None:
    arch = current_arch()
    assert arch is not None
    # The raw clone(SIGCHLD) that fork() makes, without libc's atfork handlers (gRPC's would run first).
    status, got = _run_jailed(lambda r: LIBC.syscall(arch.numbers["clone"], signal.SIGCHLD, 0, 0, 0, 0), base)
    assert _killed_by_sigsys(status) and got is None


def test_ptrace_of_the_worker_kills_the_process(base: Path) -> None:
    status, got = _run_jailed(lambda r: LIBC.ptrace(16, os.getppid(), None, None), base)  # PTRACE_ATTACH
    assert _killed_by_sigsys(status) and got is None


def test_unshare_kills_the_process(base: Path) -> None:
    status, got = _run_jailed(lambda r: LIBC.unshare(0x00020000), base)  # CLONE_NEWNS
    assert _killed_by_sigsys(status) and got is None


def test_mount_kills_the_process(base: Path) -> None:
    status, got = _run_jailed(lambda r: LIBC.mount(b"none", b"/mnt", b"tmpfs", 0, None), base)
    assert _killed_by_sigsys(status) and got is None


def test_bpf_kills_the_process(base: Path) -> None:
    arch = current_arch()
    assert arch is not None
    number = 321 if arch.name == "x86_64" else 280
    status, got = _run_jailed(lambda r: LIBC.syscall(number, 0, None, 0), base)
    assert _killed_by_sigsys(status) and got is None


def test_clone3_fails_with_enosys_so_libc_falls_back_to_clone(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        result = LIBC.syscall(435, None, ctypes.c_size_t(0))
        return [result, errno.errorcode[ctypes.get_errno()]]

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": [-1, "ENOSYS"]}


def test_threads_share_the_jail_and_may_run(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        seen: list[object] = []

        def body() -> None:
            try:
                socket.socket()
            except OSError as exc:
                seen.append(errno.errorcode[exc.errno or 0])

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        return seen

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": ["EPERM"]}


# ---------------------------------------------------------------- seccomp: EPERM
def test_new_inet_socket_is_refused_with_eperm(base: Path) -> None:
    status, got = _run_jailed(lambda r: socket.socket(socket.AF_INET, socket.SOCK_STREAM), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EPERM"}


def test_new_unix_socketpair_is_refused_with_eperm(base: Path) -> None:
    status, got = _run_jailed(lambda r: socket.socketpair(), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EPERM"}


def test_an_inherited_socket_other_than_the_worker_socketpair_is_unusable(base: Path) -> None:
    spare_parent, spare_child = socket.socketpair()

    def attempt(report: JailReport) -> object:
        return [LIBC.send(0, b"x", 1, 0), errno.errorcode[ctypes.get_errno()]]

    try:  # the child's stdin becomes a socket before the jail (the jail keeps stdio open)
        status, got = _run_jailed(attempt, base, before=lambda: os.dup2(spare_child.fileno(), 0))
    finally:
        spare_parent.close()
        spare_child.close()
    assert _ok(status) and got == {"value": [-1, "EPERM"]}


def test_io_uring_is_refused_with_eperm(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        params = ctypes.create_string_buffer(120)
        return [LIBC.syscall(425, 8, params), errno.errorcode[ctypes.get_errno()]]

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": [-1, "EPERM"]}


def test_signalling_the_worker_is_refused(base: Path) -> None:
    status, got = _run_jailed(lambda r: os.kill(os.getppid(), 0), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EPERM"}


def test_signalling_itself_is_allowed(base: Path) -> None:
    status, got = _run_jailed(lambda r: os.kill(os.getpid(), 0), base)
    assert _ok(status) and got == {"value": None}


def test_raising_an_rlimit_is_refused(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        new = (ctypes.c_uint64 * 2)(100, 100)
        return [LIBC.prlimit(0, 6, new, None), errno.errorcode[ctypes.get_errno()]]  # RLIMIT_NPROC

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": [-1, "EPERM"]}


def test_chmod_of_a_file_outside_the_scratch_directory_is_refused(base: Path, tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("host")
    target.chmod(0o600)
    status, got = _run_jailed(lambda r: os.chmod(target, 0o777), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EPERM"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# ---------------------------------------------------------------- Landlock
def test_writing_outside_the_scratch_directory_is_refused(base: Path, tmp_path: Path) -> None:
    target = tmp_path / "escaped"
    status, got = _run_jailed(lambda r: target.write_text("x"), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EACCES"}
    assert not target.exists()


def test_writing_another_jobs_scratch_directory_is_refused(base: Path) -> None:
    other = base / "job-1"
    other.mkdir(parents=True)
    status, got = _run_jailed(lambda r: (other / "planted").write_text("x"), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EACCES"}
    assert list(other.iterdir()) == []


def test_writing_inside_the_scratch_directory_works_and_it_is_the_cwd(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        assert report.scratch_dir is not None
        Path("relative.txt").write_text("hello")
        Path("sub").mkdir()
        (Path("sub") / "inner.txt").write_text("world")
        Path("relative.txt").rename("renamed.txt")
        return [os.getcwd() == report.scratch_dir, Path("renamed.txt").read_text(), sorted(os.listdir("."))]

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": [True, "hello", ["renamed.txt", "sub"]]}


def test_reading_host_files_outside_the_allowed_paths_is_refused(base: Path) -> None:
    status, got = _run_jailed(lambda r: open("/etc/hostname").read(), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EACCES"}


def test_reading_proc_environ_is_refused(base: Path) -> None:
    status, got = _run_jailed(lambda r: open(f"/proc/{os.getppid()}/environ", "rb").read(), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EACCES"}


def test_device_node_in_scratch_is_refused(base: Path) -> None:
    status, got = _run_jailed(lambda r: os.mknod("disk", stat.S_IFBLK | 0o600, os.makedev(8, 0)), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EPERM"}


def test_the_interpreter_can_still_import_the_standard_library(base: Path) -> None:
    def attempt(report: JailReport) -> object:
        import importlib
        import sys

        sys.modules.pop("fractions", None)
        fractions = importlib.import_module("fractions")
        return str(fractions.Fraction(1, 3) * 3)

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": "1"}


def test_the_sandbox_package_can_still_be_imported_through_its_one_name(base: Path) -> None:
    """In a source checkout `scriptpool/sandbox` is a link to the repository's `sandbox/` (ADR 0008).
    Landlock matches the folder a path resolves to, so that is the one granted: a jailed child still
    imports from it and reads its data files."""

    def attempt(report: JailReport) -> object:
        import importlib
        import sys
        from importlib import resources

        sys.modules.pop("scriptpool.sandbox.scratch_files", None)
        module = importlib.import_module("scriptpool.sandbox.scratch_files")
        prelude = resources.files("scriptpool.sandbox.engines").joinpath("lua_prelude.lua").read_text()
        return [module.__name__, bool(prelude)]

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": ["scriptpool.sandbox.scratch_files", True]}


def test_the_coordinator_and_worker_code_of_a_checkout_is_not_readable(base: Path) -> None:
    """Only the real folders of `scriptpool` and `scriptpool.sandbox` are granted, so in a source
    checkout the links to `coordinator/` and `workers/` lead nowhere a child may read."""
    import sysconfig

    from scriptpool import workers

    target = Path(workers.__file__).resolve()
    if any(target.is_relative_to(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")):
        pytest.skip("installed into site-packages, which the jail grants as a whole")
    status, got = _run_jailed(lambda r: open(str(target)).read(), base)
    assert _ok(status) and got == {"raised": "PermissionError", "errno": "EACCES"}


# ---------------------------------------------------------------- network namespace
def test_network_namespace_has_only_a_loopback_that_is_down(base: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def attempt(report: JailReport) -> object:
        names = [name for _, name in socket.if_nameindex()]
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.connect(("127.0.0.1", port))
            return [names, "connected"]
        except OSError as exc:
            return [names, errno.errorcode[exc.errno or 0]]
        finally:
            probe.close()

    try:
        status, got = _run_jailed(attempt, base, jail=False)  # prepare_spare only: no seccomp to stop socket()
    finally:
        listener.close()
    assert _ok(status) and got == {"value": [["lo"], "ENETUNREACH"]}


# ---------------------------------------------------------------- environment, fds, capabilities
def test_environment_is_empty_and_the_inherited_block_is_wiped(base: Path) -> None:
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])
    assert b"PATH=" in ctypes.string_at(start, end - start)

    def attempt(report: JailReport) -> object:
        return [dict(os.environ), ctypes.string_at(start, end - start).count(0) == end - start]

    status, got = _run_jailed(attempt, base)
    assert _ok(status) and got == {"value": [{}, True]}


def test_inherited_descriptors_are_closed(base: Path, tmp_path: Path) -> None:
    leaked = os.open(tmp_path, os.O_RDONLY)
    try:
        status, got = _run_jailed(lambda r: os.fstat(leaked), base)
    finally:
        os.close(leaked)
    assert _ok(status) and got == {"raised": "OSError", "errno": "EBADF"}


def test_capabilities_are_dropped(base: Path) -> None:
    from scriptpool.sandbox.jail._process import capabilities

    arch = current_arch()
    assert arch is not None
    status, got = _run_jailed(lambda r: list(capabilities(arch)), base)
    assert _ok(status) and got == {"value": [0, 0, 0]}


# ---------------------------------------------------------------- scratch directory lifecycle
def test_scratch_directory_is_fresh_emptied_and_swept(base: Path) -> None:
    def leave_a_file(report: JailReport) -> object:
        assert report.scratch_dir is not None
        Path("left-behind").write_text("secret")
        return [report.scratch_dir, os.listdir(".")]

    status, got = _run_jailed(leave_a_file, base)
    assert _ok(status) and isinstance(got, dict)
    scratch, listing = got["value"]
    assert listing == ["left-behind"]
    assert os.listdir(scratch) == ["left-behind"]  # the child was not told the job ended
    status, got = _run_jailed(lambda r: os.listdir("."), base)  # the next spare sweeps dead children's dirs
    assert _ok(status) and got == {"value": []}
    assert not os.path.exists(scratch)

    def release(report: JailReport) -> object:
        Path("x").write_text("x")
        release_scratch(report)
        return os.listdir(".")

    status, got = _run_jailed(release, base)
    assert _ok(status) and got == {"value": []}


# ---------------------------------------------------------------- the filter itself, on both architectures
def _evaluate(program: list[tuple[int, int, int, int]], data: bytes) -> int:
    """A minimal classic-BPF interpreter for the instructions the filter uses."""
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35):
            taken = acc == k if code == 0x15 else acc >= k
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def _seccomp_data(arch_id: int, nr: int, *args: int) -> bytes:
    padded = list(args) + [0] * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch_id, 0, *padded)


@pytest.mark.parametrize("arch_name", sorted(ARCHES))
def test_filter_decisions_on_each_architecture(arch_name: str) -> None:
    arch = ARCHES[arch_name]
    nums = arch.numbers
    program = _seccomp.build_filter(arch, keep_fd=5, own_pid=4242)

    def decide(name: str, *args: int, audit_arch: int | None = None) -> int:
        return _evaluate(program, _seccomp_data(audit_arch or arch.audit_arch, nums[name], *args))

    kill, allow = _seccomp.SECCOMP_RET_KILL_PROCESS, _seccomp.SECCOMP_RET_ALLOW
    eperm = _seccomp.SECCOMP_RET_ERRNO | errno.EPERM
    assert decide("execve") == kill
    assert decide("ptrace") == kill
    assert decide("clone", 0x11) == kill  # SIGCHLD: a new process
    assert decide("clone", 0x3D0F00) == allow  # what glibc passes for pthread_create
    assert decide("clone", 0x3D0F00 | 0x40000000) == kill  # a thread in a new network namespace
    assert decide("clone3") == _seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
    assert decide("socket", 2, 1, 0) == eperm
    assert decide("sendto", 5) == allow
    assert decide("sendto", 6) == eperm
    assert decide("kill", 4242, 9) == allow
    assert decide("kill", 0xFFFFFFFF, 9) == eperm  # kill(-1): every process
    assert decide("prlimit64", 0, 7, 0, 0) == allow
    assert decide("prlimit64", 0, 7, 0x1000, 0) == eperm
    assert decide("ioctl", 0, 0x5412) == eperm  # TIOCSTI
    assert decide("ioctl", 0, 0x5401) == allow  # TCGETS
    assert decide("capget") == allow
    other = next(a for a in ARCHES.values() if a is not arch)
    assert decide("capget", audit_arch=other.audit_arch) == kill
    if arch.has_x32:
        x32_read = _evaluate(program, _seccomp_data(arch.audit_arch, 0x40000000))
        assert x32_read == kill
