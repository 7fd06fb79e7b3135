"""`Artifact.storeFile` / `Artifact.saveToFile` inside the sandbox: files in the job's scratch directory.

The file I/O happens here, in the jailed child (Landlock confines it to the scratch directory), never
in the worker: a path the script controls must not be opened by an unjailed process. Paths are
relative to the scratch directory; absolute paths, `..`, `~`, NUL and symlinks (at any component)
are refused with PERMISSION_DENIED. Everything else is passed through to the wrapped host.

What one job may write is bounded here, per job (the host object lives for one job): paths at most
`ScratchBounds.max_depth` components deep (INVALID_ARGUMENT), at most `ScratchBounds.max_entries`
files and directories created (RESOURCE_EXHAUSTED) and at most the job's `artifact_bytes` written in
all (RESOURCE_EXHAUSTED, checked before anything is written). RLIMIT_FSIZE stays the OS backstop per
file: a write past it fails with EFBIG (SIGXFSZ is ignored in the child), reported the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from scriptpool.sandbox.host import GlobalHost
from scriptpool.sandbox.limits import SCRATCH_BOUNDS, ScratchBounds
from scriptpool.values import PlainValue

STORE_FILE = "Artifact.storeFile"
SAVE_TO_FILE = "Artifact.saveToFile"
MAX_PATH = 4096


def store_file_options(args: list[PlainValue]) -> tuple[str | None, dict[str, PlainValue]]:
    """storeFile(session_id, path [, metadata]) or rs-llmspell's storeFile(session_id, path, type
    [, metadata]): the type (None: from `metadata.type`, else binary) and the metadata map."""
    third = args[2] if len(args) > 2 else None
    kind: str | None = None
    if isinstance(third, str):
        kind, metadata = third or None, args[3] if len(args) > 3 and args[3] is not None else {}
    else:
        metadata = third if third is not None else {}
        if len(args) > 3 and args[3] is not None:
            raise InvalidArgument(f"{STORE_FILE}: the type (3rd argument) must be a string when metadata follows it")
    if not isinstance(metadata, dict):
        raise InvalidArgument(f"{STORE_FILE}: metadata must be a table/map")
    given = metadata.get("type")
    if kind is not None and given is not None and given != kind:
        raise InvalidArgument(f"{STORE_FILE}: type {kind!r} and metadata.type {given!r} disagree")
    return kind, metadata


def scratch_parts(path: PlainValue, op: str, max_depth: int = SCRATCH_BOUNDS.max_depth) -> list[str]:
    """The components of a path that stays inside the scratch directory, or a clear refusal."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{op}: path must be a non-empty string")
    if len(path) > MAX_PATH:
        raise InvalidArgument(f"{op}: path is longer than {MAX_PATH} characters")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if "\x00" in path or path.startswith(("/", "~")) or ".." in parts or not parts:
        raise PermissionDenied(f"{op}: path {path!r} leaves the job's scratch directory; use a relative path inside it")
    if len(parts) > max_depth:
        raise InvalidArgument(f"{op}: the path has {len(parts)} components; scratch paths may have at most {max_depth}")
    return parts


class ScratchFileHost:
    """A GlobalHost that performs the two file operations itself and forwards every other call.
    One per job: it counts what the job has written to its scratch directory."""

    def __init__(
        self,
        inner: GlobalHost,
        scratch_dir: str | None,
        max_file_bytes: int,
        bounds: ScratchBounds = SCRATCH_BOUNDS,
    ) -> None:
        self.inner = inner
        self.scratch_dir = scratch_dir
        self.max_file_bytes = max_file_bytes
        """The job's `artifact_bytes`: the most one file may hold, and all its scratch writes together."""
        self.bounds = bounds
        self.bytes_written = 0
        self.entries_created = 0

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
        parts = scratch_parts(args[1] if len(args) > 1 else None, STORE_FILE, self.bounds.max_depth)
        kind, metadata = store_file_options(args)
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
        artifact_type: PlainValue = meta.pop("type", None) or kind or "binary"
        meta.setdefault("name", parts[-1])
        spec: PlainValue = {"content": content, "type": artifact_type, "metadata": meta}
        return self.inner.call("Artifact.store", [session_id, spec])

    def save_to_file(self, args: list[PlainValue]) -> PlainValue:
        session_id = args[0] if args else None
        artifact_id = args[1] if len(args) > 1 else None
        parts = scratch_parts(args[2] if len(args) > 2 else None, SAVE_TO_FILE, self.bounds.max_depth)
        root = self._root(SAVE_TO_FILE)
        content = self.inner.call("Artifact.getContent", [session_id, artifact_id])
        data = content.encode("utf-8") if isinstance(content, str) else content
        if not isinstance(data, bytes):
            raise InvalidArgument(f"{SAVE_TO_FILE}: the artifact's content is not text or bytes")
        if self.bytes_written + len(data) > self.max_file_bytes:
            raise ResourceExhausted(
                f"{SAVE_TO_FILE}: writing {len(data)} bytes would bring this job's scratch files to "
                f"{self.bytes_written + len(data)} bytes; its limit (artifact_bytes) is {self.max_file_bytes} bytes"
            )
        with _open_beneath(root, parts, os.O_WRONLY | os.O_TRUNC, SAVE_TO_FILE, self._count_entry) as fd:
            view = memoryview(data)
            try:
                while view:
                    written = os.write(fd, view)
                    self.bytes_written += written
                    view = view[written:]
            except OSError as exc:
                _truncate(fd)
                raise self._write_error(exc, parts) from None
        return "/".join(parts)

    def _count_entry(self) -> None:
        """Called before the job creates a file or directory: refused past the bound."""
        if self.entries_created >= self.bounds.max_entries:
            raise ResourceExhausted(
                f"{SAVE_TO_FILE}: this job has created {self.entries_created} files and directories "
                f"in its scratch directory; the limit is {self.bounds.max_entries}"
            )
        self.entries_created += 1

    def _write_error(self, exc: OSError, parts: list[str]) -> ResourceExhausted | InvalidArgument:
        shown = "/".join(parts)
        if exc.errno == errno.EFBIG:
            return ResourceExhausted(
                f"{SAVE_TO_FILE}: {shown!r} would be larger than this job's file size limit "
                f"(artifact_bytes = {self.max_file_bytes} bytes)"
            )
        return _os_error(SAVE_TO_FILE, shown, exc)


def _truncate(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # no partial file left behind
    except OSError:
        pass


def _os_error(op: str, shown: str, exc: OSError) -> ResourceExhausted | InvalidArgument:
    """A failed file operation as an error for the script: a category and the OS's short reason,
    never the host exception's text."""
    reason = os.strerror(exc.errno or 0)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.EMLINK):
        return ResourceExhausted(f"{op}: no room for {shown!r} in the job's scratch directory ({reason})")
    return InvalidArgument(f"{op}: cannot write {shown!r} ({reason})")


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise ResourceExhausted(f"{STORE_FILE}: the file grew past {limit} bytes while being read")
        chunks.append(chunk)
    return b"".join(chunks)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _open_beneath(
    root: str, parts: list[str], flags: int, op: str, on_create: Callable[[], None] | None = None
) -> Iterator[int]:
    """Open root/parts... one component at a time with O_NOFOLLOW, so no symlink is ever followed.
    With `on_create`, missing directories and the file are created, each after `on_create()` (which
    counts it, or refuses)."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = _open_dir(part, dir_fd, op, parts, on_create)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = _open_file(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd, op, parts, on_create)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _open_dir(part: str, dir_fd: int, op: str, parts: list[str], on_create: Callable[[], None] | None) -> int:
    try:
        return _open(part, _DIR_FLAGS, dir_fd, op, parts)
    except NotFound:
        if on_create is None:
            raise
    on_create()
    try:
        os.mkdir(part, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _os_error(op, "/".join(parts), exc) from None
    return _open(part, _DIR_FLAGS, dir_fd, op, parts)


def _open_file(
    name: str, flags: int, dir_fd: int, op: str, parts: list[str], on_create: Callable[[], None] | None
) -> int:
    try:
        return _open(name, flags, dir_fd, op, parts)
    except NotFound:
        if on_create is None:
            raise
    on_create()
    return _open(name, flags | os.O_CREAT | os.O_EXCL, dir_fd, op, parts)


def _open(name: str, flags: int, dir_fd: int, op: str, parts: list[str]) -> int:
    shown = "/".join(parts)
    try:
        return os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotFound(f"{op}: {shown!r} does not exist in the job's scratch directory") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PermissionDenied(f"{op}: {shown!r} goes through a symlink or non-directory") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"{op}: {shown!r} is not accessible in the sandbox") from None
        raise _os_error(op, shown, exc) from None
