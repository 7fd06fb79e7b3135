"""One import name (ADR 0008): everything is `scriptpool.*`.

The wheel installs one top-level package with the coordinator, workers and sandbox inside it (and
their data files); the `python -m` entry points the code spawns start from outside the repository;
no code names the old top-level packages, and none of them is importable from the install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scriptpool.core.job_records import LEGACY_RQ_FUNCTIONS
from tests.conftest import REPO

OLD_NAMES = ("coordinator", "workers", "sandbox")
OLD_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:coordinator|workers|sandbox)\b", re.M)
OLD_DOTTED = re.compile(r"""(?<=["'`])(?:python -m )?((?:coordinator|workers|sandbox)\.\w+(?:\.\w+)*)""")
SPAWNED_MODULE = re.compile(r"""["']-m["'],\s*["']([\w.]+)["']""")
CODE_FOLDERS = ("coordinator", "workers", "sandbox", "proto/scriptpool", "tests", "examples")
NOT_BUILT = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")


def _python_sources() -> list[Path]:
    """Every Python file of the repository once (the links inside proto/scriptpool are not walked)."""
    found: list[Path] = []
    for folder in CODE_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(REPO / folder):  # os.walk does not follow links
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            found.extend(Path(dirpath) / name for name in filenames if name.endswith(".py"))
    return sorted(found)


def _outside_env() -> dict[str, str]:
    """The test's environment without PYTHONPATH: imports resolve as an installed package's would."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(args: list[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env={**_outside_env(), **env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_package_folders_are_links_into_the_repository() -> None:
    for name in OLD_NAMES:
        link = REPO / "proto" / "scriptpool" / name
        assert link.is_symlink() and link.resolve() == (REPO / name).resolve()


def _names_old_module(match: re.Match[str]) -> bool:
    """A module of an old top-level package, not a file name such as coordinator.sock (the legacy RQ
    function name is meant where it stands)."""
    dotted = match.group(1) if match.groups() else match.group(0)
    if dotted in LEGACY_RQ_FUNCTIONS:
        return False
    first, _, rest = dotted.strip().split(maxsplit=1)[-1].partition(".")
    second = rest.split(".")[0]
    return not rest or (REPO / first / second).is_dir() or (REPO / first / f"{second}.py").is_file()


def test_no_code_names_an_old_top_level_package() -> None:
    offenders = []
    for path in _python_sources():
        text = path.read_text()
        for pattern in (OLD_IMPORT, OLD_DOTTED):
            for match in pattern.finditer(text):
                if _names_old_module(match):
                    line = text.count("\n", 0, match.start()) + 1
                    offenders.append(f"{path.relative_to(REPO)}:{line}: {match.group(0).strip()}")
    assert offenders == []


def _repository_modules() -> set[str]:
    """`scriptpool.…` names of every module in the package folders, from the files themselves."""
    names = set()
    for path in _python_sources():
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[0] in OLD_NAMES:
            parts = ("scriptpool", *parts)
        elif parts[:2] == ("proto", "scriptpool"):
            parts = parts[1:]
        else:
            continue
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_under_scriptpool_and_no_old_name_is_importable(tmp_path: Path) -> None:
    probe = (
        "import importlib, importlib.util, pkgutil, sys\n"
        "import scriptpool\n"
        "names = ['scriptpool'] + [m.name for m in pkgutil.walk_packages(scriptpool.__path__, 'scriptpool.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        f"print([n for n in {OLD_NAMES!r} if n in sys.modules or importlib.util.find_spec(n)])\n"
        "print(*names)\n"
    )
    leaked, walked = _run(["-c", probe], tmp_path).stdout.splitlines()
    assert leaked == "[]"
    assert set(walked.split()) == _repository_modules()


def test_the_python_m_entry_points_the_code_spawns_start(tmp_path: Path) -> None:
    spawned: set[str] = set()
    for path in _python_sources():
        if path.relative_to(REPO).parts[0] not in ("tests", "examples"):
            spawned.update(m for m in SPAWNED_MODULE.findall(path.read_text()) if m.split(".")[0] != "rq")
    # a new one must be added here: each is started below from outside the repository
    assert spawned == {"scriptpool.coordinator.cli.main", "scriptpool.sandbox.zygote"}

    assert _run(["-m", "scriptpool.coordinator.cli.main", "--help"], tmp_path).stdout.startswith("usage: scriptpool")

    # the worker starts the zygote with `python -m scriptpool.sandbox.zygote`; its child runs a job
    zygote_job = (
        "from scriptpool.v1 import sandbox_pb2\n"
        "from scriptpool.languages import Language\n"
        "from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS\n"
        "from scriptpool.workers.supervision.supervisor import SparePool, supervise\n"
        "from scriptpool.workers.supervision.zygote import ZygoteSource\n"
        "class NoHost:\n"
        "    def call(self, op, args): return None\n"
        "spec = sandbox_pb2.ChildJob(language=Language.LUA.to_proto(), source='return 40 + 2')\n"
        "for name in LIMIT_FIELDS: setattr(spec.limits, name, getattr(DEFAULT_LIMITS, name))\n"
        "pool = SparePool(ZygoteSource())\n"
        "try:\n"
        "    pool.refill()\n"
        "    child = pool.take()\n"
        "    run = supervise(child, spec, NoHost())\n"
        "    print(type(child.handle).__name__, run.outcome.value, run.result)\n"
        "finally:\n"
        "    pool.close()\n"
    )
    zygote = _run(["-c", zygote_job], tmp_path)
    assert zygote.stdout.split() == ["ZygoteChild", "ok", "42"], zygote.stderr[-3000:]


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_with_everything_in_it(tmp_path: Path) -> None:
    """Built offline from a copy of the repository (links kept), as `pip wheel .` would."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_BUILT))
    dist = tmp_path / "dist"
    _run(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, "."], source, PIP_NO_INDEX="1")
    (wheel,) = dist.glob("scriptpool-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = {name.rsplit("/", 1)[-1]: archive.read(name).decode() for name in names if ".dist-info/" in name}
    assert meta["top_level.txt"].split() == ["scriptpool"]
    assert "scriptpool = scriptpool.coordinator.cli.main:main" in meta["entry_points.txt"]
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"scriptpool"}
    expected = {
        f"scriptpool/{folder}/{path.relative_to(REPO / folder).as_posix()}"
        for folder in OLD_NAMES
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".lua", ".js", ".typed") and "__pycache__" not in path.parts
    }
    assert len(expected) > 100 and expected <= names, sorted(expected - names)[:20]
    for data in ("engines/lua_prelude.lua", "engines/js_prelude.js", "py.typed"):
        assert f"scriptpool/sandbox/{data}" in names
    for data in ("py.typed", "v1/py.typed", "v1/jobs_pb2.pyi", "v1/jobs_pb2_grpc.pyi", "v1/jobs.proto"):
        assert f"scriptpool/{data}" in names

    target = tmp_path / "installed"
    _run(["-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel], tmp_path, PIP_NO_INDEX="1")
    assert sorted(path.name for path in target.iterdir() if not path.name.endswith(".dist-info")) == [
        "bin",
        "scriptpool",
    ]
    probe = (
        "import importlib.util, scriptpool.coordinator.cli.main as cli, scriptpool.sandbox.zygote as zygote\n"
        f"print(cli.__file__.startswith({str(target)!r}), zygote.__file__.startswith({str(target)!r}),"
        f" [name for name in {OLD_NAMES!r} if importlib.util.find_spec(name)])\n"
    )
    installed = _run(["-c", probe], tmp_path, PYTHONPATH=str(target))
    assert installed.stdout.split() == ["True", "True", "[]"]
