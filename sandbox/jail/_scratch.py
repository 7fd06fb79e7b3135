"""The job's private scratch directory: created empty per job, the only place Landlock lets it write.

Its path is `<base>/job-<child pid>`, so it is unique among live children. The child empties it when
the job ends (Landlock lets it remove what is inside, not the directory itself); the next spare
child, before any job reaches it, removes the directories of children that are gone, including
those of children that were killed mid-job.
"""

from __future__ import annotations

import os
import shutil

DEFAULT_SCRATCH_BASE = "/tmp/scriptpool-scratch"
_PREFIX = "job-"


def path_for(base: str, pid: int) -> str:
    return os.path.join(base, f"{_PREFIX}{pid}")


def create(base: str) -> str:
    """Create an empty, private scratch directory for the calling process and return its path."""
    os.makedirs(base, mode=0o700, exist_ok=True)
    path = path_for(base, os.getpid())
    if os.path.lexists(path):  # left by a dead process whose pid we now have
        remove(path)
    os.mkdir(path, 0o700)
    return path


def remove(path: str) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=True)


def empty(path: str) -> None:
    """Remove everything inside `path` (works under Landlock, which does not let the job remove `path`)."""
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        remove(os.path.join(path, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(base: str) -> int:
    """Remove the scratch directories of processes that no longer exist. Returns how many."""
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    removed = 0
    for name in names:
        pid = name.removeprefix(_PREFIX)
        if name.startswith(_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            remove(os.path.join(base, name))
            removed += 1
    return removed
