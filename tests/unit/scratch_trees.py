"""Scratch trees no cleanup may choke on, planted by tests (a job can no longer make them itself)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

DEEP_LEVELS = 3000
"""Far past Python's recursion limit (1000) and PATH_MAX (a path this deep is ~6000 characters)."""
_DIR = os.O_RDONLY | os.O_DIRECTORY


def plant_deep_tree(root: Path, levels: int = DEEP_LEVELS) -> None:
    """root/deep/d/d/.../d/leaf.txt, built one level at a time through descriptors."""
    fd = os.open(root, _DIR)
    try:
        for name in ["deep"] + ["d"] * (levels - 1):
            os.mkdir(name, 0o700, dir_fd=fd)
            next_fd = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(leaf, b"left behind")
        os.close(leaf)
    finally:
        os.close(fd)


def plant_pathological_tree(root: Path, outside: Path, levels: int = DEEP_LEVELS) -> list[Path]:
    """A deep tree, an unreadable directory, a read-only one, a wide one, a FIFO and symlinks that
    point outside. Returns the outside paths (with their content) that cleanup must leave alone."""
    plant_deep_tree(root, levels)
    (root / "locked").mkdir()
    (root / "locked" / "inner").mkdir()
    (root / "locked" / "inner" / "file").write_bytes(b"x")
    (root / "locked" / "inner").chmod(0)
    (root / "locked").chmod(0)
    (root / "readonly").mkdir()
    (root / "readonly" / "file").write_bytes(b"x")
    (root / "readonly").chmod(0o500)
    wide = root / "wide"
    wide.mkdir()
    for index in range(500):
        (wide / f"f{index}").write_bytes(b"")
    os.mkfifo(root / "fifo")
    outside.mkdir(exist_ok=True)
    canary = outside / "canary.txt"
    canary.write_text("keep me")
    (outside / "dir").mkdir(exist_ok=True)
    (outside / "dir" / "keep.txt").write_text("keep me too")
    os.symlink(canary, root / "file-link")
    os.symlink(outside / "dir", root / "dir-link")
    os.symlink(outside, root / "locked-link")
    return [canary, outside / "dir" / "keep.txt"]


def run_in_child(action: Callable[[], object]) -> object:
    """Run `action` in a forked child; return what it returned (JSON) or the exception's type name."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child always _exits
        try:
            os.close(read_fd)
            try:
                outcome: object = {"value": action()}
            except BaseException as exc:
                outcome = {"raised": type(exc).__name__}
            os.write(write_fd, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        raw = reader.read()
    os.waitpid(pid, 0)
    return json.loads(raw)
