"""Scratch cleanup and scratch bases: no tree a job (or anyone) leaves can break cleanup, cleanup
never follows a symlink out, and each worker's scratch is its own, private and owner-checked."""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from scriptpool.sandbox.jail import _process, _scratch
from scriptpool.sandbox.jail._syscalls import current_arch
from tests.unit.scratch_trees import plant_deep_tree, plant_pathological_tree, run_in_child


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    made = tmp_path / "base"
    made.mkdir(mode=0o700)
    yield made
    _scratch.remove(str(tmp_path))  # a deep tree left by a failed test would stop pytest's own rmtree


def _dead_pid() -> int:
    """A pid no process has: above the kernel's pid_max."""
    with open("/proc/sys/kernel/pid_max") as handle:
        return int(handle.read()) + 1


def _untouched(kept: list[Path]) -> bool:
    return all(path.read_text().startswith("keep me") for path in kept)


def test_a_pathological_tree_is_removed_without_recursion_or_following_a_symlink(base: Path, tmp_path: Path) -> None:
    job = base / "job-1"
    job.mkdir(mode=0o700)
    kept = plant_pathological_tree(job, tmp_path / "outside")
    assert _scratch.remove(str(job)) is True  # shutil.rmtree: RecursionError on the deep branch
    assert not job.exists() and os.listdir(base) == []
    assert _untouched(kept) and (tmp_path / "outside" / "dir").is_dir()


def test_empty_keeps_the_directory_and_verifies_it_is_empty(base: Path, tmp_path: Path) -> None:
    kept = plant_pathological_tree(base, tmp_path / "outside")
    assert _scratch.empty(str(base)) is True
    assert base.is_dir() and os.listdir(base) == [] and _untouched(kept)
    assert _scratch.is_empty(str(base))


def test_cleanup_without_capabilities_and_with_the_jails_descriptor_limit(base: Path, tmp_path: Path) -> None:
    """As the jailed child empties its scratch: 32 descriptors, no CAP_DAC_OVERRIDE (an unreadable or
    read-only directory must be made usable first), a 3000-level branch."""
    kept = plant_pathological_tree(base, tmp_path / "outside")
    arch = current_arch()
    assert arch is not None

    def jailed_empty() -> object:
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        _process.drop_capabilities(arch)
        return _scratch.empty(str(base))

    assert run_in_child(jailed_empty) == {"value": True}
    assert os.listdir(base) == [] and _untouched(kept)


def test_cleanup_that_cannot_finish_says_so_and_never_raises(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_deep_tree(base, 50)
    monkeypatch.setattr(_scratch, "REMOVE_STEP_LIMIT", 20)  # the bound on one cleanup's work
    assert _scratch.empty(str(base)) is False
    assert _scratch.remove(str(base / "deep")) is False
    assert os.listdir(base) == ["deep"]
    monkeypatch.undo()
    assert _scratch.empty(str(base)) is True
    assert _scratch.empty(str(tmp_path / "missing")) is False  # nothing to verify: not "empty"
    assert _scratch.remove(str(tmp_path / "missing")) is True


def test_sweep_removes_only_the_dead_and_survives_their_trees(base: Path, tmp_path: Path) -> None:
    dead, alive = base / f"job-{_dead_pid()}", base / f"job-{os.getpid()}"
    dead.mkdir()
    alive.mkdir()
    kept = plant_pathological_tree(dead, tmp_path / "outside")
    (base / "not-a-job").mkdir()
    assert _scratch.sweep(str(base)) == 1
    assert sorted(os.listdir(base)) == sorted([alive.name, "not-a-job"]) and _untouched(kept)


def test_the_scratch_root_must_be_a_private_directory_of_ours(tmp_path: Path) -> None:
    good = tmp_path / "root"
    assert _scratch.private_root(str(good)) == str(good)  # made, 0700
    assert stat.S_IMODE(good.stat().st_mode) == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, tmp_path / "link")
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "theirs").mkdir(mode=0o700)
    os.chown(tmp_path / "theirs", 4321, 4321)
    for bad in ("link", "open", "theirs"):
        replaced = _scratch.private_root(str(tmp_path / bad))
        assert replaced != str(tmp_path / bad) and _scratch.is_private(replaced)
        os.rmdir(replaced)
    assert os.listdir(elsewhere) == []  # nothing was made through the symlink
    with pytest.raises(OSError, match="not a private directory"):
        _scratch.use_base(str(tmp_path / "open"))
    with pytest.raises(OSError, match="not a private directory"):
        _scratch.use_base(str(tmp_path / "link"))


def test_each_worker_has_its_own_base_and_only_dead_workers_bases_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    other_stack = _scratch.make_worker_base(str(root), pid=1)  # a live process: another stack's worker
    (Path(other_stack) / "job-1").mkdir()
    dead_worker = _scratch.make_worker_base(str(root), pid=_dead_pid())
    plant_deep_tree(Path(dead_worker))
    ours = _scratch.make_worker_base(str(root), pid=os.getpid())
    assert sorted(os.listdir(root)) == sorted(["worker-1", f"worker-{os.getpid()}"])
    assert os.listdir(other_stack) == ["job-1"]  # another worker's scratch is never touched
    assert _scratch.is_private(ours) and os.listdir(ours) == []
    assert _scratch.create(ours) == os.path.join(ours, f"job-{os.getpid()}")
    os.chmod(ours, 0o755)
    with pytest.raises(OSError, match="not a private directory"):
        _scratch.create(ours)
