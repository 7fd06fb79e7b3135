"""Fork one sandbox child: the only place that knows how a child is started.

Used by the zygote (`scriptpool.sandbox.zygote`) and by the worker when it forks children itself. The child
waits for one job on its end of a socketpair (see `scriptpool.sandbox.child.child_main`).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
from collections.abc import Callable

from scriptpool.languages import Language
from scriptpool.sandbox.child import child_main
from scriptpool.sandbox.jail import scratch_base
from scriptpool.sandbox.runner import DEFAULT_WARM_UP

PR_SET_PDEATHSIG = 1
ORPHANED_EXIT_CODE = 4
_LIBC = ctypes.CDLL(None)


def fork_sandbox_child(
    warm_languages: tuple[Language, ...] = DEFAULT_WARM_UP,
    in_child: Callable[[], None] = lambda: None,
) -> tuple[int, socket.socket]:
    """Fork a child that waits for one job; return its pid and the parent's end of its socket.

    Signals are blocked across the fork. The child gets SIGKILL when this process dies
    (PR_SET_PDEATHSIG, checked against a parent that died before it was set). `in_child` runs first
    in the child, to drop what the forking process holds that the child must not (its own sockets).
    """
    scratch_base()  # the base is this process's (made now if need be), inherited by the child
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    gc.freeze()  # keep the collector off inherited objects: fewer copy-on-write page faults in the child
    parent = os.getpid()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which always _exits
            try:
                parent_sock.close()
                in_child()
                _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:
                    os._exit(ORPHANED_EXIT_CODE)
            finally:
                child_main(child_sock, warm_languages)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    child_sock.close()
    return pid, parent_sock


__all__ = ["ORPHANED_EXIT_CODE", "fork_sandbox_child"]
