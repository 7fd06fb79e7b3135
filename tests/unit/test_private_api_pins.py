"""We reach into the private code of three libraries (see docs/architecture.md, "Third-party
private APIs"): RQ's worker internals, quickjs-rs's engine and wasmtime's ctypes bindings. Their
private names may change in any release, so the exact versions we built against are pinned here:
an upgrade fails this test until someone has read the modules listed and re-run the suite, and
then updates the pin below (and in pyproject.toml)."""

from __future__ import annotations

import importlib.metadata
import tomllib

from tests.conftest import REPO

CHECKED = {
    # library: (version the private uses were written against, the modules that use them)
    "rq": (
        "3.0.0",
        [
            "workers/rq_compat/lean_rq.py",
            "workers/rq_compat/lean_dequeue.py",
            "workers/worker.py",
            "coordinator/sweeper.py",
        ],
    ),
    "quickjs-rs": ("0.2.6", ["sandbox/engines/javascript.py", "sandbox/engines/js_mapped.py"]),
    "wasmtime": ("50.0.1", ["sandbox/engines/wasm_calls.py"]),
}


def test_the_installed_versions_are_the_ones_the_private_uses_were_written_for() -> None:
    for library, (version, _) in CHECKED.items():
        assert importlib.metadata.version(library) == version, (
            f"{library} is now {importlib.metadata.version(library)}: re-check the private names used in "
            f"{', '.join(CHECKED[library][1])}, then update the pin here"
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
    for library, (version, modules) in CHECKED.items():
        assert pins[library] == version, library
        for module in modules:
            assert (REPO / module).is_file(), module
