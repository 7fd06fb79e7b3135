"""The RPC -> scope table (`coordinator/scopes.py`) names every RPC of every service in the proto,
so a new RPC cannot be left out (it would be refused to everyone until it is in the table), and
the check answers each kind of caller as ADR 0019 says."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import scriptpool.v1
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.scopes import JOB_ONLY, REQUIRED, check
from scriptpool.coordinator.stores.api_keys import ALL_SCOPES, Scope
from scriptpool.errors import PermissionDenied


def _every_rpc() -> set[str]:
    names = set()
    for module_info in pkgutil.iter_modules(scriptpool.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"scriptpool.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return names


def test_every_rpc_of_every_service_has_a_scope_and_the_table_names_no_other() -> None:
    rpcs = _every_rpc()
    assert "/scriptpool.v1.AdminService/CreateKey" in rpcs  # (the walk found the services)
    assert set(REQUIRED) == rpcs
    assert set(REQUIRED.values()) <= {*Scope, JOB_ONLY}


def test_admin_service_needs_admin_and_nothing_else_does() -> None:
    admin = {method for method, scope in REQUIRED.items() if scope == Scope.ADMIN}
    assert admin == {m for m in REQUIRED if m.startswith("/scriptpool.v1.AdminService/")}


@pytest.mark.parametrize(
    ("method", "scopes", "needed"),
    [
        ("/scriptpool.v1.JobService/SubmitJob", {Scope.READ}, "submit"),
        ("/scriptpool.v1.JobService/GetJob", {Scope.SUBMIT}, "read"),
        ("/scriptpool.v1.StateService/Set", {Scope.READ, Scope.ADMIN}, "submit"),
        ("/scriptpool.v1.AdminService/ListKeys", {Scope.READ, Scope.SUBMIT}, "admin"),
    ],
)
def test_a_key_without_the_scope_is_refused_naming_it(method: str, scopes: set[Scope], needed: str) -> None:
    with pytest.raises(PermissionDenied, match=f"needs an API key with the '{needed}' scope"):
        check(Caller(principal="p", scopes=frozenset(scopes)), method)
    check(Caller(principal="p", scopes=frozenset({*scopes, Scope(needed)})), method)


def test_a_job_credential_acts_for_its_job_everywhere_but_admin() -> None:
    job = Caller(principal="p", job_id="j", session_id="s")
    for method, scope in REQUIRED.items():
        if scope == Scope.ADMIN:
            with pytest.raises(PermissionDenied, match="job credential cannot"):
                check(job, method)
        else:
            check(job, method)


def test_a_method_outside_the_table_is_refused_to_everyone() -> None:
    with pytest.raises(PermissionDenied, match="no scope is defined"):
        check(Caller(principal="p", scopes=ALL_SCOPES), "/scriptpool.v1.JobService/Future")
