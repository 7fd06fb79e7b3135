"""Attacks through a script's own files (Lua io/os, Python open()/os, JavaScript fs), through the
real stack: each path trick or flood fails as a categorised script error, in every language, and no
host file is read or touched. Symlinks (which no script can make) are refused in
tests/unit/test_scratch_files.py::test_file_ops_refuse_escapes_and_symlinks."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import SCRATCH_BOUNDS
from tests.integration.helpers import result_of
from tests.security.attack_table import Attack, run_attack

E = Outcome.SCRIPT_ERROR


@dataclass(frozen=True)
class FileAttack:
    lua: str
    python: str
    javascript: str | None
    message: str
    limits: dict[str, int] = field(default_factory=dict)

    def in_language(self, language: Language) -> Attack:
        source = {Language.LUA: self.lua, Language.PYTHON: self.python, Language.JAVASCRIPT: self.javascript}
        assert source[language] is not None
        return Attack(str(source[language]), E, self.message, self.limits)


def _read(path: str, message: str) -> FileAttack:
    return FileAttack(
        f"return assert(io.open({path!r}, 'r')):read('a')",
        f"open({path!r}).read()",
        f"fs.readFile({path!r}, 'utf8')",
        message,
    )


ATTACKS = {
    "nul_in_path": FileAttack(
        "return assert(io.open('a\\0b', 'w'))", "open('a\\x00b', 'w')", "fs.writeFile('a\\u0000b', 'x')",
        "PERMISSION_DENIED",
    ),
    "dot_dot_out_of_the_root": _read("/../../etc/passwd", "PERMISSION_DENIED"),
    "dot_dot_inside_a_path": _read("data/../../etc/passwd", "PERMISSION_DENIED"),
    "home_directory": _read("~/.ssh/id_rsa", "PERMISSION_DENIED"),
    "absolute_host_path_is_inside_the_root": _read("/etc/passwd", "NOT_FOUND"),
    "proc_self_environ": _read("/proc/self/environ", "NOT_FOUND"),
    "proc_self_root": _read("/proc/self/root/etc/passwd", "NOT_FOUND"),
    "remove_a_host_file": FileAttack(
        "return assert(os.remove('/../etc/hostname'))", "import os\nos.remove('/../etc/hostname')",
        "fs.remove('/../etc/hostname')", "PERMISSION_DENIED",
    ),
    "rename_out_of_the_root": FileAttack(
        "io.open('/x', 'w'):close() return assert(os.rename('/x', '/../x'))",
        "import os\nopen('/x', 'w').close()\nos.rename('/x', '/../x')",
        "fs.writeFile('/x', ''); fs.rename('/x', '/../x')", "PERMISSION_DENIED",
    ),
    "write_past_artifact_bytes": FileAttack(
        "local f = io.open('/big', 'w') local s = string.rep('x', 10000) for i = 1, 100 do f:write(s) end",
        "f = open('/big', 'w')\nfor i in range(100):\n    f.write('x' * 10000)",
        "for (let i = 0; i < 100; i++) fs.appendFile('/big', 'x'.repeat(10000));",
        "RESOURCE_EXHAUSTED", {"artifact_bytes": 200_000},
    ),
    "too_many_files": FileAttack(
        "for i = 1, 5000 do assert(io.open('/f' .. i, 'w')):close() end",
        "for i in range(5000):\n    open('/f%d' % i, 'w').close()",
        "for (let i = 0; i < 5000; i++) fs.writeFile('/f' + i, '');",
        f"the limit is {SCRATCH_BOUNDS.max_entries}",
    ),
    "too_many_open_files": FileAttack(
        "local kept = {} for i = 1, 100 do kept[i] = assert(io.open('/f', 'w')) end",
        "kept = [open('/f', 'w') for i in range(100)]",
        None,  # fs keeps no file open: each call opens and closes its file
        f"the limit is {SCRATCH_BOUNDS.max_open_files}",
    ),
    "path_too_deep": FileAttack(
        "return assert(io.open(string.rep('d/', 40) .. 'f', 'w'))", "open('d/' * 40 + 'f', 'w')",
        "fs.writeFile('d/'.repeat(40) + 'f', '')", "INVALID_ARGUMENT",
    ),
    "read_larger_than_memory": FileAttack(
        "local f = io.open('/big', 'w') local s = string.rep('x', 1 << 20) for i = 1, 40 do f:write(s) end "
        "f:close() return #io.open('/big'):read('a')",
        "f = open('/big', 'w')\nfor i in range(40):\n    f.write('x' * (1 << 20))\nf.close()\nlen(open('/big').read())",
        "for (let i = 0; i < 40; i++) fs.appendFile('/big', 'x'.repeat(1 << 20)); fs.readFile('/big').length",
        "RESOURCE_EXHAUSTED", {"memory_bytes": 32 << 20},
    ),
}  # fmt: skip

LANGUAGES = (Language.LUA, Language.PYTHON, Language.JAVASCRIPT)


CASES = [
    pytest.param(name, language, id=f"{name}-{language.value}")
    for name in sorted(ATTACKS)
    for language in LANGUAGES
    if language is not Language.JAVASCRIPT or ATTACKS[name].javascript is not None
]


@pytest.mark.parametrize(("name", "language"), CASES)
def test_script_file_attack(client: ScriptpoolClient, name: str, language: Language) -> None:
    run_attack(client, language, f"{name}[{language.value}]", ATTACKS[name].in_language(language))


WRITE_HOST_PATHS = {
    Language.LUA: "for _, p in ipairs(INPUT.paths) do local f = assert(io.open(p, 'w')) f:write('pwned') f:close() end "
    "return io.open(INPUT.paths[1]):read('a')",
    Language.PYTHON: "for p in INPUT['paths']:\n    with open(p, 'w') as f:\n        f.write('pwned')\n"
    "open(INPUT['paths'][0]).read()",
    Language.JAVASCRIPT: "for (const p of INPUT.paths) fs.writeFile(p, 'pwned'); fs.readFile(INPUT.paths[0], 'utf8')",
}


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda lang: lang.value)
def test_writing_to_host_paths_writes_inside_the_root_only(client: ScriptpoolClient, language: Language) -> None:
    """Writes to absolute paths that exist on the host (and to one that does not) land in the job's
    root: the job succeeds, and no host file is created or changed."""
    marker = f"/tmp/scriptpool-escape-{uuid.uuid4().hex}"
    host_files = ["/etc/hostname", "/etc/passwd"]
    before = {p: Path(p).read_bytes() for p in host_files if os.path.exists(p)}
    job = client.run(language, WRITE_HOST_PATHS[language], inputs={"paths": [marker, *host_files]}, timeout=60)
    assert result_of(job) == "pwned"
    assert not os.path.exists(marker)
    assert {p: Path(p).read_bytes() for p in before} == before
