"""Which scope each RPC needs, and the interceptor that checks it before any handler runs.

`REQUIRED` is the one table: every RPC of every scriptpool service, by full method name, with the
scope a client key needs for it (docs/adr/0019-key-management.md):
  read    every RPC that only reads (including the caller's own event/hook deliveries: a reader
          must be able to follow what happens);
  submit  submitting and cancelling jobs and every other write through the client API;
  admin   AdminService (managing keys).
`JOB_ONLY` marks what only a running job's credential may call. A job credential acts for its job
on every other RPC but AdminService, as before scopes existed (the handlers' own checks still hold).

`ScopeCheck` authenticates each call once (`Authenticator.authenticate`), refuses it
(UNAUTHENTICATED for a missing, unknown, revoked or expired key; PERMISSION_DENIED naming the scope
needed) and hands the handler an `AuthorizedContext` carrying the caller. A scriptpool method the
table does not name is refused (tests/unit/test_scopes.py fails first on a new RPC left out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import grpc

from scriptpool.coordinator.auth import Authenticator, AuthorizedContext, Caller
from scriptpool.coordinator.interceptors import WrappingInterceptor
from scriptpool.coordinator.status import OWN_METHODS, abort_for
from scriptpool.coordinator.stores.api_keys import Scope
from scriptpool.errors import PermissionDenied

JOB_ONLY = "job"
"""Only a running job's credential may call it."""
READ, SUBMIT, ADMIN = Scope.READ, Scope.SUBMIT, Scope.ADMIN

_BY_SERVICE: dict[str, dict[str, Scope | str]] = {
    "JobService": {
        "SubmitJob": SUBMIT, "SubmitJobs": SUBMIT, "CancelJob": SUBMIT,
        "GetJob": READ, "WaitJob": READ, "ListJobs": READ,
    },
    "SessionService": {
        "Create": SUBMIT, "SetCurrent": SUBMIT, "Suspend": SUBMIT, "Resume": SUBMIT, "Complete": SUBMIT,
        "Delete": SUBMIT, "UpdateMetadata": SUBMIT, "SetTags": SUBMIT, "Save": SUBMIT, "Load": SUBMIT,
        "SaveAll": SUBMIT, "RestoreRecent": SUBMIT, "Replay": SUBMIT, "RecordRefusedCall": JOB_ONLY,
        "Get": READ, "List": READ, "GetCurrent": READ, "GetMetadata": READ, "GetTags": READ, "CanReplay": READ,
        "GetTimeline": READ, "GetReplayMetadata": READ,
        "Grant": SUBMIT, "Revoke": SUBMIT, "ListGrants": READ, "GetAuditLog": READ,
    },
    "ArtifactService": {
        "Store": SUBMIT, "Update": SUBMIT, "Delete": SUBMIT, "GrantPermission": SUBMIT, "RevokePermission": SUBMIT,
        "Get": READ, "GetContent": READ, "List": READ, "Query": READ, "FindByType": READ, "FindByTag": READ,
        "Search": READ, "GetPermissions": READ, "CheckAccess": READ, "GetAuditLog": READ,
    },
    "StateService": {
        "Set": SUBMIT, "Delete": SUBMIT, "Increment": SUBMIT, "CompareAndSet": SUBMIT,
        "Get": READ, "List": READ,
    },
    "HookService": {"Register": SUBMIT, "Unregister": SUBMIT, "List": READ, "Poll": READ},
    "EventService": {"Emit": SUBMIT, "Subscribe": READ, "Receive": READ, "Unsubscribe": READ, "Stream": READ},
    "JobCallService": {"Calls": JOB_ONLY},
    "AdminService": {"CreateKey": ADMIN, "ListKeys": ADMIN, "RevokeKey": ADMIN, "RotateKey": ADMIN},
}  # fmt: skip

REQUIRED: dict[str, Scope | str] = {
    f"{OWN_METHODS}{service}/{method}": scope
    for service, methods in _BY_SERVICE.items()
    for method, scope in methods.items()
}
"""Full method name (`/scriptpool.v1.JobService/SubmitJob`) -> the scope it needs, or `JOB_ONLY`."""


def check(caller: Caller, method: str) -> None:
    """PermissionDenied unless `caller` may call `method`."""
    needed = REQUIRED.get(method)
    name = method.removeprefix(OWN_METHODS)
    if needed is None:
        raise PermissionDenied(f"{name}: no scope is defined for it in this coordinator; nobody may call it")
    if caller.is_job:
        if needed == ADMIN:
            raise PermissionDenied(
                f"{name} needs a client API key with the 'admin' scope; a job credential cannot call it"
            )
        return
    if needed == JOB_ONLY:
        return  # (the handler refuses a client with its own message)
    if needed not in caller.scopes:
        held = ", ".join(sorted(caller.scopes)) or "none"
        raise PermissionDenied(f"{name} needs an API key with the '{needed}' scope; this key has: {held}")


class ScopeCheck(WrappingInterceptor):
    """Every scriptpool method's handler runs only after its caller was authenticated and checked."""

    def __init__(self, auth: Authenticator) -> None:
        super().__init__()
        self.auth = auth

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if not method.startswith(OWN_METHODS):
            return handler  # (health and reflection need no key)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                checked: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
                    **{kind: self._checked(method, behaviour)}
                )
                return checked
        return handler

    def _checked(self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                caller = self.auth.authenticate(context.invocation_metadata())
                check(caller, method)
            except Exception as exc:
                abort_for(context, exc)
            return behaviour(request, cast(grpc.ServicerContext, AuthorizedContext(context, caller)))

        return run


__all__ = ["JOB_ONLY", "REQUIRED", "ScopeCheck", "check"]
