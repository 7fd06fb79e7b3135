"""Landlock through its three system calls (444-446, the same on every architecture), via ctypes.

The ruleset handles every access right the kernel's ABI knows, so whatever no rule grants is denied:

- read-only (files and directory listings) beneath what the interpreter may still load after the
  jail: the standard library, site-packages, our own packages, the shared-library directories, the
  dynamic loader's cache and the time-zone data;
- read and write on `/dev/null`, read on `/dev/zero`, `/dev/random`, `/dev/urandom`;
- create, write, truncate, rename and remove files and directories beneath the job's scratch
  directory only (no device nodes, sockets, fifos or symlinks there);
- nothing else: no `/proc` (it would show the worker's environment block and other processes), no
  `/etc`, no home directories, no other job's scratch directory.

From ABI 4 the ruleset also handles TCP bind/connect (no port is granted), and from ABI 6 it is
scoped: no abstract-unix-socket connections and no signals to processes outside the domain (the
worker among them). The highest ABI the kernel reports is used, up to the newest one known here.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import sysconfig

_CREATE_RULESET = 444
_ADD_RULE = 445
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
NEWEST_KNOWN_ABI = 7

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The only rights a rule on a non-directory may carry."""

SYSTEM_READ_PATHS = (
    "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/localtime",
    "/usr/share/zoneinfo",
)  # fmt: skip
DEVICE_RULES = (
    ("/dev/null", READ_FILE | WRITE_FILE),
    ("/dev/zero", READ_FILE),
    ("/dev/random", READ_FILE),
    ("/dev/urandom", READ_FILE),
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


def _libc() -> ctypes.CDLL:
    return _LIBC


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI; raises OSError (ENOSYS: not built in, EOPNOTSUPP: disabled at boot)."""
    libc = _libc()
    return _check(
        libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)), "landlock"
    )


def handled_fs(abi: int) -> int:
    rights = (MAKE_SYM << 1) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def scratch_rights(abi: int) -> int:
    rights = READ_FILE | READ_DIR | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    return rights


@functools.cache
def interpreter_read_paths() -> tuple[str, ...]:
    """Directories Python may still import from after the jail: stdlib, site-packages, our packages.

    Cached: the worker computes it once (`probe_host`) before it forks children. The current directory,
    the repository root and `sys.prefix` as a whole are deliberately not included.

    Landlock matches the file a path resolves to, so each package folder is given as its real path: in a
    source checkout `scriptpool/sandbox` is a link to the repository's `sandbox/` (ADR 0008), and a rule
    on `scriptpool/` alone would not cover what the link points to. `scriptpool.coordinator` and
    `scriptpool.workers` are not granted: a child imports nothing from them.
    """
    paths = {p for key, p in sysconfig.get_paths().items() if key in ("stdlib", "platstdlib", "purelib", "platlib")}
    for name in ("scriptpool", "scriptpool.sandbox"):
        module = sys.modules.get(name)
        paths.update(os.path.realpath(p) for p in getattr(module, "__path__", ()))
    paths.update(SYSTEM_READ_PATHS)
    return tuple(sorted(p for p in paths if p and os.path.isabs(p) and os.path.exists(p) and p != "/"))


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        attr = _PathBeneathAttr(rights, fd)
        _check(libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(attr), ctypes.c_uint32(0)), path)
    finally:
        os.close(fd)


def restrict_self(abi: int, scratch_dir: str | None) -> None:
    """Apply the ruleset to the calling thread and its future threads (no-new-privs must be set)."""
    abi = min(abi, NEWEST_KNOWN_ABI)
    libc = _libc()
    handled = handled_fs(abi)
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(
        libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        for path in interpreter_read_paths():
            _add_rule(libc, ruleset, path, (READ_FILE | READ_DIR) & handled)
        for path, rights in DEVICE_RULES:
            _add_rule(libc, ruleset, path, rights & handled)
        if scratch_dir is not None:
            _add_rule(libc, ruleset, scratch_dir, scratch_rights(abi))
        _check(libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
