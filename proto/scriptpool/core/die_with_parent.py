"""Start a helper process that gets SIGTERM when the process that started it dies.

`die_with_parent(args)` is a command line that sets `PR_SET_PDEATHSIG` (which survives `exec`) and
then execs `args`, so a benchmark's or a test's Redis, coordinator and workers end with it even when
it is killed without a chance to stop them (SIGKILL, a test timeout). The signal follows the
*thread* that started the process: start such processes from a thread that lives as long as they
should (the main thread).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
_PRELUDE = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)  # the parent died before the prctl: do not start orphaned\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent(args: Sequence[str]) -> list[str]:
    """`args` as a command that ends (SIGTERM) when the calling process's thread ends."""
    return [sys.executable, "-c", _PRELUDE, str(os.getpid()), *args]
