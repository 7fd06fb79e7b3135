"""We reach into the private code of three libraries (see docs/architecture.md, "Third-party
private APIs"): RQ's worker internals, quickjs-rs's engine and wasmtime's ctypes bindings. Each is
used from one module of ours (`INTERNALS`), and nowhere else: no other module (tests included)
imports a private module of theirs, touches one of their private names, or replaces anything
inside them; for RQ, no other module imports an RQ module outside its documented ones. Their
private names may change in any release, so the exact versions we built against are pinned here:
an upgrade fails this test until someone has read the internals module and re-run the suite, and
then updates the pin below (and in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

INTERNALS = {
    # import name: (distribution, version the private uses were written against, the one module using them)
    "rq": ("rq", "3.0.0", "proto/scriptpool/core/rq_internals.py"),
    "quickjs_rs": ("quickjs-rs", "0.2.6", "sandbox/engines/quickjs_internals.py"),
    "wasmtime": ("wasmtime", "50.0.1", "sandbox/engines/wasmtime_internals.py"),
}
RQ_DOCUMENTED_MODULES = {
    "rq", "rq.job", "rq.queue", "rq.worker", "rq.registry", "rq.exceptions", "rq.timeouts", "rq.serializers",
    "rq.results", "rq.cli", "rq.command", "rq.suspension",
}  # fmt: skip
SOURCE_FOLDERS = ("coordinator", "workers", "sandbox", "proto/scriptpool", "tests")
SKIPPED = (
    "proto/scriptpool/v1/",
    "proto/scriptpool/coordinator",
    "proto/scriptpool/workers",
    "proto/scriptpool/sandbox",
)


def _project_files() -> Iterator[Path]:
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if not relative.startswith(SKIPPED):
                yield path


def _library_private_names(library: str) -> set[str]:
    """The `_names` a library defines (functions, classes, module and instance attributes)."""
    spec = importlib.util.find_spec(library)
    assert spec is not None and spec.submodule_search_locations
    names: set[str] = set()
    for location in spec.submodule_search_locations:
        for path in Path(location).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _own_names(trees: list[ast.Module]) -> set[str]:
    """The `_names` our own code defines: functions, classes, module/class-level variables (an
    attribute assigned on an object is not a definition: it may be poking a library's state)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif _sets_own_attribute(node):
                assert isinstance(node, ast.Call) and isinstance(node.args[1], ast.Constant)
                names.add(str(node.args[1].value))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for init in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
                for node in ast.walk(init):  # attributes our own constructors introduce
                    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                        names.add(node.attr)
    return names


def _sets_own_attribute(node: ast.AST) -> bool:
    """`setattr(self, "_name", ...)` or `object.__setattr__(self, "_name", ...)`."""
    return (
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "setattr")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "__setattr__")
        )
        and len(node.args) >= 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "self"
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _private_imports(tree: ast.Module, libraries: set[str]) -> Iterator[tuple[str, int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                library, *parts = alias.name.split(".")
                if library in libraries and (
                    any(part.startswith("_") for part in parts)
                    or (library == "rq" and alias.name not in RQ_DOCUMENTED_MODULES)
                ):
                    yield library, node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            library, *parts = node.module.split(".")
            parts += [alias.name for alias in node.names]
            if library in libraries and (
                any(part.startswith("_") and not part.startswith("__") for part in parts)
                or (library == "rq" and node.module not in RQ_DOCUMENTED_MODULES)
            ):
                yield library, node.lineno, f"from {node.module} import ..."


def _library_modules(tree: ast.Module, libraries: set[str]) -> dict[str, str]:
    """Local name -> library, for `import rq.job` or `import wasmtime as w`."""
    return {
        (alias.asname or alias.name).split(".")[0]: alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] in libraries
    }


def _replacements(tree: ast.Module, module_names: dict[str, str]) -> Iterator[tuple[str, int, str]]:
    """Assignments (or setattr) to an attribute of a library's module."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.stmt, ast.expr)):
            continue
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [target for target in node.targets if isinstance(target, ast.Attribute)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Attribute):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
            targets = [node.args[0]]
        for target in targets:
            root = _root(target)
            if root in module_names:
                yield module_names[root], node.lineno, "replaces a name inside the library"


def private_uses(tree: ast.Module, library_privates: dict[str, set[str]], own: set[str]) -> list[tuple[str, int, str]]:
    """(library, line, what) for every use of a library's private code in `tree`; a private name
    two libraries share is reported for each."""
    found = list(_private_imports(tree, set(library_privates)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr not in own:
            found += [
                (library, node.lineno, f".{node.attr}")
                for library, names in library_privates.items()
                if node.attr in names
            ]
    found += _replacements(tree, _library_modules(tree, set(library_privates)))
    return found


def _shared_name_used_by_its_owner(
    path: Path, what: str, allowed: dict[Path, str], library_privates: dict[str, set[str]]
) -> bool:
    """A private name two libraries share (`._exports`), used in the internals module of one of them."""
    return path in allowed and what.startswith(".") and what[1:] in library_privates[allowed[path]]


@pytest.fixture(scope="module")
def library_privates() -> dict[str, set[str]]:
    return {library: _library_private_names(library) for library in INTERNALS}


def test_each_library_s_private_code_is_used_from_its_one_module(library_privates: dict[str, set[str]]) -> None:
    files = list(_project_files())
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}
    own = _own_names(list(trees.values()))
    allowed = {REPO / module: library for library, (_, _, module) in INTERNALS.items()}
    misplaced = []
    for path, tree in trees.items():
        for library, line, what in private_uses(tree, library_privates, own):
            if allowed.get(path) != library and not _shared_name_used_by_its_owner(
                path, what, allowed, library_privates
            ):
                misplaced.append(f"{path.relative_to(REPO)}:{line}: {what} ({library})")
    assert not misplaced, "private uses outside the library's internals module:\n" + "\n".join(misplaced)
    for path, library in allowed.items():  # and each internals module does use them (else it is not needed)
        assert any(found == library for found, _, _ in private_uses(trees[path], library_privates, own)), path


@pytest.mark.parametrize(
    "source, library",
    [
        ("job._handle_success(1)", "rq"),
        ("from rq.job_lifecycle import record_job_failure", "rq"),
        ("import rq.job\nrq.job.utcformat = str", "rq"),
        ("import rq.job\nsetattr(rq.job, 'utcformat', str)", "rq"),
        ("import quickjs_rs._engine as e", "quickjs_rs"),
        ("context._engine_ctx.eval_handle('1')", "quickjs_rs"),
        ("from wasmtime._func import enter_wasm", "wasmtime"),
        ("from wasmtime import _ffi", "wasmtime"),
    ],
)
def test_the_check_finds_a_private_use(source: str, library: str, library_privates: dict[str, set[str]]) -> None:
    assert library in {found for found, _, _ in private_uses(ast.parse(source), library_privates, set())}


def test_the_installed_versions_are_the_ones_the_private_uses_were_written_for() -> None:
    for distribution, version, module in INTERNALS.values():
        installed = importlib.metadata.version(distribution)
        assert installed == version, (
            f"{distribution} is now {installed}: re-check the private names used in {module}, then update the pin here"
        )


def test_pyproject_pins_the_same_versions() -> None:
    with open(REPO / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    pins = {}
    for requirement in [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]:
        name, _, version = requirement.partition("==")
        pins[name] = version
    for distribution, version, module in INTERNALS.values():
        assert pins[distribution] == version, distribution
        assert (REPO / module).is_file(), module
