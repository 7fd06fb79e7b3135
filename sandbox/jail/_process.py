"""Process-wide layers that need no policy: a fresh network namespace, no capabilities, no env block."""

from __future__ import annotations

import ctypes
import os

from scriptpool.sandbox.jail._syscalls import Arch

CLONE_NEWNET = 0x40000000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


def _libc() -> ctypes.CDLL:
    return _LIBC


def _fail(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare_network() -> None:
    """Move the calling process into a new network namespace: only a loopback device, and it is down."""
    if _libc().unshare(CLONE_NEWNET) != 0:
        raise _fail("unshare(CLONE_NEWNET)")


def network_namespace_id(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(arch: Arch) -> None:
    """Empty the effective, permitted, inheritable and ambient sets; irreversible without exec."""
    libc = _libc()
    libc.prctl(
        PR_CAP_AMBIENT,
        ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(arch.numbers["capset"], ctypes.byref(header), ctypes.byref(data)) != 0:
        raise _fail("capset")


def capabilities(arch: Arch) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
    libc = _libc()
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(arch.numbers["capget"], ctypes.byref(header), ctypes.byref(data)) != 0:
        raise _fail("capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def wipe_environment_block() -> int:
    """Zero the process's original environment strings (inherited from the worker at fork).

    `os.environ.clear()` unsets every variable, but the strings the kernel placed at exec time stay
    in memory (and in /proc/self/environ). Returns the number of bytes wiped.
    """
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # Fields 50 and 51 of proc(5) (env_start, env_end); `fields` starts at field 3.
    start, end = int(fields[47]), int(fields[48])
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)
        return end - start
    return 0
