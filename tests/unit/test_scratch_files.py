"""Artifact.storeFile / saveToFile in the sandbox: only inside the job's scratch directory."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import pytest

from scriptpool.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from scriptpool.sandbox.limits import SCRATCH_BOUNDS, ScratchBounds
from scriptpool.sandbox.scratch_files import ScratchFileHost
from scriptpool.values import PlainValue
from tests.unit.scratch_trees import run_in_child


class ArtifactHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        if op == "Artifact.getContent":
            return b"\x00binary\xff"
        return {"id": "a1"}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    root.mkdir()
    (tmp_path / "secret").write_text("host secret")
    return root


def test_save_then_store_round_trip(scratch: Path) -> None:
    inner = ArtifactHost()
    host = ScratchFileHost(inner, str(scratch), 1024)
    assert host.call("Artifact.saveToFile", ["s", "a0", "out/copy.bin"]) == "out/copy.bin"
    assert (scratch / "out" / "copy.bin").read_bytes() == b"\x00binary\xff"
    assert oct((scratch / "out" / "copy.bin").stat().st_mode)[-3:] == "600"
    assert host.call("Artifact.storeFile", ["s", "out/copy.bin", {"tags": ["t"]}]) == {"id": "a1"}
    assert inner.calls[-1] == (
        "Artifact.store",
        ["s", {"content": b"\x00binary\xff", "type": "binary", "metadata": {"tags": ["t"], "name": "copy.bin"}}],
    )


@pytest.mark.parametrize("path", ["/../etc/passwd", "../secret", "a/../../secret", "~/x", "a\x00b", "..", "/a/.."])
def test_paths_that_leave_the_scratch_directory_are_refused(scratch: Path, path: str) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1024)
    with pytest.raises(PermissionDenied, match="leaves the job's root"):
        host.call("Artifact.storeFile", ["s", path])
    with pytest.raises(PermissionDenied):
        host.call("Artifact.saveToFile", ["s", "a0", path])


def test_symlinks_are_never_followed(scratch: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret", scratch / "link")
    os.symlink(tmp_path, scratch / "dirlink")
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1024)
    for path in ("link", "dirlink/secret"):
        with pytest.raises(PermissionDenied, match="symlink"):
            host.call("Artifact.storeFile", ["s", path])
    with pytest.raises(PermissionDenied):
        host.call("Artifact.saveToFile", ["s", "a0", "link"])
    assert (tmp_path / "secret").read_text() == "host secret"  # not overwritten through the link


def test_missing_file_too_big_file_and_no_scratch(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 4)
    with pytest.raises(NotFound):
        host.call("Artifact.storeFile", ["s", "nope.txt"])
    (scratch / "big").write_bytes(b"12345")
    with pytest.raises(ResourceExhausted):
        host.call("Artifact.storeFile", ["s", "big"])
    with pytest.raises(FailedPrecondition, match="no scratch directory"):
        ScratchFileHost(ArtifactHost(), None, 4).call("Artifact.storeFile", ["s", "big"])


def test_other_operations_pass_through(scratch: Path) -> None:
    inner = ArtifactHost()
    ScratchFileHost(inner, str(scratch), 4).call("Session.get", ["x"])
    assert inner.calls == [("Session.get", ["x"])]


def _count_entries(root: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(root))


def test_scratch_paths_are_bounded_in_depth(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20)
    deepest = "/".join(["d"] * (SCRATCH_BOUNDS.max_depth - 1) + ["f"])
    assert host.call("Artifact.saveToFile", ["s", "a0", deepest]) == deepest
    assert host.call("Artifact.storeFile", ["s", deepest]) == {"id": "a1"}
    with pytest.raises(InvalidArgument, match=f"at most {SCRATCH_BOUNDS.max_depth}"):
        host.call("Artifact.saveToFile", ["s", "a0", "d/" + deepest])
    assert _count_entries(scratch) == SCRATCH_BOUNDS.max_depth  # nothing made for the refused path
    with pytest.raises(InvalidArgument, match=f"at most {SCRATCH_BOUNDS.max_depth}"):
        host.call("Artifact.storeFile", ["s", "d/" + deepest])


def test_files_and_directories_a_job_creates_are_bounded(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20, ScratchBounds(max_entries=5))
    host.call("Artifact.saveToFile", ["s", "a0", "a/b/one"])  # 3 entries
    host.call("Artifact.saveToFile", ["s", "a0", "a/b/one"])  # overwriting creates nothing
    host.call("Artifact.saveToFile", ["s", "a0", "a/two"])
    host.call("Artifact.saveToFile", ["s", "a0", "three"])  # 5: at the bound
    with pytest.raises(ResourceExhausted, match="the limit is 5"):
        host.call("Artifact.saveToFile", ["s", "a0", "four"])
    with pytest.raises(ResourceExhausted, match="the limit is 5"):
        host.call("Artifact.saveToFile", ["s", "a0", "c/four"])
    assert _count_entries(scratch) == 5 and host.entries_created == 5
    host.call("Artifact.saveToFile", ["s", "a0", "a/two"])  # existing files can still be rewritten


def test_bytes_a_job_writes_to_scratch_are_bounded_by_artifact_bytes(scratch: Path) -> None:
    size = len(b"\x00binary\xff")  # what ArtifactHost's artifact holds
    host = ScratchFileHost(ArtifactHost(), str(scratch), 3 * size)
    for name in ("one", "two", "one"):  # rewriting a file counts again: the bound is on bytes written
        host.call("Artifact.saveToFile", ["s", "a0", name])
    assert host.bytes_written == 3 * size
    with pytest.raises(ResourceExhausted, match=f"artifact_bytes\\) is {3 * size} bytes"):
        host.call("Artifact.saveToFile", ["s", "a0", "three"])
    assert sorted(os.listdir(scratch)) == ["one", "two"]  # refused before anything was created


def test_a_write_past_rlimit_fsize_is_resource_exhausted_not_errno_27(scratch: Path) -> None:
    """The OS backstop: with the job's own byte count set higher than RLIMIT_FSIZE, the write fails
    with EFBIG (SIGXFSZ ignored, as in the child) and the script gets a categorised error."""

    def write_past_the_limit() -> object:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))
        host = ScratchFileHost(ArtifactHost(), str(scratch), 4)
        host.max_file_bytes = 1024  # as if the pre-check had let it through
        try:
            host.call("Artifact.saveToFile", ["s", "a0", "big"])
        except ResourceExhausted as exc:
            return ["RESOURCE_EXHAUSTED", exc.message]
        return "written"

    outcome = run_in_child(write_past_the_limit)
    assert isinstance(outcome, dict)
    code, message = outcome["value"]
    assert code == "RESOURCE_EXHAUSTED" and "file size limit" in message and "Errno" not in message
    assert (scratch / "big").read_bytes() == b""  # the partial write is not left behind


def test_absolute_paths_resolve_inside_the_jobs_root(scratch: Path) -> None:
    """The scratch directory is the job's `/`: /data/x.txt is <scratch>/data/x.txt; /etc/passwd is
    <scratch>/etc/passwd (absent), never the host's."""
    inner = ArtifactHost()
    host = ScratchFileHost(inner, str(scratch), 1024)
    assert host.call("Artifact.saveToFile", ["s", "a0", "/data/x.bin"]) == "data/x.bin"
    assert (scratch / "data" / "x.bin").read_bytes() == b"\x00binary\xff"
    assert host.call("Artifact.storeFile", ["s", "/data/x.bin"]) == {"id": "a1"}
    with pytest.raises(NotFound, match="'etc/passwd' does not exist in the job's root"):
        host.call("Artifact.storeFile", ["s", "/etc/passwd"])
    with pytest.raises(NotFound):
        host.call("File.readAll", ["/proc/self/environ"])


def test_store_file_four_argument_form_takes_the_type(scratch: Path) -> None:
    inner = ArtifactHost()
    host = ScratchFileHost(inner, str(scratch), 1024)
    host.call("File.writeAll", ["/up.txt", "héllo", False])
    host.call("Artifact.storeFile", ["s", "/up.txt", "text", {"source": "fs"}])
    assert inner.calls[-1] == (
        "Artifact.store",
        ["s", {"content": "héllo", "type": "text", "metadata": {"source": "fs", "name": "up.txt"}}],
    )  # a text file is stored as text (a string): it reads back as one
    host.call("Artifact.storeFile", ["s", "/up.txt", "user_input"])
    assert inner.calls[-1][1][1] == {"content": "héllo".encode(), "type": "user_input", "metadata": {"name": "up.txt"}}
    with pytest.raises(InvalidArgument, match="metadata must be a table"):
        host.call("Artifact.storeFile", ["s", "/up.txt", "text", "not a table"])


def test_file_handles_read_write_seek_and_formats(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20)
    h = host.call("File.open", ["/d/f.txt", "w+"])
    assert host.call("File.write", [h, "one\n 42 0x10 -2.5e1 x\nlast"]) == 26
    assert host.call("File.seek", [h, "set", 0]) == 0
    reads = [host.call("File.read", [h, fmt]) for fmt in ("l", "n", "n", "n", "n", "L", "*a", "a", "l", 3, 0)]
    assert reads == [b"one", 42, 16, -25.0, None, b"x\n", b"last", b"", None, None, None]
    assert host.call("File.seek", [h, "end", -2]) == 24 and host.call("File.read", [h, 5]) == b"st"
    assert host.call("File.close", [h]) is True
    with pytest.raises(InvalidArgument, match="closed"):
        host.call("File.read", [h, "a"])
    assert (scratch / "d" / "f.txt").read_bytes() == b"one\n 42 0x10 -2.5e1 x\nlast"
    a = host.call("File.open", ["d/f.txt", "a"])
    host.call("File.write", [a, b"\xff"])
    with pytest.raises(InvalidArgument, match="not open for reading"):
        host.call("File.read", [a, "a"])
    host.close_all()
    assert (scratch / "d" / "f.txt").read_bytes().endswith(b"last\xff")  # flushed when the job ends
    with pytest.raises(InvalidArgument, match="invalid mode"):
        host.call("File.open", ["x", "rw"])
    with pytest.raises(NotFound):
        host.call("File.open", ["missing", "r"])
    with pytest.raises(AlreadyExists):
        host.call("File.open", ["d/f.txt", "x"])


def test_remove_rename_exists_list(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20)
    host.call("File.writeAll", ["/a/one", "1", False])
    host.call("File.writeAll", ["/a/one", "2", True])
    assert host.call("File.readAll", ["/a/one"]) == b"12" and host.call("File.readAll", ["/a/one", True]) == "12"
    assert host.call("File.rename", ["/a/one", "/two"]) is True
    assert host.call("File.list", ["/"]) == ["a", "two"] and host.call("File.list", ["/a"]) == []
    assert host.call("File.exists", ["/two"]) is True and host.call("File.exists", ["/a/one"]) is False
    assert host.call("File.exists", ["/"]) is True
    with pytest.raises(FailedPrecondition):  # a file cannot replace a directory
        host.call("File.rename", ["/two", "/a"])
    assert host.call("File.remove", ["/two"]) is True and host.call("File.remove", ["/a"]) is True
    assert os.listdir(scratch) == []
    with pytest.raises(NotFound):
        host.call("File.remove", ["/two"])
    with pytest.raises(InvalidArgument, match="root directory"):
        host.call("File.remove", ["/"])


def test_file_ops_refuse_escapes_and_symlinks(scratch: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret", scratch / "link")
    os.symlink(tmp_path, scratch / "dirlink")
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20)
    attempts: list[tuple[str, list[PlainValue]]] = [
        ("File.open", ["link", "w"]), ("File.open", ["dirlink/secret", "r"]), ("File.readAll", ["/link"]),
        ("File.writeAll", ["dirlink/secret", "x", False]), ("File.writeAll", ["/../secret", "x", False]),
        ("File.open", ["a\x00b", "r"]), ("File.rename", ["/x", "/../secret"]), ("File.list", ["/dirlink"]),
        ("File.remove", ["dirlink/secret"]), ("File.exists", ["../secret"]), ("File.open", ["~/secret", "r"]),
    ]  # fmt: skip
    for op, args in attempts:
        with pytest.raises(PermissionDenied):
            host.call(op, args)
    assert (tmp_path / "secret").read_text() == "host secret"
    assert host.call("File.remove", ["/link"]) is True  # the link itself, never its target
    assert (tmp_path / "secret").read_text() == "host secret"


def test_file_writes_count_against_the_jobs_bytes_entries_and_open_files(scratch: Path) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 10, ScratchBounds(max_entries=3, max_open_files=2))
    h = host.call("File.open", ["/f", "w"])
    host.call("File.write", [h, "123456"])
    with pytest.raises(ResourceExhausted, match="artifact_bytes"):
        host.call("File.write", [h, "12345"])
    with pytest.raises(ResourceExhausted, match="artifact_bytes"):
        host.call("File.writeAll", ["/g", "12345", False])
    host.call("File.open", ["/f", "r"])
    with pytest.raises(ResourceExhausted, match="files open; the limit is 2"):
        host.call("File.open", ["/f", "r"])
    host.close_all()
    host.call("File.writeAll", ["/d/g", "", False])  # entries 2 and 3
    with pytest.raises(ResourceExhausted, match="the limit is 3"):
        host.call("File.writeAll", ["/h", "", False])
    host.call("File.remove", ["/d/g"])  # removing gives nothing back
    with pytest.raises(ResourceExhausted, match="the limit is 3"):
        host.call("File.open", ["/d/g", "w"])
    assert sorted(os.listdir(scratch)) == ["d", "f"]


def test_one_read_is_bounded(scratch: Path) -> None:
    (scratch / "big").write_bytes(b"x" * 100)
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1 << 20, max_read_bytes=50)
    with pytest.raises(ResourceExhausted, match="larger than 50 bytes"):
        host.call("File.readAll", ["big"])
    h = host.call("File.open", ["big", "r"])
    with pytest.raises(ResourceExhausted, match="at most 50 bytes"):
        host.call("File.read", [h, "a"])
    host.call("File.seek", [h, "set", 0])
    assert host.call("File.read", [h, 50]) == b"x" * 50
    host.close_all()


def test_a_script_write_past_rlimit_fsize_is_resource_exhausted(scratch: Path) -> None:
    """The OS backstop for the script's own writes: buffered bytes that pass RLIMIT_FSIZE fail at
    flush/close with EFBIG, reported as RESOURCE_EXHAUSTED naming artifact_bytes (no raw errno)."""

    def write_past_the_limit() -> object:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))
        host = ScratchFileHost(ArtifactHost(), str(scratch), 1024)
        handle = host.call("File.open", ["/big", "w"])
        host.call("File.write", [handle, "0123456789"])
        found = []
        for op in ("File.flush", "File.close"):
            try:
                host.call(op, [handle])
                found.append("ok")
            except ResourceExhausted as exc:
                found.append(exc.message)
        host.close_all()
        return found

    outcome = run_in_child(write_past_the_limit)
    assert isinstance(outcome, dict)
    flushed, closed = outcome["value"]
    assert "file size limit" in flushed and "artifact_bytes" in flushed and "Errno" not in flushed
    assert (scratch / "big").stat().st_size <= 4
    assert "file size limit" in closed  # close flushes the same bytes again; the file is closed all the same
