"""The Redis key schema lives in one module (`scriptpool.core.keys`, issue 15 item 2): the key table in
docs/architecture.md lists exactly its `SCHEMA`, every key builder makes a key of a listed pattern,
and no other module of the package builds an `sp:` key from a literal."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from scriptpool.core import keys
from tests.conftest import REPO

ROOTS = ("coordinator", "workers", "sandbox", "proto/scriptpool")


def _doc_table() -> dict[str, str]:
    """docs/architecture.md's key table: every `sp:` pattern in a row's first column -> its type."""
    text = (REPO / "docs/architecture.md").read_text()
    section = text.split("\n## Redis keys\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `sp:") and len(cells) >= 2:
            for pattern in re.findall(r"`(sp:[^`]+)`", cells[0]):
                assert pattern not in table, f"{pattern} is in the table twice"
                table[pattern] = cells[1]
    return table


def _pattern(schema_key: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}]*\}", schema_key)
    return re.compile("[^:]+".join(re.escape(p) for p in parts))


def test_the_documented_key_table_is_the_schema() -> None:
    assert _doc_table() == keys.SCHEMA


def test_every_key_builder_makes_a_key_of_the_schema() -> None:
    patterns = [_pattern(k) for k in keys.SCHEMA]
    built = [keys.LEASES_KEY, keys.FINISHED_CHANNEL, keys.EXPIRING_SESSIONS_KEY, keys.EVENT_RETENTION_KEY]
    public = {name: f for name, f in vars(keys).items() if not name.startswith("_") and inspect.isfunction(f)}
    builders = [f for name, f in public.items() if name.endswith(("_key", "_index"))]
    assert len(builders) > 25
    for builder in builders:
        params = [p for p in inspect.signature(builder).parameters.values() if p.default is p.empty]
        built.append(builder(*(7 if p.annotation in (int, "int") else "abc" for p in params)))
    built += [keys.session_index("s", suffix) for suffix in (":created", ":size", ":type:t", ":tag:t", ":word:w")]
    built.append(keys.upload_prefix("u") + "0")
    for key in built:
        assert any(p.fullmatch(key) for p in patterns), key


def _key_literals(path: Path) -> list[str]:
    """`sp:` keys built from a literal in Python (a string or f-string starting with `sp:`), outside
    docstrings and Lua source."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        head = None
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            head = node.values[0].value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value:
            head = node.value
        if isinstance(head, str) and head.startswith("sp:"):
            found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)} {head!r}")
    return found


def test_no_module_but_the_schema_builds_a_key_from_a_literal() -> None:
    files = {p.resolve() for root in ROOTS for p in (REPO / root).rglob("*.py") if "_pb2" not in p.name}
    own = (REPO / "proto/scriptpool/core/keys.py").resolve()
    assert [hit for path in sorted(files - {own}) for hit in _key_literals(path)] == []
    assert _key_literals(own)  # the check sees the schema's own literals


def test_the_record_scripts_build_keys_of_the_schema() -> None:
    """The `.lua` record and store scripts build keys from a literal prefix and an argument: each
    prefix begins a pattern of the schema."""
    scripts = [*(REPO / "proto/scriptpool/core/lua").glob("*.lua"), *(REPO / "coordinator/stores/lua").glob("*.lua")]
    prefixes = {p for path in scripts for p in re.findall(r"'(sp:[^']*)'", path.read_text())}
    assert prefixes
    for prefix in prefixes:
        assert any(pattern.startswith(prefix) for pattern in keys.SCHEMA), prefix
