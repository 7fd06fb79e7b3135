"""A classic-BPF seccomp filter built by hand (no libseccomp): a denylist with two kinds of "no".

Policy (also in docs/THREAT_MODEL.md):

- **Kill the process** (`SECCOMP_RET_KILL_PROCESS`, the worker sees SIGSYS and reports
  `sandbox_violation`) for calls no runtime of ours makes and that only an escape would: starting
  programs (`execve`, `execveat`), creating processes (`fork`, `vfork`, `clone` without
  `CLONE_THREAD` or with any namespace flag), reading or writing other processes (`ptrace`,
  `process_vm_*`, `pidfd_getfd`), mounts and namespaces (`mount`, the new mount API, `unshare`,
  `setns`, `pivot_root`, `chroot`), kernel modules, kexec, reboot, `bpf`, `perf_event_open`,
  `userfaultfd`, the keyring, `open_by_handle_at`, swap, hostname, `iopl`/`ioperm`, `acct`,
  quotas; and any call made through another ABI (a foreign `AUDIT_ARCH`, or x32 on x86_64).
- **Fail with EPERM** (`SECCOMP_RET_ERRNO`) for calls a runtime may probe harmlessly, so the engine
  sees an ordinary error: new sockets (`socket`, `socketpair`, `connect`, `bind`, `listen`,
  `accept*`), socket I/O on any descriptor but the worker's socketpair, `io_uring_*` (its operations
  would bypass this filter), `personality`, raising rlimits (`setrlimit`, `prlimit64` with a new
  value), signals to any process but itself, `pidfd_open`, and the file-metadata calls Landlock does
  not cover and a root child could otherwise use on any file (`chmod`/`chown`/xattr/`utime*`
  families, `mknod*`), clock setting, `syslog`, `kcmp`, uid/gid/capability changes, and the
  `TIOCSTI`/`TIOCLINUX` ioctls (typing into the worker's terminal).
- `clone3` fails with ENOSYS: its flags sit behind a pointer the filter cannot read, and glibc then
  falls back to `clone`, whose flags it can. Threads (`CLONE_THREAD`, no namespace flag) are allowed:
  they share every layer of the jail, and no engine needs more.

Everything else is allowed. The filter is built per job because it names the child's pid and the
fd of its socketpair.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct

from scriptpool.sandbox.jail._syscalls import ARCHES, X32_SYSCALL_BIT, Arch

PR_SET_SECCOMP = 22
PR_GET_SECCOMP = 21
SECCOMP_MODE_FILTER = 2

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

EPERM = 1
ENOSYS = 38

CLONE_THREAD = 0x00010000
CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

KILL_CALLS = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns", "kexec_load", "kexec_file_load", "reboot",
    "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
    "request_key", "iopl", "ioperm", "swapon", "swapoff", "sethostname", "setdomainname", "open_by_handle_at",
    "acct", "quotactl", "quotactl_fd", "vhangup", "uselib", "lookup_dcookie", "nfsservctl",
)  # fmt: skip

EPERM_CALLS = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "personality", "setrlimit",
    "tkill", "pidfd_open", "pidfd_send_signal",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat",
    "removexattrat", "file_setattr", "utime", "utimes", "utimensat", "futimesat", "mknod", "mknodat",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "kcmp", "name_to_handle_at",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    "capset", "lsm_set_self_attr",
)  # fmt: skip

SOCKET_IO_CALLS = (
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "getsockopt", "setsockopt", "getsockname", "getpeername",
)  # fmt: skip
"""Allowed only on the worker's socketpair (argument 0 is the fd)."""

SELF_SIGNAL_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
"""Allowed only when argument 0 (pid / tgid) is the child itself."""

# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_AND_K = 0x54
_RET_K = 0x06

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. Both arches are little-endian.
_NR = 0
_ARCH = 4


def _arg_lo(index: int) -> int:
    return 16 + 8 * index


def _arg_hi(index: int) -> int:
    return 16 + 8 * index + 4


Insn = tuple[int, int, int, int]


def _ld(offset: int) -> Insn:
    return (_LD_W_ABS, 0, 0, offset)


def _ret(action: int) -> Insn:
    return (_RET_K, 0, 0, action)


def _block(nr: int, body: list[Insn]) -> list[Insn]:
    """`if nr == <nr>: body` where body always returns; otherwise skip it with the accumulator still nr."""
    return [(_JEQ_K, 0, len(body), nr), *body]


def build_filter(arch: Arch, keep_fd: int, own_pid: int) -> list[Insn]:
    numbers = arch.numbers
    kill, allow, eperm = SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    prog: list[Insn] = [_ld(_ARCH), (_JEQ_K, 1, 0, arch.audit_arch), _ret(kill), _ld(_NR)]
    if arch.has_x32:
        prog += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), _ret(kill)]
    for name in KILL_CALLS:
        if name in numbers:
            prog += _block(numbers[name], [_ret(kill)])
    for name in EPERM_CALLS:
        if name in numbers:
            prog += _block(numbers[name], [_ret(eperm)])
    prog += _block(numbers["clone3"], [_ret(SECCOMP_RET_ERRNO | ENOSYS)])
    prog += _block(
        numbers["clone"],
        [
            _ld(_arg_lo(0)),
            (_AND_K, 0, 0, CLONE_THREAD | CLONE_NAMESPACE_FLAGS),
            (_JEQ_K, 0, 1, CLONE_THREAD),
            _ret(allow),
            _ret(kill),
        ],
    )
    for names, value in ((SOCKET_IO_CALLS, keep_fd), (SELF_SIGNAL_CALLS, own_pid)):
        for name in names:
            prog += _block(numbers[name], [_ld(_arg_lo(0)), (_JEQ_K, 0, 1, value), _ret(allow), _ret(eperm)])
    prog += _block(
        numbers["prlimit64"],
        [_ld(_arg_lo(2)), (_JEQ_K, 0, 3, 0), _ld(_arg_hi(2)), (_JEQ_K, 0, 1, 0), _ret(allow), _ret(eperm)],
    )
    prog += _block(
        numbers["ioctl"],
        [_ld(_arg_lo(1)), (_JEQ_K, 2, 0, TIOCSTI), (_JEQ_K, 1, 0, TIOCLINUX), _ret(allow), _ret(eperm)],
    )
    prog.append(_ret(allow))
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_KEEP_FD_MARK = 0x7EEDF00D
_OWN_PID_MARK = 0x7EEDBEEF
_LIBC = ctypes.CDLL(None, use_errno=True)


def _template(arch: Arch) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    return _template_for(arch.name)


@functools.cache
def _template_for(arch_name: str) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    """The packed filter with placeholders, and the byte offsets of the fd and pid constants.

    Built once in the worker (see `prepare`), so a child only copies it and patches two numbers.
    """
    prog = build_filter(ARCHES[arch_name], _KEEP_FD_MARK, _OWN_PID_MARK)
    raw = b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in prog)
    fd_at = tuple(8 * i + 4 for i, insn in enumerate(prog) if insn[3] == _KEEP_FD_MARK)
    pid_at = tuple(8 * i + 4 for i, insn in enumerate(prog) if insn[3] == _OWN_PID_MARK)
    return raw, fd_at, pid_at


def prepare(arch: Arch) -> None:
    _template(arch)


def install(arch: Arch, keep_fd: int, own_pid: int) -> int:
    """Install the filter on the calling thread (no-new-privs must be set). Returns the instruction count."""
    raw, fd_at, pid_at = _template(arch)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    for offset in fd_at:
        struct.pack_into("=I", buffer, offset, keep_fd)
    for offset in pid_at:
        struct.pack_into("=I", buffer, offset, own_pid)
    count = len(raw) // 8
    if count > 4096:  # BPF_MAXINSNS
        raise OSError(0, f"seccomp filter too long ({count} instructions)")
    fprog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    ok = _LIBC.prctl(
        PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)
    )
    if ok != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_SECCOMP): {os.strerror(errno)}")
    return count
