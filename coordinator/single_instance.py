"""One stack per state directory, one coordinator per listen address.

`StateDirLock`: `scriptpool up` holds an exclusive `flock` on `STATE_DIR/up.lock` for its whole life
(the kernel drops it when the process ends, however it ends), so a second `up` on the same directory
refuses before it starts a second redis-server on the first one's socket and AOF. The file holds the
holder's pid, for the refusal to name it.

`refuse_address_in_use`: the coordinator's gRPC server binds without `SO_REUSEPORT` (which gRPC
sets by default and which lets a second coordinator share a port silently, each getting some of the
connections); before binding, a plain probe tells an address in use apart from a bad one, so the
refusal is one line instead of gRPC's log line plus a generic "failed to bind".

Both raise `AlreadyInUse`, which the CLI turns into exit code 5 (`EXIT_IN_USE`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

from scriptpool.errors import AlreadyExists

LOCK_FILE_NAME = "up.lock"


class AlreadyInUse(AlreadyExists):
    """The state directory or the listen address belongs to another running scriptpool."""


class StateDirLock:
    """An exclusive, non-blocking `flock` on `state_dir/up.lock`, held until `release()` or exit."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyInUse(
                f"state directory {self.state_dir} is in use by another `scriptpool up` (pid {holder}); "
                "stop that one, or set SCRIPTPOOL_STATE_DIR to another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking a lock file lets two holders race)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _tcp_host_port(address: str) -> tuple[str, int] | None:
    """`host:port` or `[v6]:port` as (host, port); None for what is not a TCP address (unix:...)."""
    if address.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    address = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None  # gRPC will refuse it with its own message
    return host.strip("[]") or "0.0.0.0", int(port)


def refuse_address_in_use(address: str) -> None:
    """Raise `AlreadyInUse` when something already listens on the TCP `address`. Port 0, unix
    sockets and addresses that do not resolve are left to gRPC."""
    parsed = _tcp_host_port(address)
    if parsed is None or parsed[1] == 0:
        return
    host, port = parsed
    try:
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _, sockaddr in resolved:
        with contextlib.closing(socket.socket(family, kind, proto)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AlreadyInUse(
                        f"cannot listen on {address}: the address is already in use (another coordinator?)"
                    ) from None
