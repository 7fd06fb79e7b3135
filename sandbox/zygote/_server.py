"""The zygote process: holds the warm sandbox engines (no grpc, Redis or RQ) and forks the worker's
sandbox children on request, off the worker's thread.

It is started by the worker (`python -m scriptpool.sandbox.zygote FD PARENT_PID SCRATCH_BASE`) with one end of
a SOCK_SEQPACKET socketpair, and uses the worker's private scratch base (checked to be ours). For each
`SPAWN` it forks a child (`scriptpool.sandbox.forking`), opens a pidfd for it and passes the child's socket and
the pidfd to the worker; it reaps every child itself, removes its scratch directory (a failure is
logged, never fatal) and reports its wait status and rusage. It dies with its worker:
PR_SET_PDEATHSIG, and EOF on the control socket.
SIGINT and SIGTERM are ignored (a worker draining its last job on SIGTERM still needs its zygote);
its children get SIGKILL when it dies.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import signal
import socket
from typing import NoReturn

from scriptpool.sandbox.forking import PR_SET_PDEATHSIG, fork_sandbox_child
from scriptpool.sandbox.jail import become_cleaning_parent, child_exited, use_scratch_base
from scriptpool.sandbox.zygote._protocol import CHILD, EXITED, FAILED, SIZE, SPAWN, Message, languages_from_mask

log = logging.getLogger(__name__)
_LIBC = ctypes.CDLL(None)


class Zygote:
    """The zygote's loop: spawn requests on the control socket, SIGCHLD through a wakeup fd."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> None:
        """Run until the worker closes its end of the control socket."""
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wakeup_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self.wakeup_r:
                    self._drain_wakeup()
                    self._reap()
                elif not self._handle_request():
                    return

    def _handle_request(self) -> bool:
        try:
            data = self.control.recv(SIZE)
        except ConnectionError:
            return False
        if not data:
            return False
        request = Message.unpack(data)
        if request.kind == SPAWN:
            self._spawn(request.value)
        return True

    def _in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.wakeup_r, self.wakeup_w, self.control.fileno()):
            os.close(fd)

    def _spawn(self, mask: int) -> None:
        try:
            pid, sock = fork_sandbox_child(languages_from_mask(mask), self._in_child)
        except OSError as exc:
            self._send(Message(FAILED, value=exc.errno or errno.EAGAIN))
            return
        try:
            pidfd = os.pidfd_open(pid)  # before any reaping: it names exactly this child
        except OSError:
            os.kill(pid, signal.SIGKILL)
            sock.close()
            self._send(Message(FAILED, value=errno.ESRCH))
            return
        try:
            socket.send_fds(self.control, [Message(CHILD, pid=pid).pack()], [sock.fileno(), pidfd])
        finally:
            sock.close()
            os.close(pidfd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._remove_scratch(pid)
            self._send(
                Message(
                    EXITED,
                    pid=pid,
                    value=status,
                    utime_us=int(usage.ru_utime * 1e6),
                    stime_us=int(usage.ru_stime * 1e6),
                    maxrss_kb=usage.ru_maxrss,
                )
            )

    def _remove_scratch(self, pid: int) -> None:
        """Cleanup never stops the zygote: a tree it cannot remove is logged and left."""
        try:
            child_exited(pid)
        except Exception:
            log.exception("zygote: removing the scratch directory of child %d failed", pid)

    def _send(self, message: Message) -> None:
        try:
            self.control.send(message.pack())
        except OSError:
            pass  # the worker is gone; the next recv sees EOF

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except BlockingIOError:
            pass


def _die_with(parent: int) -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(1)


def main(argv: list[str]) -> NoReturn:
    """`python -m scriptpool.sandbox.zygote CONTROL_FD PARENT_PID [SCRATCH_BASE]`: never returns."""
    control_fd, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    if len(argv) > 2:
        use_scratch_base(argv[2])  # refused (the zygote exits) unless a private directory of ours
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    from scriptpool.sandbox.zygote._warm import warm_engines

    try:
        warm_engines()
    except Exception:
        log.exception("zygote: warming the engines failed; children will warm up themselves")
    try:
        become_cleaning_parent()
    except Exception:
        log.exception("zygote: sweeping the scratch base failed; serving anyway")
    Zygote(control).serve()
    os._exit(0)
