"""The worker's side of its zygote (`scriptpool.sandbox.zygote`): start it, ask it for spare children, learn how
they ended, restart it when it dies, and fall back to forking children itself when it keeps dying.

The zygote holds only the warm engines, so forking there is cheaper than forking the worker (no
grpc, Redis or RQ state, and the JavaScript guest's code mapped from a file), and it happens on the
zygote's thread while the worker records the previous job. A child comes with a pidfd: the worker
SIGKILLs through it, which can never hit a recycled pid, and polls it to see the child exit. The
zygote reaps every child and sends the wait status and rusage; messages keep their order, so a pid's
exit report always arrives before a new child that reuses the pid.
"""

from __future__ import annotations

import array
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import scriptpool
from scriptpool.languages import Language
from scriptpool.sandbox.jail import scratch_base
from scriptpool.sandbox.runner import prewarm
from scriptpool.sandbox.zygote import CHILD, EXITED, FAILED, SIZE, SPAWN, Message, languages_mask
from scriptpool.workers.supervision.children import ChildExit, LocalForks, SandboxChild

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
"""The first child waits for the zygote to start and warm its engines (~1 s, more under load)."""
SPAWN_TIMEOUT_SECONDS = 15.0
MAX_FAILURES = 3
FAILURE_WINDOW_SECONDS = 60.0
_ENV_KEPT = ("PATH", "LANG", "TZ", "TMPDIR", "PYTHONHOME", "PYTHONPATH")


class ZygoteLost(Exception):
    """The zygote exited, broke the protocol, or did not answer in time."""


def _zygote_env() -> dict[str, str]:
    """The zygote gets no secrets (the worker's Redis URL, say): only what Python needs to start."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT or k.startswith("LC_")}
    root = str(Path(scriptpool.__file__).resolve().parent.parent)  # the folder holding the `scriptpool` package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


_FDS_SPACE = socket.CMSG_SPACE(2 * array.array("i").itemsize)


def _recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it, without blocking (`socket.recv_fds` of
    Python 3.11 drops its flags argument)."""
    data, ancillary, _, _ = sock.recvmsg(SIZE, _FDS_SPACE, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


class ZygoteChild:
    """A `ChildHandle` for a child of the zygote."""

    def __init__(self, pid: int, pidfd: int, zygote: ZygoteProcess) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.zygote = zygote

    def kill(self) -> None:
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def has_exited(self) -> bool:
        return self._exit_within(0.0)

    def _exit_within(self, seconds: float) -> bool:
        """Poll the pidfd (readable once the child has exited, reaped or not)."""
        if self.pidfd < 0:
            return True
        waiter = select.poll()
        waiter.register(self.pidfd, select.POLLIN)
        return bool(waiter.poll(math.ceil(seconds * 1000)))

    def wait(self, grace_seconds: float) -> ChildExit | None:
        found = self.zygote.wait_exit(self.pid, grace_seconds)
        if found is None and not self.zygote.lost:
            self.kill()
            found = self.zygote.wait_exit(self.pid, grace_seconds)
        if found is None:  # the zygote is gone (its children get SIGKILL): make sure of this one
            self.kill()
            self._exit_within(grace_seconds)
        return found

    def release(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.zygote.forget(self.pid)


class ZygoteProcess:
    """One running zygote and the worker's end of its control socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scriptpool.sandbox.zygote",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    scratch_base(),
                ],
                pass_fds=[theirs.fileno()],
                env=_zygote_env(),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.lost = False
        self.children_made = 0
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self._ready: deque[SandboxChild] = deque()
        self._failed = 0
        self._exits: dict[int, ChildExit | None] = {}
        """Children we still care about -> their exit report, once it arrived."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, languages: tuple[Language, ...]) -> None:
        if self.lost:
            raise ZygoteLost("the zygote is gone")
        try:
            self.sock.send(Message(SPAWN, value=languages_mask(languages)).pack(), socket.MSG_NOSIGNAL)
        except OSError as exc:
            self._mark_lost()
            raise ZygoteLost(f"the zygote is gone ({exc})") from exc

    def next_child(self, timeout: float) -> SandboxChild:
        """The next child the zygote forked for us (one per `request`, in order)."""
        give_up = time.monotonic() + timeout
        while not self._ready:
            if self._failed:
                self._failed -= 1
                raise ZygoteLost("the zygote could not fork a child")
            left = give_up - time.monotonic()
            if left <= 0:
                self._mark_lost()
                raise ZygoteLost(f"the zygote did not hand over a child within {timeout:.0f} s")
            self.pump(left)
        return self._ready.popleft()

    def wait_exit(self, pid: int, timeout: float) -> ChildExit | None:
        """The child's exit report, waiting up to `timeout`; None on timeout or if the zygote is gone."""
        give_up = time.monotonic() + timeout
        while self._exits.get(pid) is None:
            left = give_up - time.monotonic()
            if left <= 0:
                return None
            try:
                self.pump(left)
            except ZygoteLost:
                return None
        return self._exits[pid]

    def forget(self, pid: int) -> None:
        self._exits.pop(pid, None)

    def pump(self, timeout: float = 0.0) -> None:
        """Take in every message that arrives within `timeout` seconds (0: those already there)."""
        if self.lost:
            raise ZygoteLost("the zygote is gone")
        if not self._poller.poll(math.ceil(timeout * 1000)):
            return
        while True:
            try:
                data, fds = _recv_with_fds(self.sock)
            except BlockingIOError:
                return
            except OSError as exc:
                self._mark_lost()
                raise ZygoteLost(f"reading from the zygote failed ({exc})") from exc
            try:
                if not data:
                    raise ValueError("end of file")
                self._take(Message.unpack(data), fds)
            except ValueError as exc:
                for fd in fds:
                    os.close(fd)
                self._mark_lost()
                raise ZygoteLost(f"the zygote is gone ({exc})") from exc

    def _take(self, message: Message, fds: list[int]) -> None:
        if message.kind == CHILD:
            if len(fds) != 2:
                raise ValueError("a child without its socket and pidfd")
            sock = socket.socket(fileno=fds[0])
            handle = ZygoteChild(message.pid, fds[1], self)
            self._exits[message.pid] = None
            self._ready.append(SandboxChild(pid=message.pid, sock=sock, forked_at=time.monotonic(), process=handle))
            self.children_made += 1
            return
        for fd in fds:
            os.close(fd)
        if message.kind == EXITED and message.pid in self._exits:
            cpu_ms = (message.utime_us + message.stime_us) // 1000
            self._exits[message.pid] = ChildExit(message.value, cpu_ms, message.maxrss_kb * 1024)
        elif message.kind == FAILED:
            log.warning("the zygote could not fork a sandbox child: %s", os.strerror(message.value))
            self._failed += 1

    def _mark_lost(self) -> None:
        self.lost = True

    def close(self) -> None:
        """Close the control socket (the zygote exits, its children with it) and reap the zygote."""
        self.lost = True
        while self._ready:
            self._ready.popleft().discard()
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ZygoteSource:
    """A `ChildSource` backed by a zygote: restarted when it dies, replaced by `LocalForks` for good
    after `MAX_FAILURES` failures within `FAILURE_WINDOW_SECONDS` (a job never waits on a broken one)."""

    def __init__(self) -> None:
        self.zygote: ZygoteProcess | None = None
        self.fallback: LocalForks | None = None
        self.restarts = 0
        self._pending = False
        self._failures: deque[float] = deque()

    def request(self, languages: tuple[Language, ...]) -> None:
        if self.fallback is not None:
            self.fallback.request(languages)
            return
        if self._pending:
            return
        try:
            self._running().request(languages)
            self._pending = True
        except (ZygoteLost, OSError) as exc:
            self._failed(exc)

    def take(self, languages: tuple[Language, ...]) -> SandboxChild:
        while self.fallback is None:
            try:
                zygote = self._running()
                zygote.pump()  # notice a zygote that died since the last job
                if not self._pending:
                    zygote.request(languages)
                    self._pending = True
                first = zygote.children_made == 0
                child = zygote.next_child(START_TIMEOUT_SECONDS if first else SPAWN_TIMEOUT_SECONDS)
                self._pending = False
            except (ZygoteLost, OSError) as exc:
                self._failed(exc)
                continue
            if not child.handle.has_exited():
                return child
            child.discard()  # killed while it waited: ask for another
        return self.fallback.take(languages)

    def _running(self) -> ZygoteProcess:
        if self.zygote is None:
            self.zygote = ZygoteProcess()
            log.info("started sandbox zygote %d", self.zygote.pid)
        return self.zygote

    def _failed(self, exc: BaseException) -> None:
        self._pending = False
        zygote, self.zygote = self.zygote, None
        if zygote is not None:
            log.warning("sandbox zygote %d lost (%s); restarting it", zygote.pid, exc)
            zygote.close()
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and self._failures[0] < now - FAILURE_WINDOW_SECONDS:
            self._failures.popleft()
        if len(self._failures) >= MAX_FAILURES:
            log.error("sandbox zygote failed %d times in %.0f s; forking children in the worker from now on",
                      len(self._failures), FAILURE_WINDOW_SECONDS)  # fmt: skip
            prewarm()
            self.fallback = LocalForks()
        else:
            self.restarts += 1

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
        if self.fallback is not None:
            self.fallback.close()


__all__ = ["ZygoteChild", "ZygoteLost", "ZygoteProcess", "ZygoteSource"]
