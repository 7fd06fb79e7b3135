"""The access matrix (issue 18 item 7): every RPC of every scriptpool.v1 service, called against
the owner's objects (session, artifact, job, state key, subscription, hook, API key) by each kind of
caller (`Column`), with the verdict each cell must get: ALLOW (OK), or the exact refusal —
UNAUTHENTICATED naming why, PERMISSION_DENIED naming the scope or credential needed, or NOT_FOUND
answered exactly as for an id of nothing (ADR 0017). A refused call that would change something
(delete, complete, updateMetadata, replay, load, grant, cancel, ...) is checked to have changed
nothing: the owner reads every object back afterwards (`fingerprint`). The rows come from the proto
descriptors: a new RPC without a row fails `test_every_rpc_has_a_row`. The script globals' matrix is
test_access_matrix_scripts.py.
"""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import Iterable, Iterator

import grpc
import pytest
from redis import Redis

import scriptpool.v1
from scriptpool.coordinator.scopes import JOB_ONLY
from scriptpool.coordinator.stores.api_keys import Scope
from scriptpool.outcomes import Outcome
from scriptpool.v1 import admin_pb2, calls_pb2, common_pb2
from tests.conftest import Stack

from .helpers import outcome
from .matrix_world import (
    GRANTED,
    OWNERS,
    READER,
    SCOPES,
    UNAUTHENTICATED_BY,
    Callers,
    Column,
    Shape,
    World,
    build_world,
    callers,
    fingerprint,
    finished_job,
)
from .probes import ONE, PROBES, ST, A, E, Ids, Probe, S, Stubs, answer, state_scope

Verdict = tuple[grpc.StatusCode, str]
"""An expected cell: the code, and a text its message must contain ("" for OK)."""
ALLOW: Verdict = (grpc.StatusCode.OK, "")
AS_NOTHING: Verdict = (grpc.StatusCode.NOT_FOUND, "as for an id of nothing")


def _stream_until_deadline(call: Iterable[object]) -> str:
    """A stream with no end of its own: served (OK) when it runs until the call's deadline."""
    try:
        return f"{len(list(call))} messages"
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return "streamed until the deadline"
        raise


_EMPTY = common_pb2.Empty()
MORE_PROBES = [
    Probe(
        "Session.Create", (), lambda s, i, _: s.sessions.Create(S.CreateSessionRequest(name="m"), metadata=s.metadata)
    ),
    Probe("Session.List", (), lambda s, i, _: s.sessions.List(S.ListSessionsRequest(), metadata=s.metadata)),
    Probe(
        "Artifact.Query(all)",
        (),
        lambda s, i, _: s.artifacts.Query(A.ArtifactQuery(tags=["t"]), metadata=s.metadata),
    ),
    Probe(
        "Artifact.Search(all)",
        (),
        lambda s, i, _: s.artifacts.Search(A.SearchArtifactsRequest(text="hello"), metadata=s.metadata),
    ),
    Probe("Session.GetCurrent", (), lambda s, i, _: s.sessions.GetCurrent(_EMPTY, metadata=s.metadata)),
    Probe("Session.SaveAll", (), lambda s, i, _: s.sessions.SaveAll(_EMPTY, metadata=s.metadata)),
    Probe(
        "Session.RestoreRecent",
        (),
        lambda s, i, _: s.sessions.RestoreRecent(S.RestoreRecentRequest(count=1), metadata=s.metadata),
    ),
    Probe(
        "Session.RecordRefusedCall",
        (),
        lambda s, i, _: s.sessions.RecordRefusedCall(
            S.RefusedCall(op="Session.get", code="NOT_FOUND"), metadata=s.metadata
        ),
    ),
    Probe("Event.Emit", (), lambda s, i, _: s.events.Emit(E.EmitEventRequest(name="matrix.x"), metadata=s.metadata)),
    Probe(
        "Event.Subscribe",
        (),
        lambda s, i, _: s.events.Subscribe(E.SubscribeRequest(pattern="matrix.*"), metadata=s.metadata),
    ),
    Probe(
        "Event.Stream",
        (),
        lambda s, i, _: _stream_until_deadline(
            s.events.Stream(E.SubscribeRequest(pattern="matrix.*"), metadata=s.metadata, timeout=0.5)
        ),
    ),
    Probe(
        "Hook.Register",
        (),
        lambda s, i, _: s.hooks.Register(E.RegisterHookRequest(hook_point="session.created"), metadata=s.metadata),
    ),
    Probe("Hook.List", (), lambda s, i, _: s.hooks.List(_EMPTY, metadata=s.metadata)),
    Probe("Hook.Poll", (), lambda s, i, _: s.hooks.Poll(E.PollHooksRequest(), metadata=s.metadata)),
    Probe("JobCall.Calls", (), lambda s, i, _: list(s.calls.Calls(iter([calls_pb2.JobCall()]), metadata=s.metadata))),
    Probe(
        "Admin.CreateKey",
        (),
        lambda s, i, _: s.admin.CreateKey(
            admin_pb2.CreateKeyRequest(principal=f"t-{uuid.uuid4().hex[:8]}"), metadata=s.metadata
        ),
    ),
    Probe(
        "Admin.ListKeys",
        (),
        lambda s, i, _: s.admin.ListKeys(admin_pb2.ListKeysRequest(page_size=1), metadata=s.metadata),
    ),
    Probe(
        "Admin.RevokeKey",
        ("key",),
        lambda s, i, _: s.admin.RevokeKey(admin_pb2.KeyRef(id=i["key"]), metadata=s.metadata),
    ),
    Probe(
        "Admin.RotateKey",
        ("key",),
        lambda s, i, _: s.admin.RotateKey(admin_pb2.KeyRef(id=i["key"]), metadata=s.metadata),
    ),
]


def _change(i: Ids, permission: str) -> A.PermissionChange:
    return A.PermissionChange(session_id=i["session"], artifact_id=i["artifact"], user=READER, permission=permission)


TWO = common_pb2.Value(int_value=2)
OWN_PROBES = {
    probe.name: probe
    for probe in [
        # (the shared probes grant and revoke the caller itself: here a third principal's read is
        # what a refused revoke must leave and a refused grant must not raise)
        Probe(
            "Artifact.GrantPermission",
            ("session", "artifact"),
            lambda s, i, _: s.artifacts.GrantPermission(_change(i, "write"), metadata=s.metadata),
        ),
        Probe(
            "Session.Grant",
            ("session",),
            lambda s, i, _: s.sessions.Grant(
                S.SessionGrantChange(session_id=i["session"], principal=READER, level="write"), metadata=s.metadata
            ),
        ),
        Probe(
            "Session.Revoke",
            ("session",),
            lambda s, i, _: s.sessions.Revoke(
                S.SessionGrantChange(session_id=i["session"], principal=READER), metadata=s.metadata
            ),
        ),
        Probe(
            "State.Set",
            ("session",),
            lambda s, i, _: s.state.Set(
                ST.SetStateRequest(scope=state_scope(i), key="k", value=TWO), metadata=s.metadata
            ),
        ),
        Probe(
            "State.CompareAndSet",
            ("session",),
            lambda s, i, _: s.state.CompareAndSet(
                ST.CompareAndSetRequest(scope=state_scope(i), key="k", expected=ONE, new_value=TWO), metadata=s.metadata
            ),
        ),
        Probe(
            "Artifact.RevokePermission",
            ("session", "artifact"),
            lambda s, i, _: s.artifacts.RevokePermission(_change(i, "read"), metadata=s.metadata),
        ),
    ]
}
ALL_PROBES = [OWN_PROBES.get(probe.name, probe) for probe in PROBES] + MORE_PROBES

SERVICE_OF = {
    "Session": "SessionService", "Job": "JobService", "Artifact": "ArtifactService", "State": "StateService",
    "Event": "EventService", "Hook": "HookService", "JobCall": "JobCallService", "Admin": "AdminService",
}  # fmt: skip

CHANGES = {
    "Session.Suspend", "Session.Resume", "Session.Complete", "Session.Delete", "Session.UpdateMetadata",
    "Session.SetTags", "Session.Save", "Session.Load(latest)", "Session.Load(1)", "Session.Replay",
    "Session.Create(parent)", "Job.CancelJob", "Job.SubmitJob(session)", "Job.SubmitJobs(session)",
    "Artifact.Store(session)", "Artifact.Update", "Artifact.Delete", "Artifact.GrantPermission",
    "Artifact.RevokePermission", "State.Set", "State.Delete", "State.Increment", "State.CompareAndSet",
    "Event.Unsubscribe", "Hook.Unregister", "Admin.RevokeKey", "Admin.RotateKey", "Session.Grant", "Session.Revoke",
}  # fmt: skip
"""Rows whose call changes the object it names: each is made against a fresh world, and where it is
refused the owner reads the world back unchanged; where it is allowed, against a world of its own."""

JOB_REFUSED = {
    "Job.SubmitJob(session)", "Job.SubmitJobs(session)", "Job.CancelJob", "Event.Stream",
    "Hook.Register", "Hook.Unregister", "Hook.List", "Hook.Poll", "Session.Grant", "Session.Revoke",
}  # fmt: skip
"""What a job credential may not call at all (PERMISSION_DENIED before any lookup, whatever the id)."""

ALLOWED_AS: dict[tuple[str, Column], Verdict] = {
    ("Artifact.Get(version 2)", column): (grpc.StatusCode.NOT_FOUND, "has no version 2 (latest is 1)")
    for column in (Column.OWNER, Column.READ_ONLY, *GRANTED)
}
"""Cells an allowed caller reaches but the object's own state answers (not an access decision)."""


SHAPES = {
    "Session.Resume": Shape(suspended=True),
    "Session.Replay": Shape(ran=True),
    "Job.CancelJob": Shape(running_job=True),
}
"""Rows whose call needs a world in some state: for its owner's call to be served, or for a refused
call to have something to change (a running job to cancel)."""
ALLOWED_SHAPES = {**SHAPES, "Job.CancelJob": Shape(queued=True)}
"""The worlds of allowed cells (a held job per cell would wait for a free worker: both are busy)."""


SHARED_NEEDS = {
    **dict.fromkeys(
        ["Session.Get", "Session.GetMetadata", "Session.GetTags", "Session.GetTimeline", "Event.Subscribe(session)",
         "Artifact.List", "Artifact.Query(session)", "Artifact.FindByType", "Artifact.FindByTag", "Artifact.Search",
         "Artifact.Get", "Artifact.Get(version 2)", "Artifact.GetContent", "Artifact.CheckAccess",
         "Artifact.GetPermissions", "State.Get",
         "State.List"],
        "read",
    ),
    **dict.fromkeys(
        ["Session.UpdateMetadata", "Session.SetTags", "Artifact.Store(session)", "Artifact.Update", "State.Set",
         "State.Delete", "State.Increment", "State.CompareAndSet"],
        "write",
    ),
    **dict.fromkeys(
        ["Session.Suspend", "Session.Resume", "Session.Complete", "Session.Grant", "Session.Revoke",
         "Session.ListGrants", "Session.GetAuditLog", "Artifact.Delete"],
        "admin",
    ),
}  # fmt: skip
"""What a grantee needs on the shared session for each row on it (ADR 0021). Every other row naming
the session (or an artifact in it) is the owner's alone: PERMISSION_DENIED naming what the grantee
holds; a row naming another kind of object (a job, subscription, hook) is NOT_FOUND as for nothing:
grants share the session and what it holds, nothing else."""
LEVELS = ("read", "write", "admin")
ON_ARTIFACTS = {"read": "read", "write": "write", "admin": "delete"}
"""The level a session grant gives on the session's artifacts (an artifact's own admin stays its owner's)."""
NOT_SHARED = {"Job.SubmitJob(session)", "Job.SubmitJobs(session)"}
"""Owner-only rows answered to a grantee as for a session of nothing (a job submitted into a shared
session would run as the grantee inside the owner's session: ADR 0021 refuses it)."""


def for_grantee(probe: Probe, column: Column) -> Verdict:
    held = GRANTED[column]
    need = SHARED_NEEDS.get(probe.name)
    if need is not None and LEVELS.index(held) >= LEVELS.index(need):
        return ALLOWED_AS.get((probe.name, column), ALLOW)
    if "session" not in probe.uses or probe.name in NOT_SHARED:
        return AS_NOTHING
    if "artifact" in probe.uses:
        return grpc.StatusCode.PERMISSION_DENIED, f"has {ON_ARTIFACTS[held]}"
    return grpc.StatusCode.PERMISSION_DENIED, f"needs {need or 'owner'}; has {held}"


OTHER_WRITES = {
    "Session.Create", "Session.SetCurrent", "Session.SaveAll", "Session.RestoreRecent", "Event.Emit", "Hook.Register",
}  # fmt: skip
"""Rows that write something other than the world's objects (they need `submit` too)."""
READER_STATE = {"Event.Unsubscribe"}
"""Changes only the caller's own reader state: `read` suffices (ADR 0019)."""
JOB_ONLY_ROWS = {"Session.RecordRefusedCall", "JobCall.Calls"}


def scope_of(probe: Probe) -> Scope | str:
    """The scope a client key needs for the row, decided here (not read from coordinator/scopes.py,
    so the matrix also checks that table): admin for AdminService, submit for whatever writes,
    read for the rest."""
    if probe.name.startswith("Admin."):
        return Scope.ADMIN
    if probe.name in JOB_ONLY_ROWS:
        return JOB_ONLY
    writes = probe.name in CHANGES | OTHER_WRITES and probe.name not in READER_STATE
    return Scope.SUBMIT if writes else Scope.READ


def method_of(probe: Probe) -> str:
    prefix, _, method = probe.name.split("(")[0].partition(".")
    return f"/scriptpool.v1.{SERVICE_OF[prefix]}/{method}"


def expected(probe: Probe, column: Column) -> Verdict:
    """The verdict of the cell, from what the row's RPC needs and who the column is."""
    if column in UNAUTHENTICATED_BY:
        return grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_BY[column]
    needed = scope_of(probe)
    guarded = probe.refused and bool(probe.uses) and needed != Scope.ADMIN
    denied = grpc.StatusCode.PERMISSION_DENIED
    if column is Column.JOB_OTHER:
        if needed == Scope.ADMIN:
            return denied, "needs a client API key with the 'admin' scope; a job credential cannot call it"
        if probe.name in JOB_REFUSED:
            return denied, "needs a client API key; a job credential cannot call it"
        return AS_NOTHING if guarded else ALLOW
    if needed == JOB_ONLY:
        return denied, "job credential only" if probe.name.startswith("Session.") else "job credential"
    scopes = SCOPES[column]
    if needed not in scopes:
        return denied, f"needs an API key with the '{needed}' scope; this key has: {', '.join(sorted(scopes))}"
    if guarded and column in GRANTED:
        return for_grantee(probe, column)
    if guarded and column not in OWNERS:
        return AS_NOTHING
    return ALLOWED_AS.get((probe.name, column), ALLOW)


@pytest.fixture(scope="module")
def who(stack: Stack, redis_client: Redis) -> Iterator[Callers]:
    with callers(stack, redis_client) as found:
        yield found


@pytest.fixture(scope="module")
def done_job(stack: Stack, who: Callers) -> str:
    return finished_job(stack, who.tokens[Column.OWNER])


@pytest.fixture(scope="module")
def shared_world(stack: Stack, who: Callers, done_job: str) -> Iterator[World]:
    """The world of the rows that change nothing."""
    world = build_world(stack, who, done_job)
    yield world
    world.close()


FINDS_THE_WORLD = {"Artifact.Query(all)", "Artifact.Search(all)"}
"""Searches across the caller's sessions: the owner's finds the world's artifact (so another's not
finding it means something)."""


def _sees_the_world(column: Column, probe: Probe) -> bool:
    """Whether the column's answers may name the owner's objects (`answer` writes each as `<its
    kind>`): the owner's keys, the grantees, and an admin managing keys (any principal's)."""
    return column in (*OWNERS, *GRANTED) or (column is Column.ADMIN_OTHER and probe.name.startswith("Admin."))


def _observe(stack: Stack, probe: Probe, token: str, ids: Ids, me: str, wanted: Verdict) -> tuple[Verdict, str]:
    """The cell's answer (code, message) and, when it should be refused as nothing, the answer
    for ids of nothing to compare with."""
    with grpc.insecure_channel(stack.address) as channel:
        stubs = Stubs(channel, token)
        got = answer(probe, stubs, ids, me)
        nothing = ""
        if wanted is AS_NOTHING:
            nothing = answer(probe, stubs, {kind: str(uuid.uuid4()) for kind in probe.uses}, me)[1]
    return got, nothing


def _matches(got: Verdict, nothing: str, wanted: Verdict) -> bool:
    code, message = got
    if wanted is AS_NOTHING:
        return code is grpc.StatusCode.NOT_FOUND and message == nothing
    return code is wanted[0] and wanted[1] in message


@pytest.mark.parametrize("probe", ALL_PROBES, ids=lambda probe: probe.name)
def test_the_matrix_row(stack: Stack, who: Callers, done_job: str, shared_world: World, probe: Probe) -> None:
    changes = probe.name in CHANGES
    owner_key = who.tokens[Column.OWNER]

    def new_world(allowed: bool = False) -> World:
        shapes = ALLOWED_SHAPES if allowed else SHAPES
        return build_world(stack, who, done_job, shapes.get(probe.name, Shape()))

    refused_world = new_world() if changes else shared_world
    before = fingerprint(stack, owner_key, refused_world)
    wrong = {}
    unseen: set[str] = set()
    try:
        for column in Column:
            wanted = expected(probe, column)
            own = changes and wanted is not AS_NOTHING and wanted[0] is grpc.StatusCode.OK
            world = new_world(allowed=True) if own else refused_world
            try:
                start = fingerprint(stack, owner_key, world) if own else {}
                token, me = who.tokens[column], who.principals.get(column, "")
                got, nothing = _observe(stack, probe, token, world.ids, me, wanted)
                if own and got[0] is grpc.StatusCode.OK and fingerprint(stack, owner_key, world) == start:
                    unseen.add(column.value)
            finally:
                if own:
                    world.close()
            if not _matches(got, nothing, wanted):
                wrong[column.value] = {"wanted": wanted, "got": got, "nothing": nothing}
            elif got[0] is grpc.StatusCode.OK and not _sees_the_world(column, probe) and "<" in got[1]:
                wrong[column.value] = {"served another's object": got}
            elif column is Column.OWNER and probe.name in FINDS_THE_WORLD and "<artifact>" not in got[1]:
                wrong[column.value] = {"the owner's search missed the world's artifact": got}
        if changes:
            assert fingerprint(stack, owner_key, refused_world) == before, "a refused call changed the owner's objects"
        if refused_world.held is not None:  # (and no refused cancel was left pending: it runs to its end)
            held, refused_world.held = refused_world.held, None
            held.release()
            assert outcome(held.client.wait(held.job.id, timeout=30)) is Outcome.OK
    finally:
        if changes:
            refused_world.close()
    assert wrong == {}
    # (the fingerprint sees what each of these calls changes, so it would see a refused one's change)
    assert unseen == set()


def test_every_rpc_has_a_row() -> None:
    """Every method of every service in every scriptpool.v1 proto module is a row (and every row
    names a real RPC): a new RPC fails here until the matrix says who may call it."""
    modules = [
        importlib.import_module(f"scriptpool.v1.{info.name}")
        for info in pkgutil.iter_modules(scriptpool.v1.__path__)
        if info.name.endswith("_pb2")
    ]
    rpcs = {
        f"/{service.full_name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    rows = {method_of(probe) for probe in ALL_PROBES}
    assert len(rpcs) > 60
    assert rpcs - rows == set(), "RPCs without a row in the access matrix"
    assert rows - rpcs == set()
    assert CHANGES | OTHER_WRITES | JOB_ONLY_ROWS <= {probe.name for probe in ALL_PROBES}
