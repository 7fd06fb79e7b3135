"""Shared defaults are defined once, in `scriptpool.core.defaults` (issue 15 item 2, ADR 0009): no
other module of the package assigns a literal equal to one of them to a name of the same kind, and
the client, the coordinator and the workers all take theirs from there."""

from __future__ import annotations

import ast
from pathlib import Path

from scriptpool import client
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores import artifact_blobs
from scriptpool.core import defaults
from scriptpool.workers.bridge import artifacts as bridge_artifacts
from scriptpool.workers.settings import WorkerSettings
from tests.conftest import REPO

KINDS = {
    "QUEUE": defaults.DEFAULT_QUEUE,
    "COORDINATOR": defaults.DEFAULT_COORDINATOR,
    "LEASE": defaults.LEASE_SECONDS,
    "TTL": defaults.RESULT_TTL_SECONDS,
    "CHUNK": defaults.ARTIFACT_CHUNK_BYTES,
}
"""A word in a name, and the shared default a name with that word must not redefine."""
ROOTS = ("coordinator", "workers", "sandbox", "proto/scriptpool")


def _literal(node: ast.expr) -> object:
    """The value of a constant expression (numbers, strings and arithmetic on them), else None."""
    if not all(
        isinstance(n, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)) for n in ast.walk(node)
    ):
        return None
    return eval(compile(ast.Expression(node), "<literal>", "eval"))  # only constants and operators


def _redefinitions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        literal = _literal(value)
        for word, shared in KINDS.items():
            if word in target.id.upper() and literal is not None and literal == shared:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {target.id}")
    return found


def test_no_module_but_core_defaults_defines_a_shared_default() -> None:
    files = {p.resolve() for root in ROOTS for p in (REPO / root).rglob("*.py") if "_pb2" not in p.name}
    own = (REPO / "proto/scriptpool/core/defaults.py").resolve()
    found = [hit for path in sorted(files - {own}) for hit in _redefinitions(path)]
    assert found == []
    assert _redefinitions(own)  # the check does see the definitions themselves


def test_each_side_takes_its_defaults_from_the_core() -> None:
    worker = WorkerSettings(redis_url="redis://127.0.0.1:1")
    coordinator = Settings()
    assert worker.queue == coordinator.queue == defaults.DEFAULT_QUEUE
    assert worker.coordinator == coordinator.coordinator == defaults.DEFAULT_COORDINATOR
    assert worker.lease_seconds == coordinator.lease_seconds == defaults.LEASE_SECONDS
    assert worker.result_ttl_seconds == coordinator.result_ttl_seconds == defaults.RESULT_TTL_SECONDS
    chunk = defaults.ARTIFACT_CHUNK_BYTES
    assert client.ARTIFACT_CHUNK_BYTES is chunk
    assert all(vars(server)["ARTIFACT_CHUNK_BYTES"] is chunk for server in (artifact_blobs, bridge_artifacts))
