"""No existence oracle (issue 18 item 6, ADR 0017).

Every RPC that takes an id, called by an unrelated principal, answers exactly the same for an object
that exists (owned by someone else) and for a well-formed id of nothing: the same status code and,
once each id in the message is replaced by a placeholder, the same message. The same holds for a
script's globals (Lua, JavaScript, Python) under a job credential of another principal. And none of
the refused calls changed the owner's objects, nor wrote into the owner's artifact audit log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.stores import not_found
from scriptpool.core.repeated_log import RepeatedProblem
from scriptpool.languages import Language
from scriptpool.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from tests.conftest import Stack

from .helpers import release_job, result_of, running_job_credential, subscribe

A, J, S, E, ST = artifacts_pb2, jobs_pb2, sessions_pb2, events_pb2, state_pb2
Ids = dict[str, str]


@dataclass(frozen=True)
class Owned:
    """The owner's objects: one of each kind that an id names."""

    principal: str
    key: str
    ids: Ids
    """session, artifact, job, subscription, hook -> id"""
    completed: Ids
    """session, artifact: a completed session of the owner's and an artifact in it (a check of the
    session's state before its owner would answer FAILED_PRECONDITION here)"""


class Stubs:
    """Every service's stub on one channel, each call made with one API key."""

    def __init__(self, channel: grpc.Channel, key: str) -> None:
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        self.state = state_pb2_grpc.StateServiceStub(channel)
        self.events = events_pb2_grpc.EventServiceStub(channel)
        self.hooks = events_pb2_grpc.HookServiceStub(channel)


@pytest.fixture(scope="module")
def owned(stack: Stack) -> Iterator[Owned]:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as owner:
        session_id = owner.create_session("private", tags=["t"]).id
        job = owner.run(
            Language.LUA, "State.set('session:current', 'k', 1) return 1", session_id=session_id, timeout=60
        )
        assert result_of(job) == 1
        header = A.StoreArtifactChunk(
            session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="hello", tags=["t"])
        )
        artifact_id = owner.store_artifact(header, [b"hello secret"]).id
        owner.sessions.save(S.SessionRef(session_id=session_id))
        done = owner.create_session("completed").id
        in_done = owner.store_artifact(A.StoreArtifactChunk(session_id=done, type="text"), [b"x"]).id
        owner.sessions.complete(S.SessionRef(session_id=done))
        hook: E.HookRegistration = owner.hooks.register(E.RegisterHookRequest(hook_point="session.created"))
        yield Owned(
            principal,
            key,
            {
                "session": session_id,
                "artifact": artifact_id,
                "job": job.id,
                "subscription": subscribe(owner, "nothing.*"),
                "hook": hook.hook_id,
            },
            {"session": done, "artifact": in_done},
        )


@dataclass(frozen=True)
class Stranger:
    principal: str
    key: str
    session_id: str
    """A session of its own: the owner's artifact named in it is as unknown as an artifact of nothing."""


@pytest.fixture(scope="module")
def stranger(stack: Stack) -> Stranger:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as client:
        return Stranger(principal, key, client.create_session("the stranger's own").id)


@dataclass(frozen=True)
class Probe:
    name: str
    uses: tuple[str, ...]
    call: Callable[[Stubs, Ids, str], object]
    """(stubs, ids, the caller's principal) -> the call's answer (streams read to their end)."""
    refused: bool = True
    """False for a call that answers a stranger (with nothing of the owner's), e.g. a filtered list."""


def _ref(ids: Ids) -> S.SessionRef:
    return S.SessionRef(session_id=ids["session"])


def _key(ids: Ids) -> A.ArtifactKey:
    return A.ArtifactKey(session_id=ids["session"], artifact_id=ids["artifact"])


def _get(ids: Ids) -> A.GetArtifactRequest:
    return A.GetArtifactRequest(session_id=ids["session"], artifact_id=ids["artifact"])


def _change(ids: Ids, user: str) -> A.PermissionChange:
    return A.PermissionChange(session_id=ids["session"], artifact_id=ids["artifact"], user=user, permission="read")


def _scope(ids: Ids) -> str:
    return f"session:{ids['session']}"


SESSION, ARTIFACT = ("session",), ("session", "artifact")
_ONE = common_pb2.Value(int_value=1)

PROBES = [
    # ---------------------------------------------------------------- SessionService
    Probe("Session.Get", SESSION, lambda s, i, _: s.sessions.Get(_ref(i), metadata=s.metadata)),
    Probe("Session.Suspend", SESSION, lambda s, i, _: s.sessions.Suspend(_ref(i), metadata=s.metadata)),
    Probe("Session.Resume", SESSION, lambda s, i, _: s.sessions.Resume(_ref(i), metadata=s.metadata)),
    Probe("Session.Complete", SESSION, lambda s, i, _: s.sessions.Complete(_ref(i), metadata=s.metadata)),
    Probe("Session.Delete", SESSION, lambda s, i, _: s.sessions.Delete(_ref(i), metadata=s.metadata)),
    Probe("Session.GetMetadata", SESSION, lambda s, i, _: s.sessions.GetMetadata(_ref(i), metadata=s.metadata)),
    Probe(
        "Session.UpdateMetadata",
        SESSION,
        lambda s, i, _: s.sessions.UpdateMetadata(
            S.UpdateMetadataRequest(session_id=i["session"], updates=common_pb2.ValueMap(fields={"x": _ONE})),
            metadata=s.metadata,
        ),
    ),
    Probe("Session.GetTags", SESSION, lambda s, i, _: s.sessions.GetTags(_ref(i), metadata=s.metadata)),
    Probe(
        "Session.SetTags",
        SESSION,
        lambda s, i, _: s.sessions.SetTags(S.SetTagsRequest(session_id=i["session"], tags=["x"]), metadata=s.metadata),
    ),
    Probe("Session.Save", SESSION, lambda s, i, _: s.sessions.Save(_ref(i), metadata=s.metadata)),
    Probe(
        "Session.Load(latest)",
        SESSION,
        lambda s, i, _: s.sessions.Load(S.LoadSessionRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Session.Load(1)",
        SESSION,
        lambda s, i, _: s.sessions.Load(S.LoadSessionRequest(session_id=i["session"], snapshot=1), metadata=s.metadata),
    ),
    Probe("Session.CanReplay", SESSION, lambda s, i, _: s.sessions.CanReplay(_ref(i), metadata=s.metadata)),
    Probe(
        "Session.Replay",
        SESSION,
        lambda s, i, _: s.sessions.Replay(S.ReplayRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Session.GetTimeline",
        SESSION,
        lambda s, i, _: s.sessions.GetTimeline(S.GetTimelineRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Event.Subscribe(session)",
        SESSION,
        lambda s, i, _: s.events.Subscribe(
            E.SubscribeRequest(pattern="*", session_id=i["session"]), metadata=s.metadata
        ),
    ),
    Probe(
        "Session.Grant",
        SESSION,
        lambda s, i, me: s.sessions.Grant(
            S.SessionGrantChange(session_id=i["session"], principal=me, level="read"), metadata=s.metadata
        ),
    ),
    Probe(
        "Session.Revoke",
        SESSION,
        lambda s, i, me: s.sessions.Revoke(
            S.SessionGrantChange(session_id=i["session"], principal=me), metadata=s.metadata
        ),
    ),
    Probe("Session.ListGrants", SESSION, lambda s, i, _: s.sessions.ListGrants(_ref(i), metadata=s.metadata)),
    Probe(
        "Session.GetAuditLog",
        SESSION,
        lambda s, i, _: s.sessions.GetAuditLog(
            S.GetSessionAuditLogRequest(session_id=i["session"]), metadata=s.metadata
        ),
    ),
    Probe(
        "Session.GetReplayMetadata", SESSION, lambda s, i, _: s.sessions.GetReplayMetadata(_ref(i), metadata=s.metadata)
    ),
    Probe(
        "Session.SetCurrent",
        SESSION,
        lambda s, i, _: s.sessions.SetCurrent(S.SetCurrentSessionRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Session.Create(parent)",
        SESSION,
        lambda s, i, _: s.sessions.Create(
            S.CreateSessionRequest(name="child", parent_session_id=i["session"]), metadata=s.metadata
        ),
    ),
    Probe(
        "Session.List(parent)",
        SESSION,
        lambda s, i, _: s.sessions.List(S.ListSessionsRequest(parent_session_id=i["session"]), metadata=s.metadata),
        refused=False,
    ),
    # ---------------------------------------------------------------- JobService
    Probe("Job.GetJob", ("job",), lambda s, i, _: s.jobs.GetJob(J.GetJobRequest(job_id=i["job"]), metadata=s.metadata)),
    Probe(
        "Job.WaitJob",
        ("job",),
        lambda s, i, _: s.jobs.WaitJob(J.WaitJobRequest(job_id=i["job"], timeout_seconds=1), metadata=s.metadata),
    ),
    Probe(
        "Job.CancelJob",
        ("job",),
        lambda s, i, _: s.jobs.CancelJob(J.CancelJobRequest(job_id=i["job"]), metadata=s.metadata),
    ),
    Probe(
        "Job.ListJobs",
        SESSION,
        lambda s, i, _: s.jobs.ListJobs(J.ListJobsRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Job.SubmitJob(session)",
        SESSION,
        lambda s, i, _: s.jobs.SubmitJob(
            J.SubmitJobRequest(language=J.LANGUAGE_LUA, source="return 1", session_id=i["session"]),
            metadata=s.metadata,
        ),
    ),
    Probe(
        "Job.SubmitJobs(session)",
        SESSION,
        lambda s, i, _: list(
            s.jobs.SubmitJobs(
                J.SubmitJobsRequest(
                    jobs=[J.SubmitJobRequest(language=J.LANGUAGE_LUA, source="return 1", session_id=i["session"])]
                ),
                metadata=s.metadata,
            )
        ),
    ),
    # ---------------------------------------------------------------- ArtifactService
    Probe(
        "Artifact.Store(session)",
        SESSION,
        lambda s, i, _: s.artifacts.Store(
            iter([A.StoreArtifactChunk(session_id=i["session"], type="text", content=b"x")]), metadata=s.metadata
        ),
    ),
    Probe(
        "Artifact.Update",
        ARTIFACT,
        lambda s, i, _: s.artifacts.Update(
            iter([A.StoreArtifactChunk(session_id=i["session"], artifact_id=i["artifact"], content=b"x")]),
            metadata=s.metadata,
        ),
    ),
    Probe("Artifact.Get", ARTIFACT, lambda s, i, _: list(s.artifacts.Get(_get(i), metadata=s.metadata))),
    Probe(
        "Artifact.Get(version 2)",
        ARTIFACT,
        lambda s, i, _: list(
            s.artifacts.Get(
                A.GetArtifactRequest(session_id=i["session"], artifact_id=i["artifact"], version=2),
                metadata=s.metadata,
            )
        ),
    ),
    Probe("Artifact.GetContent", ARTIFACT, lambda s, i, _: list(s.artifacts.GetContent(_get(i), metadata=s.metadata))),
    Probe(
        "Artifact.List",
        SESSION,
        lambda s, i, _: s.artifacts.List(A.ListArtifactsRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe("Artifact.Delete", ARTIFACT, lambda s, i, _: s.artifacts.Delete(_key(i), metadata=s.metadata)),
    Probe(
        "Artifact.Query(session)",
        SESSION,
        lambda s, i, _: s.artifacts.Query(A.ArtifactQuery(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe(
        "Artifact.FindByType",
        SESSION,
        lambda s, i, _: s.artifacts.FindByType(
            A.FindByTypeRequest(session_id=i["session"], type="text"), metadata=s.metadata
        ),
    ),
    Probe(
        "Artifact.FindByTag",
        SESSION,
        lambda s, i, _: s.artifacts.FindByTag(
            A.FindByTagRequest(session_id=i["session"], tag="t"), metadata=s.metadata
        ),
    ),
    Probe(
        "Artifact.Search",
        SESSION,
        lambda s, i, _: s.artifacts.Search(
            A.SearchArtifactsRequest(session_id=i["session"], text="hello"), metadata=s.metadata
        ),
    ),
    Probe(
        "Artifact.GrantPermission",
        ARTIFACT,
        lambda s, i, me: s.artifacts.GrantPermission(_change(i, me), metadata=s.metadata),
    ),
    Probe(
        "Artifact.RevokePermission",
        ARTIFACT,
        lambda s, i, me: s.artifacts.RevokePermission(_change(i, me), metadata=s.metadata),
    ),
    Probe(
        "Artifact.GetPermissions", ARTIFACT, lambda s, i, _: s.artifacts.GetPermissions(_key(i), metadata=s.metadata)
    ),
    Probe(
        "Artifact.CheckAccess",
        ARTIFACT,
        lambda s, i, _: s.artifacts.CheckAccess(
            A.CheckAccessRequest(session_id=i["session"], artifact_id=i["artifact"], permission="read"),
            metadata=s.metadata,
        ),
    ),
    Probe(
        "Artifact.GetAuditLog",
        ARTIFACT,
        lambda s, i, _: s.artifacts.GetAuditLog(
            A.GetAuditLogRequest(session_id=i["session"], artifact_id=i["artifact"]), metadata=s.metadata
        ),
    ),
    # ---------------------------------------------------------------- StateService (a session scope)
    Probe(
        "State.Get", SESSION, lambda s, i, _: s.state.Get(ST.StateKey(scope=_scope(i), key="k"), metadata=s.metadata)
    ),
    Probe(
        "State.Set",
        SESSION,
        lambda s, i, _: s.state.Set(ST.SetStateRequest(scope=_scope(i), key="k", value=_ONE), metadata=s.metadata),
    ),
    Probe(
        "State.Delete",
        SESSION,
        lambda s, i, _: s.state.Delete(ST.StateKey(scope=_scope(i), key="k"), metadata=s.metadata),
    ),
    Probe("State.List", SESSION, lambda s, i, _: s.state.List(ST.StateScope(scope=_scope(i)), metadata=s.metadata)),
    Probe(
        "State.Increment",
        SESSION,
        lambda s, i, _: s.state.Increment(
            ST.IncrementStateRequest(scope=_scope(i), key="k", by=_ONE), metadata=s.metadata
        ),
    ),
    Probe(
        "State.CompareAndSet",
        SESSION,
        lambda s, i, _: s.state.CompareAndSet(
            ST.CompareAndSetRequest(scope=_scope(i), key="k", expected=_ONE, new_value=_ONE), metadata=s.metadata
        ),
    ),
    # ---------------------------------------------------------------- EventService and HookService
    Probe(
        "Event.Receive",
        ("subscription",),
        lambda s, i, _: s.events.Receive(E.ReceiveRequest(subscription_id=i["subscription"]), metadata=s.metadata),
    ),
    Probe(
        "Event.Receive(hook id)",
        ("hook",),
        lambda s, i, _: s.events.Receive(E.ReceiveRequest(subscription_id=i["hook"]), metadata=s.metadata),
    ),
    Probe(
        "Event.Unsubscribe",
        ("subscription",),
        lambda s, i, _: s.events.Unsubscribe(E.Subscription(subscription_id=i["subscription"]), metadata=s.metadata),
    ),
    Probe(
        "Hook.Unregister",
        ("hook",),
        lambda s, i, _: s.hooks.Unregister(E.HookRef(hook_id=i["hook"]), metadata=s.metadata),
    ),
]


def _answer(probe: Probe, stubs: Stubs, ids: Ids, me: str) -> tuple[grpc.StatusCode, str]:
    """The call's status code and its message (or its answer, for OK) with each id replaced by `<its kind>`."""
    try:
        code, details = grpc.StatusCode.OK, repr(probe.call(stubs, ids, me))
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    for kind, object_id in ids.items():
        details = details.replace(object_id, f"<{kind}>")
    return code, details


def _variants(owned: Owned, stranger: Stranger, uses: tuple[str, ...]) -> dict[str, Ids]:
    """The owner's ids; every id fresh (nothing); and, where a call takes two, each one fresh alone
    (an artifact of nothing in the owner's session, the owner's artifact named in a session of nothing)
    and the owner's artifact, or one of nothing, named in the caller's own session."""
    real = {kind: owned.ids[kind] for kind in uses}
    found = {"another's": real, "none": {kind: str(uuid.uuid4()) for kind in uses}}
    if len(uses) > 1:
        for kind in uses:
            found[f"{kind} of nothing"] = {**real, kind: str(uuid.uuid4())}
    if "session" in uses:
        found["another's completed session"] = {**real, **{k: v for k, v in owned.completed.items() if k in uses}}
    if uses == ARTIFACT:
        found["another's artifact in my session"] = {**real, "session": stranger.session_id}
        found["nothing in my session"] = {"session": stranger.session_id, "artifact": str(uuid.uuid4())}
    return found


def _owner_still_has_everything(stack: Stack, owned: Owned) -> None:
    ids = owned.ids
    with grpc.insecure_channel(stack.address) as channel:
        owner = Stubs(channel, owned.key)
        session = owner.sessions.Get(_ref(ids), metadata=owner.metadata)
        assert (session.state, list(session.tags), dict(session.metadata.fields)) == (S.SESSION_STATE_ACTIVE, ["t"], {})
        assert [a.id for a in owner.artifacts.List(A.ListArtifactsRequest(session_id=ids["session"]),
                                                   metadata=owner.metadata).artifacts] == [ids["artifact"]]  # fmt: skip
        info = next(iter(owner.artifacts.Get(_get(ids), metadata=owner.metadata))).info
        assert info.version == 1
        permissions = owner.artifacts.GetPermissions(_key(ids), metadata=owner.metadata)
        assert dict(permissions.grants) == {owned.principal: "admin"}
        audit = owner.artifacts.GetAuditLog(
            A.GetAuditLogRequest(session_id=ids["session"], artifact_id=ids["artifact"]), metadata=owner.metadata
        )
        assert {entry.user for entry in audit.entries} == {owned.principal}  # no stranger's probe is in it
        state = owner.state.Get(ST.StateKey(scope=_scope(ids), key="k"), metadata=owner.metadata)
        assert state.found and state.value.int_value == 1
        job = owner.jobs.GetJob(J.GetJobRequest(job_id=ids["job"]), metadata=owner.metadata)
        assert job.status == J.JOB_STATUS_FINISHED and job.result.outcome == J.OUTCOME_OK
        owner.events.Receive(E.ReceiveRequest(subscription_id=ids["subscription"]), metadata=owner.metadata)
        hooks = owner.hooks.List(common_pb2.Empty(), metadata=owner.metadata).hooks
        assert [hook.hook_id for hook in hooks] == [ids["hook"]]
        jobs = owner.jobs.ListJobs(J.ListJobsRequest(session_id=ids["session"]), metadata=owner.metadata).jobs
        assert [j.id for j in jobs] == [ids["job"]]  # (no stranger's job was queued in it)
        done = owner.sessions.Get(S.SessionRef(session_id=owned.completed["session"]), metadata=owner.metadata)
        assert done.state == S.SESSION_STATE_COMPLETED


@pytest.mark.parametrize("probe", PROBES, ids=lambda probe: probe.name)
def test_another_principals_object_is_answered_as_one_that_does_not_exist(
    stack: Stack, owned: Owned, stranger: Stranger, probe: Probe
) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        stubs = Stubs(channel, stranger.key)
        answers = {
            name: _answer(probe, stubs, ids, stranger.principal)
            for name, ids in _variants(owned, stranger, probe.uses).items()
        }
    expected = answers["none"]
    assert answers == dict.fromkeys(answers, expected)
    if probe.refused:
        assert expected[0] is grpc.StatusCode.NOT_FOUND, answers
        assert "<" in expected[1]  # the message names the id the caller sent (and nothing else)
    else:
        assert expected == (grpc.StatusCode.OK, ""), answers  # an empty answer: nothing of the owner's
    _owner_still_has_everything(stack, owned)


def test_a_job_credential_of_another_principal_gets_the_same_answers(
    stack: Stack, owned: Owned, stranger: Stranger, redis_client: Redis
) -> None:
    """The whole table again with a running job's credential of the stranger, straight over gRPC:
    what a job may not call at all is refused the same whatever the id (PERMISSION_DENIED before
    any lookup), everything else is the NOT_FOUND of an id of nothing."""
    with ScriptpoolClient(stack.address, stranger.key) as client:
        job_id, credential = running_job_credential(client, redis_client)
        try:
            with grpc.insecure_channel(stack.address) as channel:
                stubs = Stubs(channel, credential)
                for probe in PROBES:
                    variants = _variants(owned, stranger, probe.uses)
                    answers = {name: _answer(probe, stubs, ids, stranger.principal) for name, ids in variants.items()}
                    expected = answers["none"]
                    assert answers == dict.fromkeys(answers, expected), probe.name
                    code, message = expected
                    if probe.refused and code is not grpc.StatusCode.NOT_FOUND:
                        assert code is grpc.StatusCode.PERMISSION_DENIED, (probe.name, expected)
                        assert "job credential" in message and "<" not in message, (probe.name, expected)
        finally:
            release_job(job_id)
            client.wait(job_id, timeout=30)
    _owner_still_has_everything(stack, owned)


LOGGED = {
    "Session.Get": "session", "Session.Suspend": "session", "Session.Save": "session",
    "Session.Load(latest)": "session", "State.Get": "session", "Job.SubmitJob(session)": "session",
    "Artifact.Get": "artifact", "Artifact.List": "session", "Artifact.Store(session)": "session",
    "Job.GetJob": "job", "Event.Receive": "subscription",
}  # fmt: skip
"""Probes whose refusal of the owner's object is decided where the owner is known (in Python or a
Lua script that reports it), and the kind the operator's log names."""


def test_refusals_of_objects_that_exist_are_logged_for_the_operator_only(
    stack: Stack,
    owned: Owned,
    stranger: Stranger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each refusal of the owner's object is a line in the coordinator's log naming who asked for
    what of whose; an id of nothing leaves no line (there is no one to name)."""
    every_time = RepeatedProblem(not_found.log, "refused", every_seconds=0.0)
    monkeypatch.setattr(not_found, "REFUSALS_LOG", every_time)
    probes = {probe.name: probe for probe in PROBES}
    with grpc.insecure_channel(stack.address) as channel, caplog.at_level(logging.WARNING, not_found.log.name):
        stubs = Stubs(channel, stranger.key)
        for name, kind in LOGGED.items():
            probe = probes[name]
            caplog.clear()
            _answer(probe, stubs, _variants(owned, stranger, probe.uses)["none"], stranger.principal)
            assert [r for r in caplog.records if r.name == not_found.log.name] == [], name
            _answer(probe, stubs, {k: owned.ids[k] for k in probe.uses}, stranger.principal)
            lines = [r.getMessage() for r in caplog.records if r.name == not_found.log.name]
            wanted = f"{stranger.principal!r} asked for {kind} {owned.ids[kind]} of {owned.principal!r}"
            assert len(lines) == 1 and wanted in lines[0], (name, lines)


def test_every_id_taking_rpc_is_in_the_table() -> None:
    """A new RPC that takes an id must join the table (or be named here as taking none)."""
    takes_no_id = {
        "SessionService.GetCurrent", "SessionService.SaveAll", "SessionService.RestoreRecent",
        "SessionService.RecordRefusedCall", "EventService.Emit", "EventService.Subscribe", "EventService.Stream",
        "HookService.Register", "HookService.List", "HookService.Poll",
    }  # fmt: skip
    services = {
        "State": state_pb2.DESCRIPTOR.services_by_name["StateService"],
        "Session": sessions_pb2.DESCRIPTOR.services_by_name["SessionService"],
        "Job": jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
        "Artifact": artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"],
        "Event": events_pb2.DESCRIPTOR.services_by_name["EventService"],
        "Hook": events_pb2.DESCRIPTOR.services_by_name["HookService"],
    }
    probed = {probe.name.split("(")[0] for probe in PROBES}
    missing = [
        f"{descriptor.name}.{method.name}"
        for prefix, descriptor in services.items()
        for method in descriptor.methods
        if f"{prefix}.{method.name}" not in probed and f"{descriptor.name}.{method.name}" not in takes_no_id
    ]
    assert missing == []


# ---------------------------------------------------------------------------- script globals
SCRIPT_CALLS = [
    ("Session.get", "sid"),
    ("Session.suspend", "sid"),
    ("Session.resume", "sid"),
    ("Session.complete", "sid"),
    ("Session.delete", "sid"),
    ("Session.getMetadata", "sid"),
    ("Session.updateMetadata", "sid, MAP"),
    ("Session.getTags", "sid"),
    ("Session.setTags", "sid, LIST"),
    ("Session.save", "sid"),
    ("Session.load", "sid"),
    ("Session.canReplay", "sid"),
    ("Session.replay", "sid"),
    ("Session.getTimeline", "sid"),
    ("Session.getReplayMetadata", "sid"),
    ("Session.setCurrent", "sid"),
    ("Session.create", "{PARENT}"),
    ("Artifact.store", "sid, {CONTENT}"),
    ("Artifact.update", "sid, aid, 'x'"),
    ("Artifact.get", "sid, aid"),
    ("Artifact.getContent", "sid, aid"),
    ("Artifact.delete", "sid, aid"),
    ("Artifact.list", "sid"),
    ("Artifact.query", "{QUERY}"),
    ("Artifact.findByType", "sid, 'text'"),
    ("Artifact.findByTag", "sid, 't'"),
    ("Artifact.search", "sid, 'hello'"),
    ("Artifact.getPermissions", "sid, aid"),
    ("Artifact.grantPermission", "sid, aid, 'someone', 'read'"),
    ("Artifact.revokePermission", "sid, aid, 'someone', 'read'"),
    ("Artifact.checkAccess", "sid, aid, 'someone', 'read'"),
    ("Artifact.getAuditLog", "sid, aid"),
    ("State.get", "scope, 'k'"),
    ("State.set", "scope, 'k', 2"),
    ("State.delete", "scope, 'k'"),
    ("State.list", "scope"),
    ("State.increment", "scope, 'k', 1"),
    ("State.compareAndSet", "scope, 'k', 1, 2"),
    ("Event.receive", "sub, 0"),
]
"""Each global call that takes an id, with its arguments (`MAP`, `LIST` and the `{NAMES}` are
written in the script's own words: `LITERALS`)."""

PRELUDES = {
    Language.LUA: """
local out = {}
local function try(name, fn, ...)
  local ok, e = pcall(fn, ...)
  if ok then out[#out + 1] = {name, "OK", ""} else out[#out + 1] = {name, e.code, e.message} end
end
local sid, aid, sub, hook = INPUT.session, INPUT.artifact, INPUT.subscription, INPUT.hook
local scope = "session:" .. sid
""",
    Language.JAVASCRIPT: """
const out = [];
const tryIt = (name, fn, ...args) => {
  try { fn(...args); out.push([name, "OK", ""]); } catch (e) { out.push([name, e.code, e.message]); }
};
const {session: sid, artifact: aid, subscription: sub, hook} = INPUT;
const scope = "session:" + sid;
""",
    Language.PYTHON: """
out = []
def try_it(name, fn, *args):
    try:
        fn(*args)
        out.append([name, "OK", ""])
    except ScriptpoolError as e:
        out.append([name, e.code, e.message])
sid, aid, sub, hook = INPUT["session"], INPUT["artifact"], INPUT["subscription"], INPUT["hook"]
scope = "session:" + sid
""",
}
CALL_LINES = {
    Language.LUA: 'try("{0}", {0}, {1})',
    Language.JAVASCRIPT: 'tryIt("{0}", {0}, {1});',
    Language.PYTHON: 'try_it("{0}", {0}, {1})',
}
LITERALS = {
    Language.LUA: {
        "MAP": "{x = 1}", "LIST": "{'x'}", "{PARENT}": "{name = 'c', parent_session_id = sid}",
        "{CONTENT}": "{content = 'x', type = 'text'}", "{QUERY}": "{session_id = sid}",
    },
    Language.JAVASCRIPT: {
        "MAP": "{x: 1}", "LIST": "['x']", "{PARENT}": "{name: 'c', parent_session_id: sid}",
        "{CONTENT}": "{content: 'x', type: 'text'}", "{QUERY}": "{session_id: sid}",
    },
    Language.PYTHON: {
        "MAP": "{'x': 1}", "LIST": "['x']", "{PARENT}": "{'name': 'c', 'parent_session_id': sid}",
        "{CONTENT}": "{'content': 'x', 'type': 'text'}", "{QUERY}": "{'session_id': sid}",
    },
}  # fmt: skip


ENDINGS = {
    Language.LUA: """
out[#out + 1] = {"Event.unsubscribe", tostring(Event.unsubscribe(sub)), ""}
out[#out + 1] = {"Hook.unregister", tostring(Hook.unregister(hook)), ""}
return out
""",
    Language.JAVASCRIPT: """
out.push(["Event.unsubscribe", String(Event.unsubscribe(sub)), ""]);
out.push(["Hook.unregister", String(Hook.unregister(hook)), ""]);
out
""",
    Language.PYTHON: """
out.append(["Event.unsubscribe", str(Event.unsubscribe(sub)).lower(), ""])
out.append(["Hook.unregister", str(Hook.unregister(hook)).lower(), ""])
out
""",
}


def _script(language: Language) -> str:
    calls = []
    for name, args in SCRIPT_CALLS:
        for token, literal in LITERALS[language].items():
            args = args.replace(token, literal)
        calls.append(CALL_LINES[language].format(name, args))
    return PRELUDES[language] + "\n".join(calls) + ENDINGS[language]


def _script_answers(client: ScriptpoolClient, language: Language, ids: Ids) -> list[list[str]]:
    answers = result_of(client.run(language, _script(language), inputs=ids, timeout=60))
    assert isinstance(answers, list)
    normalized = []
    for row in answers:
        assert isinstance(row, list) and all(isinstance(cell, str) for cell in row), row
        name, code, message = (str(cell) for cell in row)
        for kind, object_id in ids.items():
            message = message.replace(object_id, f"<{kind}>")
        normalized.append([name, code, message])
    return normalized


@pytest.mark.parametrize("language", [Language.LUA, Language.JAVASCRIPT, Language.PYTHON])
def test_a_scripts_globals_see_another_principals_objects_as_nothing(
    stack: Stack, owned: Owned, stranger: Stranger, language: Language
) -> None:
    """A job of the stranger (its job credential) reaches the owner's ids through its globals."""
    wanted = ("session", "artifact", "subscription", "hook")
    real = {kind: owned.ids[kind] for kind in wanted}
    none = {kind: str(uuid.uuid4()) for kind in wanted}
    with ScriptpoolClient(stack.address, stranger.key) as client:
        another = _script_answers(client, language, real)
        nothing = _script_answers(client, language, none)
    assert another == nothing
    assert [row[0] for row in nothing] == [name for name, _ in SCRIPT_CALLS] + ["Event.unsubscribe", "Hook.unregister"]
    by_name = {name: (code, message) for name, code, message in nothing}
    assert by_name["Event.unsubscribe"][0] == by_name["Hook.unregister"][0] == "false"
    refused = {
        name: code for name, (code, _) in by_name.items() if name not in ("Event.unsubscribe", "Hook.unregister")
    }
    assert refused == dict.fromkeys(refused, "NOT_FOUND")
    assert by_name["Session.get"][1].endswith("session <session> not found")
    assert by_name["Artifact.get"][1].endswith("artifact <artifact> not found in session <session>")
    _owner_still_has_everything(stack, owned)


# ---------------------------------------------------------------------------- grants keep their meaning
def test_a_grantee_still_reads_and_a_reader_denied_a_write_is_told_so_and_audited(stack: Stack, owned: Owned) -> None:
    """A principal granted read on an artifact knows it exists: it reads it, and a delete it may not
    do is PERMISSION_DENIED (not NOT_FOUND), written to the owner's audit log as refused."""
    reader, reader_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, owned.key) as owner:
        session_id = owner.create_session("shared").id
        header = A.StoreArtifactChunk(session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="s"))
        ids = {"session": session_id, "artifact": owner.store_artifact(header, [b"shared"]).id}
        owner.artifacts.grant_permission(
            A.PermissionChange(session_id=session_id, artifact_id=ids["artifact"], user=reader, permission="read")
        )
    with grpc.insecure_channel(stack.address) as channel:
        granted, by_owner = Stubs(channel, reader_key), Stubs(channel, owned.key)
        assert next(iter(granted.artifacts.Get(_get(ids), metadata=granted.metadata))).info.id == ids["artifact"]
        with pytest.raises(grpc.RpcError) as caught:
            granted.artifacts.Delete(_key(ids), metadata=granted.metadata)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == f"{reader} may not delete artifact {ids['artifact']}: needs delete; has read"
        audit = by_owner.artifacts.GetAuditLog(
            A.GetAuditLogRequest(session_id=session_id, artifact_id=ids["artifact"]), metadata=by_owner.metadata
        )
        assert [(e.action, e.allowed) for e in audit.entries if e.user == reader] == [("get", True), ("delete", False)]
