"""The job's private scratch directory: created empty per job, the only place Landlock lets it write.

Layout: `<root>/worker-<worker pid>/job-<child pid>`. The root (default `$TMPDIR/scriptpool-scratch-<uid>`)
and each worker's base are mode 0700, owned by us and not symlinks, checked before use; a root that
fails the check is replaced by a fresh private temporary directory. Each worker (and its zygote and
children) uses only its own base, so one stack's scratch never reaches another's: no other stack
lists, sweeps or removes it (a dead worker's base is removed by the next worker that starts).

The child empties its directory when the job ends (Landlock lets it remove what is inside, not the
directory itself); the zygote removes it when it reaps the child; without a zygote the next spare
child removes the directories of children that are gone, including those killed mid-job.

Removal is iterative and descriptor-based: it never recurses (a tree thousands of levels deep is just
a longer loop), holds at most three descriptors (it fits the child's RLIMIT_NOFILE), opens every
directory with O_NOFOLLOW beneath its parent's descriptor (a symlink is removed, never followed),
checks that `..` is the directory it came from, makes an unreadable or unwritable directory of ours
usable before entering it, and stops after `REMOVE_STEP_LIMIT` entries. It never raises: a tree it
cannot remove is logged and reported as False (a reused child is then retired, `sandbox/child.py`).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import stat
import tempfile

log = logging.getLogger(__name__)

DEFAULT_SCRATCH_ROOT = os.path.join(tempfile.gettempdir(), f"scriptpool-scratch-{os.geteuid()}")
"""Where the workers of this user make their scratch bases (one directory per worker)."""
REMOVE_STEP_LIMIT = 1_000_000
"""Most directory entries one removal visits before it gives up (jobs may create far fewer:
`scriptpool.sandbox.limits.ScratchBounds`); what is left is logged and, in a reused child, retires it."""
_PREFIX = "job-"
_WORKER_PREFIX = "worker-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_base: str | None = None
"""This process's scratch base: set by `use_base` (the zygote, from its worker), else made on first
use by `base()` (the worker) and inherited by the children it forks."""


class _Unsafe(Exception):
    """The tree changed under the removal (a `..` that is not where it came from): stop."""


def is_private(path: str) -> bool:
    """A directory (not a symlink) owned by us that no one else may read, write or enter."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def private_root(root: str = DEFAULT_SCRATCH_ROOT) -> str:
    """`root`, created mode 0700 if missing; if it is not ours and private (a symlink, another
    user's, group- or world-accessible), a fresh private temporary directory instead."""
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("cannot create the scratch root %s (%s)", root, exc.strerror)
    if is_private(root):
        return root
    replacement = tempfile.mkdtemp(prefix="scriptpool-scratch-")
    log.warning("scratch root %s is not a private directory of ours; using %s instead", root, replacement)
    return replacement


def make_worker_base(root: str = DEFAULT_SCRATCH_ROOT, pid: int | None = None) -> str:
    """A fresh, private base for one worker under `root`, after removing the bases of dead workers."""
    checked = private_root(root)
    sweep(checked, _WORKER_PREFIX)
    path = os.path.join(checked, f"{_WORKER_PREFIX}{pid if pid is not None else os.getpid()}")
    if os.path.lexists(path):  # left by a dead worker whose pid we now have
        remove(path)
    os.mkdir(path, 0o700)
    if not is_private(path):
        raise OSError(errno.EPERM, f"the scratch base {path} is not a private directory of ours")
    return path


def use_base(path: str) -> None:
    """Make `path` (a worker's base, checked to be ours and private) this process's scratch base."""
    global _base
    if not is_private(path):
        raise OSError(errno.EPERM, f"the scratch base {path} is not a private directory of ours")
    _base = path


def base() -> str:
    """This process's scratch base, made now (and removed when the process exits) if none was set."""
    global _base
    if _base is None:
        _base = make_worker_base()
        atexit.register(_remove_own_base, _base, os.getpid())
    return _base


def _remove_own_base(path: str, owner: int) -> None:
    if os.getpid() == owner:  # never in a forked child (they _exit anyway)
        remove(path)


def path_for(base_dir: str, pid: int) -> str:
    return os.path.join(base_dir, f"{_PREFIX}{pid}")


def create(base_dir: str) -> str:
    """Create an empty, private scratch directory for the calling process and return its path."""
    if not is_private(base_dir):
        raise OSError(errno.EPERM, "the scratch base is not a private directory of ours")
    path = path_for(base_dir, os.getpid())
    if os.path.lexists(path) and not remove(path):  # left by a dead process whose pid we now have
        raise OSError(errno.ENOTEMPTY, "a scratch directory left by a dead process could not be removed")
    os.mkdir(path, 0o700)
    return path


def remove(path: str) -> bool:
    """Remove `path` (a file, symlink or whole tree) without following symlinks. Never raises;
    False (logged) if something is left."""
    parent, name = os.path.split(path)
    try:
        parent_fd = os.open(parent or ".", _DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        return not os.path.lexists(path)
    try:
        return _remove_entry(parent_fd, name)
    except FileNotFoundError:
        return True
    except (OSError, _Unsafe) as exc:
        log.warning("could not remove scratch %s: %s", path, exc)
        return False
    finally:
        os.close(parent_fd)


def empty(path: str) -> bool:
    """Remove everything inside `path` (works under Landlock, which does not let the job remove
    `path`), then check that it is empty. Never raises; False (logged) if anything is left."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        log.warning("could not open scratch %s: %s", path, exc)
        return False
    try:
        if not os.listdir(fd):  # the usual case: nothing to remove
            return True
        removed = _remove_contents(fd)
        return removed and not os.listdir(fd)
    except (OSError, _Unsafe) as exc:
        log.warning("could not empty scratch %s: %s", path, exc)
        return False
    finally:
        os.close(fd)


def is_empty(path: str) -> bool:
    """Whether `path` is a directory (not a symlink) with nothing in it."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return False
    try:
        return not os.listdir(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove_entry(parent_fd: int, name: str) -> bool:
    info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return True
    fd = _open_dir(name, parent_fd)
    try:
        complete = _remove_contents(fd)
    finally:
        os.close(fd)
    if complete:
        os.rmdir(name, dir_fd=parent_fd)
    return complete


def _open_dir(name: str, parent_fd: int) -> int:
    """Open a subdirectory (never a symlink); one we may not read or enter is made 0700 first."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)  # the directory itself, whatever its name is now
        finally:
            os.close(path_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _remove_contents(top_fd: int) -> bool:
    """Remove everything beneath the open directory `top_fd`, depth first, without recursion.

    Holds the current directory's descriptor (plus scandir's and, going up, its parent's); the names
    and identities of the directories above it are kept in lists. True when nothing is left."""
    steps = [REMOVE_STEP_LIMIT]
    names: list[str] = []
    ancestry = [_identity(os.fstat(top_fd))]
    skipped: set[tuple[int, int]] = set()
    complete = True
    fd = os.dup(top_fd)
    try:
        while True:
            subdir = _clear_files(fd, steps, skipped)
            if subdir is not None:
                try:
                    next_fd = _open_dir(subdir[0], fd)
                except FileNotFoundError:
                    continue
                except OSError:
                    skipped.add(subdir[1])
                    complete = False
                    continue
                os.close(fd)
                fd = next_fd
                names.append(subdir[0])
                ancestry.append(_identity(os.fstat(fd)))
                continue
            if steps[0] < 0:
                log.warning("scratch removal stopped after %d entries", REMOVE_STEP_LIMIT)
                return False
            if not names:
                return complete
            parent_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            if _identity(os.fstat(parent_fd)) != ancestry[-2]:
                os.close(parent_fd)
                raise _Unsafe("a directory was moved while its scratch tree was being removed")
            os.close(fd)
            fd = parent_fd
            name, identity = names.pop(), ancestry.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError:
                skipped.add(identity)
                complete = False
    finally:
        os.close(fd)


def _clear_files(fd: int, steps: list[int], skipped: set[tuple[int, int]]) -> tuple[str, tuple[int, int]] | None:
    """Remove the files, symlinks and empty directories in `fd`; return the first non-empty
    subdirectory to descend into (name, identity), or None when none is left (or out of steps)."""
    with os.scandir(fd) as entries:
        for entry in entries:
            steps[0] -= 1
            if steps[0] < 0:
                return None
            if not entry.is_dir(follow_symlinks=False):
                _unlink(entry.name, fd)
                continue
            identity = _identity(entry.stat(follow_symlinks=False))
            if identity in skipped:
                continue
            try:
                os.rmdir(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == errno.EACCES and _make_writable(fd):
                    return entry.name, identity  # look again with write permission
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return entry.name, identity
                skipped.add(identity)
    return None


def _unlink(name: str, fd: int) -> None:
    """Remove a non-directory; one that cannot be removed stays (its directory's rmdir then fails)."""
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except PermissionError:  # a directory of ours without write permission
        try:
            if _make_writable(fd):
                os.unlink(name, dir_fd=fd)
        except OSError:
            pass
    except OSError:
        pass


def _make_writable(fd: int) -> bool:
    info = os.fstat(fd)
    if info.st_mode & 0o700 == 0o700:
        return False
    os.fchmod(fd, 0o700)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(base_dir: str, prefix: str = _PREFIX) -> int:
    """Remove the `<prefix><pid>` entries of processes that no longer exist. Returns how many.
    Never raises: what cannot be removed is logged and left."""
    try:
        names = os.listdir(base_dir)
    except OSError:
        return 0
    removed = 0
    for name in names:
        pid = name.removeprefix(prefix)
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            removed += remove(os.path.join(base_dir, name))
    return removed
