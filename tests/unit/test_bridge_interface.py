"""The five globals' bridge handlers (workers/bridge/{sessions,artifacts,state,hooks,events}.py) use
the job's bridge only through `BridgeCalls` (workers/bridge/calls.py): no private name of
`CoordinatorBridge`, no import of it. (That the bridge satisfies the interface is checked by mypy:
the bridge passes itself to handlers typed `Handler`.)"""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

import pytest

from scriptpool.workers.bridge import artifacts, calls, events, hooks, host, sessions, state

HANDLER_MODULES: dict[str, ModuleType] = {
    "Session": sessions,
    "Artifact": artifacts,
    "State": state,
    "Hook": hooks,
    "Event": events,
}


def _interface_names() -> set[str]:
    protocol = calls.BridgeCalls
    names = set(protocol.__annotations__)
    names |= {name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_")}
    return names


def test_the_interface_is_small_and_public() -> None:
    names = _interface_names()
    assert names == {
        "sessions", "artifacts", "state", "events", "current_session", "content_bytes_limit",
        "unary", "call_time_left", "charge_artifact_bytes", "event_book",
    }  # fmt: skip
    assert not any(name.startswith("_") for name in names)


@pytest.mark.parametrize("global_name", HANDLER_MODULES)
def test_a_handler_module_uses_only_the_interface(global_name: str) -> None:
    module = HANDLER_MODULES[global_name]
    tree = ast.parse(inspect.getsource(module))
    allowed = _interface_names()
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "bridge"
    }
    assert used <= allowed, f"{module.__name__} uses {sorted(used - allowed)} of the bridge, outside BridgeCalls"
    imported = {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not any("bridge.host" in name or name.endswith("CoordinatorBridge") for name in imported)


@pytest.mark.parametrize("global_name", HANDLER_MODULES)
def test_each_module_handles_its_own_global(global_name: str) -> None:
    handlers = HANDLER_MODULES[global_name].HANDLERS
    assert handlers
    assert all(op.startswith(f"{global_name}.") for op in handlers if op != sessions.AWAIT_REPLAY_OP)


def test_the_bridge_dispatches_every_operation_to_exactly_one_module() -> None:
    owners: dict[str, str] = {}
    for global_name, module in HANDLER_MODULES.items():
        for op in module.HANDLERS:
            assert op not in owners, f"{op} is handled by both {owners[op]} and {global_name}"
            owners[op] = global_name
    assert set(host._HANDLERS) == set(owners)
