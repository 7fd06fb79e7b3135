"""A stand-in sandbox child that ignores its own limits, for testing the worker's enforcement alone.

A real child stops itself at its output and call limits and its engine checks CPU time, so the
worker's own checks (workers/supervision/supervisor.py) are never reached by a real job. This process speaks
the real frame protocol over the socketpair it is given, but does what a compromised child would:
it floods output or global calls past the job's limits, spins on the CPU, or sleeps past the wall
deadline. It has no jail and no rlimits: only the worker can stop it. If the worker does not, it
gives up after `GIVE_UP_SECONDS` (spinning: `GIVE_UP_CPU_SECONDS` of CPU) and exits without a
result (the test then fails, without hanging).

Run as `python -m tests.unit.fake_child MODE FD READY_FD` (`spawn_fake_child` does that).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import NoReturn

from scriptpool.sandbox import framing
from scriptpool.v1 import sandbox_pb2

GIVE_UP_SECONDS = 20.0
GIVE_UP_CPU_SECONDS = 10.0
CHUNK = "x" * 1000
READY = "fake child: got the job\n"
"""The first output frame of every mode: the readiness handshake (the job reached the child)."""

MODES = ("output", "calls", "spin", "sleep")


def _send_output(sock: socket.socket, text: str) -> None:
    frame = sandbox_pb2.ChildFrame()
    frame.output = text
    framing.send(sock, frame)


def _flood_output(sock: socket.socket, job: sandbox_pb2.ChildJob) -> None:
    for _ in range(3 * job.limits.output_bytes // len(CHUNK) + 1):
        _send_output(sock, CHUNK)


def _flood_calls(sock: socket.socket, job: sandbox_pb2.ChildJob) -> None:
    for call_id in range(1, 3 * job.limits.max_global_calls + 2):
        frame = sandbox_pb2.ChildFrame()
        frame.call.call_id = call_id
        frame.call.op = "State.get"
        framing.send(sock, frame)
        framing.recv(sock, sandbox_pb2.WorkerFrame)  # like the real child: wait for each reply


def _spin() -> None:
    while time.process_time() < GIVE_UP_CPU_SECONDS:
        pass


def main(mode: str, fd: int, ready_fd: int) -> NoReturn:
    give_up = time.monotonic() + GIVE_UP_SECONDS
    sock = socket.socket(fileno=fd)
    os.write(ready_fd, b"r")  # started and about to wait for the job
    os.close(ready_fd)
    job = framing.recv(sock, sandbox_pb2.WorkerFrame).job
    _send_output(sock, READY)
    try:
        if mode == "output":
            _flood_output(sock, job)
        elif mode == "calls":
            _flood_calls(sock, job)
        elif mode == "spin":
            _spin()
        sock.settimeout(max(give_up - time.monotonic(), 0.001))
        sock.recv(1)  # "sleep": nothing will come; only a kill or the give-up ends this
    except (OSError, EOFError):
        pass
    # Exit at once, the socket still open: closing it first (as the interpreter's shutdown would)
    # lets the worker see EOF and SIGKILL a process that then looks killed for its CPU use.
    os._exit(0)


def spawn_fake_child(mode: str, fd: int) -> int:
    """Start the fake child on the child's end `fd` of a socketpair; return its pid once it has
    started and waits for its job (so a job's wall time is not spent on the interpreter starting)."""
    assert mode in MODES
    ready_read, ready_write = os.pipe()
    os.set_inheritable(fd, True)
    os.set_inheritable(ready_write, True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "tests.unit.fake_child", mode, str(fd), str(ready_write)]
    try:
        pid = os.posix_spawn(sys.executable, argv, env)
    finally:
        os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        assert ready.read(1) == b"r", "the fake child did not start"
    return pid


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
