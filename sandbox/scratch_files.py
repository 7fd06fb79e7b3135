"""`Artifact.storeFile` / `Artifact.saveToFile` inside the sandbox: files in the job's scratch directory.

The file I/O happens here, in the jailed child (Landlock confines it to the scratch directory), never
in the worker: a path the script controls must not be opened by an unjailed process. Paths are
relative to the scratch directory; absolute paths, `..`, `~`, NUL and symlinks (at any component)
are refused with PERMISSION_DENIED. Everything else is passed through to the wrapped host.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from scriptpool.values import PlainValue

from sandbox.host import GlobalHost

STORE_FILE = "Artifact.storeFile"
SAVE_TO_FILE = "Artifact.saveToFile"
MAX_PATH = 4096


def scratch_parts(path: PlainValue, op: str) -> list[str]:
    """The components of a path that stays inside the scratch directory, or a clear refusal."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{op}: path must be a non-empty string")
    if len(path) > MAX_PATH:
        raise InvalidArgument(f"{op}: path is longer than {MAX_PATH} characters")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if "\x00" in path or path.startswith(("/", "~")) or ".." in parts or not parts:
        raise PermissionDenied(f"{op}: path {path!r} leaves the job's scratch directory; use a relative path inside it")
    return parts


class ScratchFileHost:
    """A GlobalHost that performs the two file operations itself and forwards every other call."""

    def __init__(self, inner: GlobalHost, scratch_dir: str | None, max_file_bytes: int) -> None:
        self.inner = inner
        self.scratch_dir = scratch_dir
        self.max_file_bytes = max_file_bytes

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        if op == STORE_FILE:
            return self.store_file(args)
        if op == SAVE_TO_FILE:
            return self.save_to_file(args)
        return self.inner.call(op, args)

    def _root(self, op: str) -> str:
        if self.scratch_dir is None:
            raise FailedPrecondition(f"{op}: this job has no scratch directory (the sandbox jail did not create one)")
        return self.scratch_dir

    def store_file(self, args: list[PlainValue]) -> PlainValue:
        session_id = args[0] if args else None
        parts = scratch_parts(args[1] if len(args) > 1 else None, STORE_FILE)
        metadata = args[2] if len(args) > 2 and args[2] is not None else {}
        if not isinstance(metadata, dict):
            raise InvalidArgument(f"{STORE_FILE}: metadata must be a table/map")
        with _open_beneath(self._root(STORE_FILE), parts, os.O_RDONLY, STORE_FILE) as fd:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PermissionDenied(f"{STORE_FILE}: {'/'.join(parts)!r} is not a regular file")
            if info.st_size > self.max_file_bytes:
                raise ResourceExhausted(
                    f"{STORE_FILE}: the file is {info.st_size} bytes; this job may write {self.max_file_bytes}"
                )
            content = _read_all(fd, self.max_file_bytes)
        meta = dict(metadata)
        kind = meta.pop("type", None) or "binary"
        meta.setdefault("name", parts[-1])
        return self.inner.call("Artifact.store", [session_id, {"content": content, "type": kind, "metadata": meta}])

    def save_to_file(self, args: list[PlainValue]) -> PlainValue:
        session_id = args[0] if args else None
        artifact_id = args[1] if len(args) > 1 else None
        parts = scratch_parts(args[2] if len(args) > 2 else None, SAVE_TO_FILE)
        root = self._root(SAVE_TO_FILE)
        content = self.inner.call("Artifact.getContent", [session_id, artifact_id])
        data = content.encode("utf-8") if isinstance(content, str) else content
        if not isinstance(data, bytes):
            raise InvalidArgument(f"{SAVE_TO_FILE}: the artifact's content is not text or bytes")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        with _open_beneath(root, parts, flags, SAVE_TO_FILE, make_parents=True) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        return "/".join(parts)


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise ResourceExhausted(f"{STORE_FILE}: the file grew past {limit} bytes while being read")
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def _open_beneath(root: str, parts: list[str], flags: int, op: str, make_parents: bool = False) -> Iterator[int]:
    """Open root/parts... one component at a time with O_NOFOLLOW, so no symlink is ever followed."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            if make_parents:
                try:
                    os.mkdir(part, 0o700, dir_fd=dir_fd)
                except FileExistsError:
                    pass
            next_fd = _open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd, op, parts)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = _open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd, op, parts)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _open(name: str, flags: int, dir_fd: int, op: str, parts: list[str]) -> int:
    shown = "/".join(parts)
    try:
        return os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotFound(f"{op}: {shown!r} does not exist in the job's scratch directory") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise PermissionDenied(f"{op}: {shown!r} goes through a symlink or non-directory") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"{op}: {shown!r} is not accessible in the sandbox") from None
        raise InvalidArgument(f"{op}: cannot open {shown!r} ({os.strerror(exc.errno or 0)})") from None
