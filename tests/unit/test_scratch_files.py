"""Artifact.storeFile / saveToFile in the sandbox: only inside the job's scratch directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scriptpool.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted
from scriptpool.values import PlainValue

from sandbox.scratch_files import ScratchFileHost


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
