"""The client SDK (`scriptpool.client`) is light and its public surface is pinned: importing it
loads no coordinator, worker, sandbox, RQ or Redis code, starts no thread and sets no environment
variable; every RPC a client may call has a typed method; a change to the surface fails here first
(like temporalio's tests/test_client_exports.py)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tomllib

import grpc
import pytest

from scriptpool import client as sdk
from scriptpool.errors import PermissionDenied
from scriptpool.v1 import admin_pb2, artifacts_pb2, events_pb2, jobs_pb2, sessions_pb2, state_pb2
from tests.conftest import REPO

HEAVY = {"coordinator", "workers", "sandbox", "rq", "redis", "lupa", "wasmtime", "quickjs",
         "RestrictedPython", "hiredis"}  # fmt: skip
PROBE = """
import json, os, sys, threading
import scriptpool.client
print(json.dumps({
    "modules": sorted(sys.modules),
    "threads": threading.active_count(),
    "fork_support": os.environ.get("GRPC_ENABLE_FORK_SUPPORT"),
}))
"""

SURFACE = {
    "ScriptpoolClient": [
        "admin", "artifacts", "cancel", "channel", "close", "create_session", "events", "follow_events", "get_job",
        "get_session", "hooks", "list_jobs", "list_sessions", "read_artifact", "read_artifact_content",
        "reconnect_seconds", "run", "run_many", "sessions", "state", "store_artifact", "submit", "submit_many",
        "wait",
    ],
    "Sessions": [
        "can_replay", "complete", "create", "delete", "get", "get_audit_log", "get_current", "get_metadata",
        "get_replay_metadata", "get_tags", "get_timeline", "grant", "list", "list_grants", "load",
        "record_refused_call", "replay", "restore_recent", "resume", "revoke", "save", "save_all", "set_current",
        "set_tags", "suspend", "update_metadata",
    ],
    "Admin": ["create_key", "list_keys", "revoke_key", "rotate_key"],
    "State": ["compare_and_set", "delete", "get", "increment", "list", "set"],
    "Events": ["emit", "receive", "subscribe", "unsubscribe"],
    "Hooks": ["list", "poll", "register", "unregister"],
    "Artifacts": [
        "check_access", "delete", "find_by_tag", "find_by_type", "get_audit_log", "get_permissions",
        "grant_permission", "list", "query", "revoke_permission", "search",
    ],
}  # fmt: skip
MODULE_EXPORTS = ["ARTIFACT_CHUNK_BYTES", "Admin", "Artifacts", "ClientTls", "Events", "Hooks", "ScriptpoolClient",
                  "Sessions", "State", "job_request", "new_idempotency_key"]  # fmt: skip
# RPCs whose method on the client has another name (streams, and jobs on the client itself).
OTHER_NAMES = {
    "JobService.SubmitJob": "ScriptpoolClient.submit",
    "JobService.SubmitJobs": "ScriptpoolClient.submit_many",
    "JobService.GetJob": "ScriptpoolClient.get_job",
    "JobService.WaitJob": "ScriptpoolClient.wait",
    "JobService.CancelJob": "ScriptpoolClient.cancel",
    "JobService.ListJobs": "ScriptpoolClient.list_jobs",
    "EventService.Stream": "ScriptpoolClient.follow_events",
    "ArtifactService.Store": "ScriptpoolClient.store_artifact",
    "ArtifactService.Update": "ScriptpoolClient.store_artifact",
    "ArtifactService.Get": "ScriptpoolClient.read_artifact",
    "ArtifactService.GetContent": "ScriptpoolClient.read_artifact_content",
}
SERVICES = {
    "SessionService": (sessions_pb2, "Sessions"),
    "StateService": (state_pb2, "State"),
    "EventService": (events_pb2, "Events"),
    "HookService": (events_pb2, "Hooks"),
    "ArtifactService": (artifacts_pb2, "Artifacts"),
    "JobService": (jobs_pb2, ""),
    "AdminService": (admin_pb2, "Admin"),
}


def _public(cls: type) -> list[str]:
    names = {name for name in vars(cls) if not name.startswith("_")}
    if cls is sdk.ScriptpoolClient:  # instance attributes set in __init__
        names |= set(re.findall(r"self\.([a-z]\w*) = ", inspect.getsource(cls.__init__)))
    return sorted(names)


def test_importing_the_client_loads_nothing_but_the_wire_contract_grpc_and_the_core() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(probe.stdout)
    loaded = {name.split(".")[0] for name in seen["modules"]}
    ours = {name.split(".")[1] for name in seen["modules"] if name.startswith("scriptpool.")}
    assert loaded & HEAVY == set()
    assert ours & {"coordinator", "workers", "sandbox"} == set()
    assert seen["threads"] == 1
    assert seen["fork_support"] is None


def test_the_public_surface_is_what_it_was() -> None:
    for name, expected in SURFACE.items():
        assert _public(getattr(sdk, name)) == sorted(expected), name
    assert sorted(sdk.__all__) == MODULE_EXPORTS
    assert all(hasattr(sdk, name) for name in sdk.__all__)


def test_every_rpc_a_client_may_call_has_a_typed_method() -> None:
    for service, (module, cls_name) in SERVICES.items():
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            full = f"{service}.{method.name}"
            if full in OTHER_NAMES:
                owner, attr = OTHER_NAMES[full].split(".")
            else:
                owner, attr = cls_name, re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower()
            found = getattr(getattr(sdk, owner), attr, None)
            assert callable(found), f"{full}: no {owner}.{attr}"
            hints = inspect.get_annotations(found, eval_str=True)
            assert "return" in hints and hints["return"] is not object, full
            if full not in OTHER_NAMES:
                assert (
                    hints["request"] is getattr(module, method.input_type.name, None)
                    or hints["request"].DESCRIPTOR.full_name == method.input_type.full_name
                ), full
                assert hints["return"].DESCRIPTOR.full_name == method.output_type.full_name, full


def test_the_base_install_is_the_client_and_extras_add_the_server_side() -> None:
    with open(REPO / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    assert sorted(dep.split("==")[0] for dep in project["dependencies"]) == ["grpcio", "protobuf"]
    extras = project["optional-dependencies"]
    assert {"lupa", "wasmtime", "quickjs-rs", "RestrictedPython", "rq"} <= {d.split("==")[0] for d in extras["worker"]}
    assert {"rq", "redis", "grpcio-health-checking"} <= {d.split("==")[0] for d in extras["server"]}
    assert {"opentelemetry-api", "opentelemetry-sdk"} == {d.split("==")[0] for d in extras["tracing"]}
    assert all("==" in dep for dep in extras["tracing"])  # exact pins, like every other extra
    assert "python-json-logger" in {d.split("==")[0] for d in extras["server"]} & {
        d.split("==")[0] for d in extras["worker"]
    }
    assert extras["all"] == ["scriptpool[server,worker,tracing]"]


class _Denied(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A unary call's error as grpc raises it: an RpcError that is also a Call."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> str:
        return "not yours"


def test_an_error_keeps_its_grpc_cause() -> None:
    error = _Denied()

    def failing(request: object, metadata: object = None, timeout: object = None) -> object:
        raise error

    calls = sdk._Calls((("authorization", "Bearer k"),), 1.0)
    with pytest.raises(PermissionDenied, match="not yours") as raised:
        calls(failing, object())  # type: ignore[arg-type]
    assert raised.value.__cause__ is error
