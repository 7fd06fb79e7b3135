"""What the integration tests send to reach another principal's objects: one stub per service with
one credential (`Stubs`), one probe per id-taking RPC (`PROBES`, each building a valid request from
the ids of a session, artifact, job, subscription and hook) and one batched script per language
calling every id-taking global (`script_source`). Shared by test_no_existence_oracle.py (ADR 0017)
and the access matrix (test_access_matrix*.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.v1 import (
    admin_pb2_grpc,
    artifacts_pb2,
    artifacts_pb2_grpc,
    calls_pb2_grpc,
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

from .helpers import result_of

A, J, S, E, ST = artifacts_pb2, jobs_pb2, sessions_pb2, events_pb2, state_pb2
Ids = dict[str, str]


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
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.calls = calls_pb2_grpc.JobCallServiceStub(channel)


@dataclass(frozen=True)
class Probe:
    name: str
    uses: tuple[str, ...]
    call: Callable[[Stubs, Ids, str], object]
    """(stubs, ids, the caller's principal) -> the call's answer (streams read to their end)."""
    refused: bool = True
    """False for a call that answers a stranger (with nothing of the owner's), e.g. a filtered list."""


def session_ref(ids: Ids) -> S.SessionRef:
    return S.SessionRef(session_id=ids["session"])


def artifact_key(ids: Ids) -> A.ArtifactKey:
    return A.ArtifactKey(session_id=ids["session"], artifact_id=ids["artifact"])


def get_request(ids: Ids) -> A.GetArtifactRequest:
    return A.GetArtifactRequest(session_id=ids["session"], artifact_id=ids["artifact"])


def permission_change(ids: Ids, user: str) -> A.PermissionChange:
    return A.PermissionChange(session_id=ids["session"], artifact_id=ids["artifact"], user=user, permission="read")


def state_scope(ids: Ids) -> str:
    return f"session:{ids['session']}"


SESSION, ARTIFACT = ("session",), ("session", "artifact")
ONE = common_pb2.Value(int_value=1)

PROBES = [
    # ---------------------------------------------------------------- SessionService
    Probe("Session.Get", SESSION, lambda s, i, _: s.sessions.Get(session_ref(i), metadata=s.metadata)),
    Probe("Session.Suspend", SESSION, lambda s, i, _: s.sessions.Suspend(session_ref(i), metadata=s.metadata)),
    Probe("Session.Resume", SESSION, lambda s, i, _: s.sessions.Resume(session_ref(i), metadata=s.metadata)),
    Probe("Session.Complete", SESSION, lambda s, i, _: s.sessions.Complete(session_ref(i), metadata=s.metadata)),
    Probe("Session.Delete", SESSION, lambda s, i, _: s.sessions.Delete(session_ref(i), metadata=s.metadata)),
    Probe("Session.GetMetadata", SESSION, lambda s, i, _: s.sessions.GetMetadata(session_ref(i), metadata=s.metadata)),
    Probe(
        "Session.UpdateMetadata",
        SESSION,
        lambda s, i, _: s.sessions.UpdateMetadata(
            S.UpdateMetadataRequest(session_id=i["session"], updates=common_pb2.ValueMap(fields={"x": ONE})),
            metadata=s.metadata,
        ),
    ),
    Probe("Session.GetTags", SESSION, lambda s, i, _: s.sessions.GetTags(session_ref(i), metadata=s.metadata)),
    Probe(
        "Session.SetTags",
        SESSION,
        lambda s, i, _: s.sessions.SetTags(S.SetTagsRequest(session_id=i["session"], tags=["x"]), metadata=s.metadata),
    ),
    Probe("Session.Save", SESSION, lambda s, i, _: s.sessions.Save(session_ref(i), metadata=s.metadata)),
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
    Probe("Session.CanReplay", SESSION, lambda s, i, _: s.sessions.CanReplay(session_ref(i), metadata=s.metadata)),
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
    Probe("Session.ListGrants", SESSION, lambda s, i, _: s.sessions.ListGrants(session_ref(i), metadata=s.metadata)),
    Probe(
        "Session.GetAuditLog",
        SESSION,
        lambda s, i, _: s.sessions.GetAuditLog(
            S.GetSessionAuditLogRequest(session_id=i["session"]), metadata=s.metadata
        ),
    ),
    Probe(
        "Session.GetReplayMetadata",
        SESSION,
        lambda s, i, _: s.sessions.GetReplayMetadata(session_ref(i), metadata=s.metadata),
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
    Probe("Artifact.Get", ARTIFACT, lambda s, i, _: list(s.artifacts.Get(get_request(i), metadata=s.metadata))),
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
    Probe(
        "Artifact.GetContent",
        ARTIFACT,
        lambda s, i, _: list(s.artifacts.GetContent(get_request(i), metadata=s.metadata)),
    ),
    Probe(
        "Artifact.List",
        SESSION,
        lambda s, i, _: s.artifacts.List(A.ListArtifactsRequest(session_id=i["session"]), metadata=s.metadata),
    ),
    Probe("Artifact.Delete", ARTIFACT, lambda s, i, _: s.artifacts.Delete(artifact_key(i), metadata=s.metadata)),
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
        lambda s, i, me: s.artifacts.GrantPermission(permission_change(i, me), metadata=s.metadata),
    ),
    Probe(
        "Artifact.RevokePermission",
        ARTIFACT,
        lambda s, i, me: s.artifacts.RevokePermission(permission_change(i, me), metadata=s.metadata),
    ),
    Probe(
        "Artifact.GetPermissions",
        ARTIFACT,
        lambda s, i, _: s.artifacts.GetPermissions(artifact_key(i), metadata=s.metadata),
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
        "State.Get",
        SESSION,
        lambda s, i, _: s.state.Get(ST.StateKey(scope=state_scope(i), key="k"), metadata=s.metadata),
    ),
    Probe(
        "State.Set",
        SESSION,
        lambda s, i, _: s.state.Set(ST.SetStateRequest(scope=state_scope(i), key="k", value=ONE), metadata=s.metadata),
    ),
    Probe(
        "State.Delete",
        SESSION,
        lambda s, i, _: s.state.Delete(ST.StateKey(scope=state_scope(i), key="k"), metadata=s.metadata),
    ),
    Probe(
        "State.List", SESSION, lambda s, i, _: s.state.List(ST.StateScope(scope=state_scope(i)), metadata=s.metadata)
    ),
    Probe(
        "State.Increment",
        SESSION,
        lambda s, i, _: s.state.Increment(
            ST.IncrementStateRequest(scope=state_scope(i), key="k", by=ONE), metadata=s.metadata
        ),
    ),
    Probe(
        "State.CompareAndSet",
        SESSION,
        lambda s, i, _: s.state.CompareAndSet(
            ST.CompareAndSetRequest(scope=state_scope(i), key="k", expected=ONE, new_value=ONE), metadata=s.metadata
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


def answer(probe: Probe, stubs: Stubs, ids: Ids, me: str) -> tuple[grpc.StatusCode, str]:
    """The call's status code and its message (or its answer, for OK) with each id replaced by `<its kind>`."""
    try:
        code, details = grpc.StatusCode.OK, repr(probe.call(stubs, ids, me))
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    for kind, object_id in ids.items():
        details = details.replace(object_id, f"<{kind}>")
    return code, details


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


RETURNS = {Language.LUA: "\nreturn out\n", Language.JAVASCRIPT: "\nout\n", Language.PYTHON: "\nout\n"}
"""A script's last line without `ENDINGS`."""


def script_source(language: Language, calls: Sequence[tuple[str, str]] = SCRIPT_CALLS, ending: bool = True) -> str:
    """One script making each of `calls` (each answer a row: name, code, message), then, with
    `ending`, Event.unsubscribe and Hook.unregister (each answering whether it removed something)."""
    lines = []
    for name, args in calls:
        for token, literal in LITERALS[language].items():
            args = args.replace(token, literal)
        lines.append(CALL_LINES[language].format(name, args))
    return PRELUDES[language] + "\n".join(lines) + (ENDINGS[language] if ending else RETURNS[language])


def script_answers(
    client: ScriptpoolClient,
    language: Language,
    ids: Ids,
    calls: Sequence[tuple[str, str]] = SCRIPT_CALLS,
    ending: bool = True,
) -> list[list[str]]:
    """The answers of `script_source` run as a job of `client`'s, each id in a message replaced by `<its kind>`."""
    source = script_source(language, calls, ending)
    answers = result_of(client.run(language, source, inputs=ids, timeout=60))
    assert isinstance(answers, list)
    normalized = []
    for row in answers:
        assert isinstance(row, list) and all(isinstance(cell, str) for cell in row), row
        name, code, message = (str(cell) for cell in row)
        for kind, object_id in ids.items():
            message = message.replace(object_id, f"<{kind}>")
        normalized.append([name, code, message])
    return normalized
