"""The job's files, inside the sandbox child: `Artifact.storeFile` / `Artifact.saveToFile` and the
`File.*` operations the engines build `io.open`/`open()`/`fs` on (sandbox/catalog.py FILE_OPS).

The file I/O happens here, in the jailed child (Landlock confines it to the scratch directory), never
in the worker: a path the script controls must not be opened by an unjailed process. The job's
scratch directory is its virtual root, seen as `/`: `/data/x.txt` and `data/x.txt` are both
<scratch>/data/x.txt. A path with `..`, a leading `~` or a NUL is refused (PERMISSION_DENIED), and no
symlink is ever followed (every component is opened with O_NOFOLLOW beneath the root).

What one job may write is bounded here, per job (the host object lives for one job): paths at most
`ScratchBounds.max_depth` components deep (INVALID_ARGUMENT), at most `ScratchBounds.max_entries`
files and directories created (RESOURCE_EXHAUSTED; removing one gives nothing back), at most
`ScratchBounds.max_open_files` files open at once, and at most the job's `artifact_bytes` written in
all, over every file and every write (RESOURCE_EXHAUSTED, checked before the bytes are written; a
rewrite counts again). One read returns at most the job's `memory_bytes`. RLIMIT_FSIZE stays the OS
backstop per file: a write past it fails with EFBIG (SIGXFSZ is ignored in the child), reported the
same way.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

from scriptpool.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from scriptpool.sandbox.catalog import FILE_OP_PREFIX
from scriptpool.sandbox.host import GlobalHost
from scriptpool.sandbox.limits import SCRATCH_BOUNDS, ScratchBounds
from scriptpool.values import PlainValue

STORE_FILE = "Artifact.storeFile"
SAVE_TO_FILE = "Artifact.saveToFile"
MAX_PATH = 4096
TEXT_TYPES = ("text", "code")
"""storeFile stores a file of these types as text when it is valid UTF-8 (it reads back as a string)."""


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


def scratch_parts(
    path: PlainValue, op: str, max_depth: int = SCRATCH_BOUNDS.max_depth, allow_root: bool = False
) -> list[str]:
    """The components of a path inside the job's root (its scratch directory, seen as `/`), or a
    clear refusal. A leading `/` is the root itself; `..`, `~` and NUL are refused."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{op}: path must be a non-empty string")
    if len(path) > MAX_PATH:
        raise InvalidArgument(f"{op}: path is longer than {MAX_PATH} characters")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if "\x00" in path or path.startswith("~") or ".." in parts:
        raise PermissionDenied(
            f"{op}: path {path!r} leaves the job's root (its scratch directory, seen as /); "
            "`..`, `~` and NUL are not allowed in a path"
        )
    if not parts and not allow_root:
        raise InvalidArgument(f"{op}: path {path!r} names the job's root directory, not a file")
    if len(parts) > max_depth:
        raise InvalidArgument(f"{op}: the path has {len(parts)} components; scratch paths may have at most {max_depth}")
    return parts


_MODES = {
    # mode: (os flags, creates, readable, writable)
    "r": (os.O_RDONLY, False, True, False),
    "w": (os.O_WRONLY | os.O_TRUNC, True, False, True),
    "a": (os.O_WRONLY | os.O_APPEND, True, False, True),
    "x": (os.O_WRONLY, True, False, True),
    "r+": (os.O_RDWR, False, True, True),
    "w+": (os.O_RDWR | os.O_TRUNC, True, True, True),
    "a+": (os.O_RDWR | os.O_APPEND, True, True, True),
    "x+": (os.O_RDWR, True, True, True),
}
_WHENCE = {"set": os.SEEK_SET, "cur": os.SEEK_CUR, "end": os.SEEK_END}
MAX_NUMERAL = 200
"""Lua's `read("n")` reads at most this many characters of a numeral (as Lua does)."""


class _Handle:
    __slots__ = ("file", "path", "readable", "writable")

    def __init__(self, file: BinaryIO, path: str, readable: bool, writable: bool) -> None:
        self.file, self.path, self.readable, self.writable = file, path, readable, writable


class ScratchFileHost:
    """A GlobalHost that performs the file operations itself and forwards every other call.
    One per job: it counts what the job has written to its scratch directory, and `close_all`
    closes what the job left open."""

    def __init__(
        self,
        inner: GlobalHost,
        scratch_dir: str | None,
        max_file_bytes: int,
        bounds: ScratchBounds = SCRATCH_BOUNDS,
        max_read_bytes: int | None = None,
    ) -> None:
        self.inner = inner
        self.scratch_dir = scratch_dir
        self.max_file_bytes = max_file_bytes
        """The job's `artifact_bytes`: the most one file may hold, and all its scratch writes together."""
        self.max_read_bytes = max_file_bytes if max_read_bytes is None else max_read_bytes
        """The most one read may return (the job's `memory_bytes`: more could not be held anyway)."""
        self.bounds = bounds
        self.bytes_written = 0
        self.entries_created = 0
        self._handles: dict[int, _Handle] = {}
        self._next_handle = 0
        self._file_ops: dict[str, Callable[[list[PlainValue]], PlainValue]] = {
            "File.open": self.open, "File.read": self.read, "File.write": self.write, "File.seek": self.seek,
            "File.flush": self.flush, "File.close": self.close, "File.readAll": self.read_all,
            "File.writeAll": self.write_all, "File.remove": self.remove, "File.rename": self.rename,
            "File.exists": self.exists, "File.list": self.list_dir,
        }  # fmt: skip

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        if op == STORE_FILE:
            return self.store_file(args)
        if op == SAVE_TO_FILE:
            return self.save_to_file(args)
        if op.startswith(FILE_OP_PREFIX):
            handler = self._file_ops.get(op)
            if handler is None:
                raise InvalidArgument(f"{op}: no such file operation")
            return handler(args)
        return self.inner.call(op, args)

    def _root(self, op: str) -> str:
        if self.scratch_dir is None:
            raise FailedPrecondition(f"{op}: this job has no scratch directory (the sandbox jail did not create one)")
        return self.scratch_dir

    def _parts(self, path: PlainValue, op: str, allow_root: bool = False) -> list[str]:
        return scratch_parts(path, op, self.bounds.max_depth, allow_root)

    # ------------------------------------------------------------ Artifact.storeFile / saveToFile
    def store_file(self, args: list[PlainValue]) -> PlainValue:
        """storeFile(session, path [, metadata]) or storeFile(session, path, type [, metadata])
        (rs-llmspell's form). The type: the 3rd argument, else metadata.type, else "binary"."""
        session_id = args[0] if args else None
        parts = self._parts(args[1] if len(args) > 1 else None, STORE_FILE)
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
        value: PlainValue = content
        if artifact_type in TEXT_TYPES:  # a text file is stored as text: it reads back as a string
            try:
                value = content.decode("utf-8")
            except UnicodeDecodeError:
                pass
        spec: PlainValue = {"content": value, "type": artifact_type, "metadata": meta}
        return self.inner.call("Artifact.store", [session_id, spec])

    def save_to_file(self, args: list[PlainValue]) -> PlainValue:
        session_id = args[0] if args else None
        artifact_id = args[1] if len(args) > 1 else None
        parts = self._parts(args[2] if len(args) > 2 else None, SAVE_TO_FILE)
        root = self._root(SAVE_TO_FILE)
        content = self.inner.call("Artifact.getContent", [session_id, artifact_id])
        data = content.encode("utf-8") if isinstance(content, str) else content
        if not isinstance(data, bytes):
            raise InvalidArgument(f"{SAVE_TO_FILE}: the artifact's content is not text or bytes")
        self._charge(len(data), SAVE_TO_FILE)
        with _open_beneath(root, parts, os.O_WRONLY | os.O_TRUNC, SAVE_TO_FILE, self._counter(SAVE_TO_FILE)) as fd:
            view = memoryview(data)
            try:
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                _truncate(fd)
                raise self._write_error(exc, parts, SAVE_TO_FILE) from None
        return "/".join(parts)

    def _charge(self, size: int, op: str) -> None:
        """Count `size` more bytes written by the job, or refuse them all (nothing written)."""
        if self.bytes_written + size > self.max_file_bytes:
            raise ResourceExhausted(
                f"{op}: writing {size} bytes would bring this job's scratch files to "
                f"{self.bytes_written + size} bytes; its limit (artifact_bytes) is {self.max_file_bytes} bytes"
            )
        self.bytes_written += size

    def _counter(self, op: str) -> Callable[[], None]:
        def count() -> None:
            """Called before the job creates a file or directory: refused past the bound."""
            if self.entries_created >= self.bounds.max_entries:
                raise ResourceExhausted(
                    f"{op}: this job has created {self.entries_created} files and directories "
                    f"in its scratch directory; the limit is {self.bounds.max_entries}"
                )
            self.entries_created += 1

        return count

    def _write_error(self, exc: OSError, parts: list[str], op: str) -> ResourceExhausted | InvalidArgument:
        shown = "/".join(parts)
        if exc.errno == errno.EFBIG:
            return ResourceExhausted(
                f"{op}: {shown!r} would be larger than this job's file size limit "
                f"(artifact_bytes = {self.max_file_bytes} bytes)"
            )
        return _os_error(op, shown, exc)

    # ------------------------------------------------------------ File.*: handles
    def open(self, args: list[PlainValue]) -> PlainValue:
        """File.open(path, mode) -> handle (an integer). Modes r w a x r+ w+ a+ x+ ("b" ignored)."""
        op = "File.open"
        parts = self._parts(_arg(args, 0), op)
        mode = _arg(args, 1) or "r"
        if not isinstance(mode, str) or mode.replace("b", "").replace("t", "") not in _MODES:
            raise InvalidArgument(f"{op}: invalid mode {mode!r}; use r, w, a, x, r+, w+, a+ or x+ (b allowed)")
        flags, creates, readable, writable = _MODES[mode.replace("b", "").replace("t", "")]
        if len(self._handles) >= self.bounds.max_open_files:
            raise ResourceExhausted(
                f"{op}: this job has {len(self._handles)} files open; the limit is {self.bounds.max_open_files}"
            )
        exclusive = "x" in mode
        on_create = self._counter(op) if creates else None
        fd = _open_fd(self._root(op), parts, flags, op, on_create, exclusive)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionDenied(f"{op}: {'/'.join(parts)!r} is not a regular file")
            file_mode = "r+b" if readable and writable else ("rb" if readable else "wb")
            file = cast(BinaryIO, open(fd, file_mode, buffering=64 * 1024, closefd=True))
        except BaseException:
            os.close(fd)
            raise
        self._next_handle += 1
        self._handles[self._next_handle] = _Handle(file, "/" + "/".join(parts), readable, writable)
        return self._next_handle

    def _handle(self, args: list[PlainValue], op: str) -> _Handle:
        key = _arg(args, 0)
        handle = self._handles.get(key) if isinstance(key, int) and not isinstance(key, bool) else None
        if handle is None:
            raise InvalidArgument(f"{op}: the file is closed (or was never opened)")
        return handle

    def read(self, args: list[PlainValue]) -> PlainValue:
        """File.read(handle, format): "a" (the rest, "" at the end), "l"/"L" (a line without/with its
        newline), "n" (a number), or a count of bytes; nil at the end of the file (Lua's `read`)."""
        op = "File.read"
        handle = self._handle(args, op)
        if not handle.readable:
            raise InvalidArgument(f"{op}: {handle.path!r} is not open for reading")
        fmt = _arg(args, 1)
        fmt = fmt[1:] if isinstance(fmt, str) and fmt.startswith("*") else fmt
        try:
            return self._read_format(handle.file, fmt, op)
        except OSError as exc:
            raise _os_error(op, handle.path, exc) from None

    def _read_format(self, file: BinaryIO, fmt: PlainValue, op: str) -> PlainValue:
        limit = self.max_read_bytes
        if isinstance(fmt, int) and not isinstance(fmt, bool):
            if fmt < 0:
                raise InvalidArgument(f"{op}: a byte count must not be negative")
            if fmt == 0:
                return b"" if cast(io.BufferedReader, file).peek(1) else None
            data = file.read(min(fmt, limit + 1))
            return self._bounded(data, op) or None
        if isinstance(fmt, str) and fmt[:1] == "a":
            return self._bounded(file.read(limit + 1), op)
        if isinstance(fmt, str) and fmt[:1] in ("l", "L"):
            line = self._bounded(file.readline(limit + 1), op)
            if not line:
                return None
            return line[:-1] if fmt[:1] == "l" and line.endswith(b"\n") else line
        if isinstance(fmt, str) and fmt[:1] == "n":
            return _read_number(cast(io.BufferedReader, file))
        raise InvalidArgument(f'{op}: invalid format {fmt!r}; use "a", "l", "L", "n" or a byte count')

    def _bounded(self, data: bytes, op: str) -> bytes:
        if len(data) > self.max_read_bytes:
            raise ResourceExhausted(
                f"{op}: one read may return at most {self.max_read_bytes} bytes (the job's memory_bytes); "
                "read it in parts"
            )
        return data

    def write(self, args: list[PlainValue]) -> PlainValue:
        """File.write(handle, data): text is written as UTF-8; returns the bytes written."""
        op = "File.write"
        handle = self._handle(args, op)
        if not handle.writable:
            raise InvalidArgument(f"{op}: {handle.path!r} is not open for writing")
        data = _bytes(_arg(args, 1), op)
        self._charge(len(data), op)
        try:
            handle.file.write(data)
        except OSError as exc:
            raise self._write_error(exc, handle.path.strip("/").split("/"), op) from None
        return len(data)

    def seek(self, args: list[PlainValue]) -> PlainValue:
        """File.seek(handle, whence, offset) -> the new position (whence: "set", "cur" or "end")."""
        op = "File.seek"
        handle = self._handle(args, op)
        whence = _arg(args, 1) or "cur"
        offset = _arg(args, 2) or 0
        if whence not in _WHENCE or not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidArgument(f'{op}: whence must be "set", "cur" or "end" and the offset an integer')
        try:
            return handle.file.seek(offset, _WHENCE[str(whence)])
        except OSError as exc:
            raise self._write_error(exc, handle.path.strip("/").split("/"), op) from None

    def flush(self, args: list[PlainValue]) -> PlainValue:
        op = "File.flush"
        handle = self._handle(args, op)
        try:
            handle.file.flush()
        except OSError as exc:
            raise self._write_error(exc, handle.path.strip("/").split("/"), op) from None
        return True

    def close(self, args: list[PlainValue]) -> PlainValue:
        op = "File.close"
        handle = self._handle(args, op)
        del self._handles[cast(int, args[0])]
        try:
            handle.file.close()
        except OSError as exc:
            raise self._write_error(exc, handle.path.strip("/").split("/"), op) from None
        return True

    def close_all(self) -> None:
        """Close every file the job left open (at the job's end, before its scratch is emptied)."""
        handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            try:
                handle.file.close()
            except OSError:
                pass

    # ------------------------------------------------------------ File.*: whole files and names
    def read_all(self, args: list[PlainValue]) -> PlainValue:
        """File.readAll(path [, text]) -> bytes, or with `text` a string (UTF-8; invalid bytes are
        replaced by U+FFFD, as Node's readFile(path, "utf8") does)."""
        op = "File.readAll"
        parts = self._parts(_arg(args, 0), op)
        with _open_beneath(self._root(op), parts, os.O_RDONLY, op) as fd:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionDenied(f"{op}: {'/'.join(parts)!r} is not a regular file")
            data = _read_all(fd, self.max_read_bytes, op)
        return data.decode("utf-8", "replace") if _arg(args, 1) else data

    def write_all(self, args: list[PlainValue]) -> PlainValue:
        """File.writeAll(path, data, append) -> the bytes written; creates the file (and its directories)."""
        op = "File.writeAll"
        parts = self._parts(_arg(args, 0), op)
        data = _bytes(_arg(args, 1), op)
        flags = os.O_WRONLY | (os.O_APPEND if _arg(args, 2) else os.O_TRUNC)
        root = self._root(op)
        self._charge(len(data), op)
        with _open_beneath(root, parts, flags, op, self._counter(op)) as fd:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionDenied(f"{op}: {'/'.join(parts)!r} is not a regular file")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                raise self._write_error(exc, parts, op) from None
        return len(data)

    def remove(self, args: list[PlainValue]) -> PlainValue:
        """File.remove(path): a file, or an empty directory (as Lua's os.remove)."""
        op = "File.remove"
        parts = self._parts(_arg(args, 0), op)
        with _parent_of(self._root(op), parts, op) as dir_fd:
            try:
                info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    os.rmdir(parts[-1], dir_fd=dir_fd)
                else:
                    os.unlink(parts[-1], dir_fd=dir_fd)
            except OSError as exc:
                raise _name_error(op, "/".join(parts), exc) from None
        return True

    def rename(self, args: list[PlainValue]) -> PlainValue:
        """File.rename(old, new): both inside the job's root; `new` is replaced if it is a file."""
        op = "File.rename"
        old = self._parts(_arg(args, 0), op)
        new = self._parts(_arg(args, 1), op)
        root = self._root(op)
        with _parent_of(root, old, op) as old_dir, _parent_of(root, new, op) as new_dir:
            try:
                os.rename(old[-1], new[-1], src_dir_fd=old_dir, dst_dir_fd=new_dir)
            except OSError as exc:
                raise _name_error(op, "/".join(old), exc) from None
        return True

    def exists(self, args: list[PlainValue]) -> PlainValue:
        op = "File.exists"
        parts = self._parts(_arg(args, 0), op, allow_root=True)
        if not parts:
            return True
        try:
            with _parent_of(self._root(op), parts, op) as dir_fd:
                os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except (NotFound, FileNotFoundError):
            return False
        except OSError as exc:
            raise _name_error(op, "/".join(parts), exc) from None
        return True

    def list_dir(self, args: list[PlainValue]) -> PlainValue:
        """File.list(dir) -> the sorted names in a directory of the job's root ("/" for the root)."""
        op = "File.list"
        path = _arg(args, 0)
        parts = self._parts("/" if path is None else path, op, allow_root=True)
        root = self._root(op)
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                next_fd = _open(part, _DIR_FLAGS, dir_fd, op, parts)
                os.close(dir_fd)
                dir_fd = next_fd
            names = sorted(os.listdir(dir_fd))
        finally:
            os.close(dir_fd)
        return cast(PlainValue, names[: self.bounds.max_entries * 4])


def _arg(args: list[PlainValue], index: int) -> PlainValue:
    return args[index] if len(args) > index else None


def _bytes(value: PlainValue, op: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode()
    raise InvalidArgument(f"{op}: data must be a string or bytes")


def _read_number(file: io.BufferedReader) -> PlainValue:
    """Lua's read("n"): skip whitespace, read the longest numeral prefix (sign, 0x, digits, point,
    exponent; at most MAX_NUMERAL bytes) and convert it; nil when it is no number."""
    while (ahead := file.peek(1)[:1]) and ahead.isspace():
        file.read(1)
    taken = bytearray()

    def take(chars: bytes) -> bool:
        ahead = file.peek(1)[:1]
        if ahead and ahead in chars and len(taken) < MAX_NUMERAL:
            taken.extend(file.read(1))
            return True
        return False

    take(b"+-")
    digits, exponent = b"0123456789", b"eE"
    if take(b"0") and take(b"xX"):
        digits, exponent = b"0123456789abcdefABCDEF", b"pP"
    while take(digits):
        pass
    if take(b"."):
        while take(digits):
            pass
    if take(exponent):
        take(b"+-")
        while take(b"0123456789"):
            pass
    return _numeral(taken.decode())


def _numeral(text: str) -> PlainValue:
    try:
        if re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        return float.fromhex(text) if "x" in text.lower() else float(text)
    except ValueError:
        return None


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


def _read_all(fd: int, limit: int, op: str = STORE_FILE) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise ResourceExhausted(f"{op}: the file is larger than {limit} bytes, the most one read may return")
        chunks.append(chunk)
    return b"".join(chunks)


def _name_error(op: str, shown: str, exc: OSError) -> Exception:
    """A failed remove/rename/stat as an error for the script (no host text)."""
    if exc.errno == errno.ENOENT:
        return NotFound(f"{op}: {shown!r} does not exist in the job's root")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EXDEV):
        return PermissionDenied(f"{op}: {shown!r} cannot be changed in the sandbox ({os.strerror(exc.errno)})")
    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
        return FailedPrecondition(f"{op}: {shown!r}: {os.strerror(exc.errno)}")
    return _os_error(op, shown, exc)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _parent_of(root: str, parts: list[str], op: str, on_create: Callable[[], None] | None = None) -> Iterator[int]:
    """The directory that holds parts[-1], opened component by component with O_NOFOLLOW (missing
    directories created, each after `on_create()`, when it is given)."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = _open_dir(part, dir_fd, op, parts, on_create)
            os.close(dir_fd)
            dir_fd = next_fd
        yield dir_fd
    finally:
        os.close(dir_fd)


def _open_fd(
    root: str,
    parts: list[str],
    flags: int,
    op: str,
    on_create: Callable[[], None] | None = None,
    exclusive: bool = False,
) -> int:
    """Open root/parts... one component at a time with O_NOFOLLOW, so no symlink is ever followed.
    With `on_create`, missing directories and the file are created, each after `on_create()` (which
    counts it, or refuses). `exclusive`: the file must not exist yet (AlreadyExists)."""
    with _parent_of(root, parts, op, on_create) as dir_fd:
        if exclusive:
            if on_create is None:
                raise InvalidArgument(f"{op}: an exclusive open must create the file")
            on_create()
            return _open(parts[-1], flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd, op, parts)
        return _open_file(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd, op, parts, on_create)


@contextmanager
def _open_beneath(
    root: str, parts: list[str], flags: int, op: str, on_create: Callable[[], None] | None = None
) -> Iterator[int]:
    """`_open_fd` as a context that closes the file."""
    fd = _open_fd(root, parts, flags, op, on_create)
    try:
        yield fd
    finally:
        os.close(fd)


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
        raise NotFound(f"{op}: {shown!r} does not exist in the job's root (its scratch directory)") from None
    except FileExistsError:
        raise AlreadyExists(f"{op}: {shown!r} already exists") from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise FailedPrecondition(f"{op}: {shown!r} is a directory") from None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PermissionDenied(f"{op}: {shown!r} goes through a symlink or non-directory") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"{op}: {shown!r} is not accessible in the sandbox") from None
        raise _os_error(op, shown, exc) from None
