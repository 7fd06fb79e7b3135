"""Artifact.storeFile / saveToFile in the sandbox: only inside the job's scratch directory."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import pytest

from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
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


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret", "a/../../secret", "~/x", "a\x00b", ".."])
def test_paths_that_leave_the_scratch_directory_are_refused(scratch: Path, path: str) -> None:
    host = ScratchFileHost(ArtifactHost(), str(scratch), 1024)
    with pytest.raises(PermissionDenied, match="leaves the job's scratch directory"):
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
