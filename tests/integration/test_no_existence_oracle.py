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
from collections.abc import Iterator
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
    common_pb2,
    events_pb2,
    jobs_pb2,
    sessions_pb2,
    state_pb2,
)
from tests.conftest import Stack

from .helpers import release_job, result_of, running_job_credential, subscribe
from .probes import (
    ARTIFACT,
    PROBES,
    SCRIPT_CALLS,
    ST,
    A,
    E,
    Ids,
    J,
    Probe,
    S,
    Stubs,
    answer,
    artifact_key,
    get_request,
    script_answers,
    session_ref,
    state_scope,
)


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
        session = owner.sessions.Get(session_ref(ids), metadata=owner.metadata)
        assert (session.state, list(session.tags), dict(session.metadata.fields)) == (S.SESSION_STATE_ACTIVE, ["t"], {})
        assert [a.id for a in owner.artifacts.List(A.ListArtifactsRequest(session_id=ids["session"]),
                                                   metadata=owner.metadata).artifacts] == [ids["artifact"]]  # fmt: skip
        info = next(iter(owner.artifacts.Get(get_request(ids), metadata=owner.metadata))).info
        assert info.version == 1
        permissions = owner.artifacts.GetPermissions(artifact_key(ids), metadata=owner.metadata)
        assert dict(permissions.grants) == {owned.principal: "admin"}
        audit = owner.artifacts.GetAuditLog(
            A.GetAuditLogRequest(session_id=ids["session"], artifact_id=ids["artifact"]), metadata=owner.metadata
        )
        assert {entry.user for entry in audit.entries} == {owned.principal}  # no stranger's probe is in it
        state = owner.state.Get(ST.StateKey(scope=state_scope(ids), key="k"), metadata=owner.metadata)
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
            name: answer(probe, stubs, ids, stranger.principal)
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
                    answers = {name: answer(probe, stubs, ids, stranger.principal) for name, ids in variants.items()}
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
            answer(probe, stubs, _variants(owned, stranger, probe.uses)["none"], stranger.principal)
            assert [r for r in caplog.records if r.name == not_found.log.name] == [], name
            answer(probe, stubs, {k: owned.ids[k] for k in probe.uses}, stranger.principal)
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


@pytest.mark.parametrize("language", [Language.LUA, Language.JAVASCRIPT, Language.PYTHON])
def test_a_scripts_globals_see_another_principals_objects_as_nothing(
    stack: Stack, owned: Owned, stranger: Stranger, language: Language
) -> None:
    """A job of the stranger (its job credential) reaches the owner's ids through its globals."""
    wanted = ("session", "artifact", "subscription", "hook")
    real = {kind: owned.ids[kind] for kind in wanted}
    none = {kind: str(uuid.uuid4()) for kind in wanted}
    with ScriptpoolClient(stack.address, stranger.key) as client:
        another = script_answers(client, language, real)
        nothing = script_answers(client, language, none)
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
        assert next(iter(granted.artifacts.Get(get_request(ids), metadata=granted.metadata))).info.id == ids["artifact"]
        with pytest.raises(grpc.RpcError) as caught:
            granted.artifacts.Delete(artifact_key(ids), metadata=granted.metadata)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == f"{reader} may not delete artifact {ids['artifact']}: needs delete; has read"
        audit = by_owner.artifacts.GetAuditLog(
            A.GetAuditLogRequest(session_id=session_id, artifact_id=ids["artifact"]), metadata=by_owner.metadata
        )
        assert [(e.action, e.allowed) for e in audit.entries if e.user == reader] == [("get", True), ("delete", False)]
