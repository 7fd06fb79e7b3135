"""Sandbox child processes as the worker sees them, wherever they were forked.

A child is either the worker's own (`fork_child`: signalled by pid, reaped with `wait4`) or the
zygote's (`scriptpool.workers.supervision.zygote`: signalled through a pidfd, reaped by the zygote,
which reports the wait status and rusage). `ChildHandle` is what the supervisor needs from either; `ChildSource` is what
keeps the next spare child coming.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from typing import Protocol

from scriptpool.languages import Language
from scriptpool.sandbox.forking import fork_sandbox_child
from scriptpool.sandbox.runner import DEFAULT_WARM_UP

REAP_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ChildExit:
    """How a child process ended: its wait status and what the kernel measured."""

    status: int
    cpu_time_ms: int
    peak_memory_bytes: int


class ChildHandle(Protocol):
    """Signal, poll and reap one sandbox child."""

    def kill(self) -> None:
        """SIGKILL the child (nothing if it is gone)."""

    def has_exited(self) -> bool:
        """Non-blocking: True once the child has exited (and, for our own child, reaps it)."""

    def wait(self, grace_seconds: float) -> ChildExit | None:
        """Wait for the child to end, SIGKILLing it if it lingers past the grace period; None when its
        status cannot be known (already reaped, or its zygote died)."""

    def release(self) -> None:
        """Drop what we hold for the child once we no longer care how it ended."""


class ForkedChild:
    """A child of this process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def has_exited(self) -> bool:
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return done != 0

    def wait(self, grace_seconds: float) -> ChildExit | None:
        try:
            pidfd = os.pidfd_open(self.pid)  # sleep until the child exits instead of polling waitpid
        except OSError:
            pidfd = -1
        try:
            if pidfd >= 0:
                waiter = select.poll()
                waiter.register(pidfd, select.POLLIN)
                if not waiter.poll(int(grace_seconds * 1000)):
                    self.kill()
            else:
                give_up = time.monotonic() + grace_seconds
                while not self._exited() and time.monotonic() < give_up:
                    time.sleep(0.001)
                if not self._exited():
                    self.kill()
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:
            return None
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return ChildExit(status, int((usage.ru_utime + usage.ru_stime) * 1000), usage.ru_maxrss * 1024)

    def _exited(self) -> bool:
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def release(self) -> None:
        pass


@dataclass(slots=True)
class SandboxChild:
    pid: int
    sock: socket.socket
    forked_at: float
    process: ChildHandle | None = None
    """How to signal and reap it; None means a child of this process (`ForkedChild`)."""
    resident_after_first_job: int = 0
    """Its resident memory when it was first kept for another job (workers/supervision/child_reuse.py)."""
    cpu_seconds_at_handover: float | None = None
    """Its CPU use as read when a kept child's CPU limit was moved for its next job, so that job's
    CPU watch starts from the same reading (one /proc read per job, not two); taken once."""

    @property
    def handle(self) -> ChildHandle:
        if self.process is None:
            self.process = ForkedChild(self.pid)
        return self.process

    def discard(self) -> None:
        """Close its socket (a waiting child sees EOF and exits), kill it and reap it."""
        self.sock.close()
        self.handle.kill()
        self.handle.wait(REAP_GRACE_SECONDS)
        self.handle.release()


def fork_child(warm_languages: tuple[Language, ...] = DEFAULT_WARM_UP) -> SandboxChild:
    """Fork a child of this process that waits for one job on a socketpair."""
    pid, sock = fork_sandbox_child(warm_languages)
    return SandboxChild(pid=pid, sock=sock, forked_at=time.monotonic(), process=ForkedChild(pid))


class ChildSource(Protocol):
    """Where spare children come from."""

    def request(self, languages: tuple[Language, ...]) -> None:
        """Start making the next spare (nothing if one is ready or on its way)."""

    def take(self, languages: tuple[Language, ...]) -> SandboxChild:
        """The spare, alive; made now if none was requested."""

    def close(self) -> None:
        """Discard the spare and stop making new ones."""


class LocalForks:
    """Spares forked by the worker itself, on its own thread."""

    def __init__(self) -> None:
        self._spare: SandboxChild | None = None

    def request(self, languages: tuple[Language, ...]) -> None:
        if self._spare is None:
            self._spare = fork_child(languages)

    def take(self, languages: tuple[Language, ...]) -> SandboxChild:
        child, self._spare = self._spare, None
        if child is not None and child.handle.has_exited():  # killed while it waited
            child.sock.close()
            child = None
        return child if child is not None else fork_child(languages)

    def close(self) -> None:
        child, self._spare = self._spare, None
        if child is not None:
            child.discard()


__all__ = ["ChildExit", "ChildHandle", "ChildSource", "ForkedChild", "LocalForks", "SandboxChild", "fork_child"]
