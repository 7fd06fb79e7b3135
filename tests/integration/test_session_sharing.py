"""Sharing a session (issue 18 item 5, ADR 0021) through the real stack.

Each level allows exactly its operations (coordinator/stores/session_access.py OPERATIONS) and
refuses the rest; a revoke takes effect at once; a grant names a principal that exists; only the
owner or an admin grantee grants; every refusal is in the session's audit log; a principal with no
grant is answered as for a session that does not exist; a grantee's job script acts on the shared
session with the grantee's rights.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.cli import session_cmd
from scriptpool.coordinator.cli.main import main
from scriptpool.coordinator.stores import session_access
from scriptpool.coordinator.stores.api_keys import ApiKeyStore
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.core.keys import session_audit_key, shared_sessions_key, state_bytes_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, ScriptpoolError
from scriptpool.v1 import artifacts_pb2, events_pb2, sessions_pb2, state_pb2
from scriptpool.values import to_value, to_value_map
from tests.conftest import Stack

from .helpers import next_event, release_job, result_of, run_lua, running_job_credential

A, E, S, ST = artifacts_pb2, events_pb2, sessions_pb2, state_pb2


@dataclass
class Shared:
    owner: ScriptpoolClient
    owner_principal: str
    owner_key: str
    session_id: str
    artifact_id: str


@pytest.fixture
def shared(stack: Stack) -> Iterator[Shared]:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as owner:
        session_id = owner.create_session("shared", tags=["t"]).id
        header = A.StoreArtifactChunk(session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="doc"))
        artifact_id = owner.store_artifact(header, [b"the owner's words"]).id
        owner.state.set(ST.SetStateRequest(scope=f"session:{session_id}", key="k", value=to_value(1)))
        yield Shared(owner, principal, key, session_id, artifact_id)


def _grant(shared: Shared, principal: str, level: str) -> sessions_pb2.SessionGrants:
    return shared.owner.sessions.grant(
        S.SessionGrantChange(session_id=shared.session_id, principal=principal, level=level)
    )


def _ref(shared: Shared) -> S.SessionRef:
    return S.SessionRef(session_id=shared.session_id)


def _store(c: ScriptpoolClient, sh: Shared) -> A.ArtifactRef:
    return c.store_artifact(A.StoreArtifactChunk(session_id=sh.session_id, type="text"), [b"by a grantee"])


def _delete_an_artifact(c: ScriptpoolClient, sh: Shared) -> object:
    header = A.StoreArtifactChunk(session_id=sh.session_id, type="text")
    doomed = sh.owner.store_artifact(header, [b"to delete"]).id
    return c.artifacts.delete(A.ArtifactKey(session_id=sh.session_id, artifact_id=doomed))


def _scope(sh: Shared) -> str:
    return f"session:{sh.session_id}"


Op = Callable[[ScriptpoolClient, Shared], object]
OPS: list[tuple[str, str, Op]] = [
    ("Session.get", "read", lambda c, sh: c.sessions.get(_ref(sh))),
    ("Session.getMetadata", "read", lambda c, sh: c.sessions.get_metadata(_ref(sh))),
    ("Session.getTags", "read", lambda c, sh: c.sessions.get_tags(_ref(sh))),
    ("Session.getTimeline", "read", lambda c, sh: c.sessions.get_timeline(
        S.GetTimelineRequest(session_id=sh.session_id))),
    ("Artifact.list", "read", lambda c, sh: c.artifacts.list(A.ListArtifactsRequest(session_id=sh.session_id))),
    ("Artifact.get", "read", lambda c, sh: c.read_artifact(sh.session_id, sh.artifact_id)),
    ("State.get", "read", lambda c, sh: c.state.get(ST.StateKey(scope=_scope(sh), key="k"))),
    ("State.list", "read", lambda c, sh: c.state.list(ST.StateScope(scope=_scope(sh)))),
    ("Session.updateMetadata", "write", lambda c, sh: c.sessions.update_metadata(
        S.UpdateMetadataRequest(session_id=sh.session_id, updates=to_value_map({"by": "grantee"})))),
    ("Session.setTags", "write", lambda c, sh: c.sessions.set_tags(
        S.SetTagsRequest(session_id=sh.session_id, tags=["t"]))),
    ("Artifact.store", "write", _store),
    ("State.set", "write", lambda c, sh: c.state.set(
        ST.SetStateRequest(scope=_scope(sh), key="g", value=to_value(2)))),
    ("Session.suspend", "admin", lambda c, sh: c.sessions.suspend(_ref(sh))),
    ("Session.resume", "admin", lambda c, sh: c.sessions.resume(_ref(sh))),
    ("Artifact.delete", "admin", _delete_an_artifact),
    ("Session.listGrants", "admin", lambda c, sh: c.sessions.list_grants(_ref(sh))),
    ("Session.getAuditLog", "admin", lambda c, sh: c.sessions.get_audit_log(
        S.GetSessionAuditLogRequest(session_id=sh.session_id))),
    ("Session.save", "owner", lambda c, sh: c.sessions.save(_ref(sh))),
    ("Session.delete", "owner", lambda c, sh: c.sessions.delete(_ref(sh))),
    ("Session.setCurrent", "owner", lambda c, sh: c.sessions.set_current(
        S.SetCurrentSessionRequest(session_id=sh.session_id))),
]  # fmt: skip
ORDER = ("read", "write", "admin", "owner")


def _try(op: Op, c: ScriptpoolClient, sh: Shared) -> str:
    try:
        result = op(c, sh)
        if isinstance(result, tuple):  # read_artifact: (info, chunks)
            b"".join(result[1])
    except ScriptpoolError as exc:
        return exc.code
    return "OK"


@pytest.mark.parametrize("level", ["read", "write", "admin"])
def test_each_level_allows_exactly_its_operations(stack: Stack, shared: Shared, level: str) -> None:
    principal, key = stack.new_api_key()
    _grant(shared, principal, level)
    with ScriptpoolClient(stack.address, key) as grantee:
        got = {name: _try(op, grantee, shared) for name, _, op in OPS}
    held = ORDER.index(level)
    expected = {name: "OK" if ORDER.index(needs) <= held else "PERMISSION_DENIED" for name, needs, _ in OPS}
    assert got == expected
    assert shared.owner.get_session(shared.session_id).id == shared.session_id  # still there, still the owner's


def test_the_table_names_every_operation_the_test_checks() -> None:
    """The test's levels are the module's (one table): a change there must show here."""
    named = {name: needs for name, needs, _ in OPS if needs != "owner" and not name.startswith("Artifact.")}
    assert {name: session_access.LEVELS[session_access.needed(name) - 1] for name in named} == named
    assert all(session_access.needed(name) == session_access.OWNER for name, needs, _ in OPS if needs == "owner")
    assert session_cmd.SHARE_LEVELS == session_access.LEVELS


def test_a_write_grantees_state_and_artifacts_count_against_the_owner(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    _grant(shared, principal, "write")
    with ScriptpoolClient(stack.address, key) as grantee:
        grantee.state.set(ST.SetStateRequest(scope=_scope(shared), key="w", value=to_value(3)))
        ref = _store(grantee, shared)
    assert shared.owner.state.get(ST.StateKey(scope=_scope(shared), key="w")).value.int_value == 3
    listed = shared.owner.artifacts.list(A.ListArtifactsRequest(session_id=shared.session_id)).artifacts
    assert ref.id in {a.id for a in listed}
    redis = Redis.from_url(stack.redis_url)
    try:
        assert redis.get(state_bytes_key(principal)) is None  # charged to the owner, not the grantee
        assert int(redis.get(state_bytes_key(shared.owner_principal)) or 0) > 0
    finally:
        redis.close()


def _missing_answer(c: ScriptpoolClient) -> tuple[str, str]:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as caught:
        c.sessions.get(S.SessionRef(session_id=missing))
    return caught.value.code, caught.value.message.replace(missing, "<id>")


def test_a_revoke_takes_effect_at_once_and_leaves_the_answer_for_nothing(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    _grant(shared, principal, "write")
    with ScriptpoolClient(stack.address, key) as grantee:
        assert grantee.sessions.get(_ref(shared)).id == shared.session_id
        grants = shared.owner.sessions.revoke(S.SessionGrantChange(session_id=shared.session_id, principal=principal))
        assert dict(grants.grants) == {} and grants.owner == shared.owner_principal
        for op in (lambda: grantee.sessions.get(_ref(shared)),
                   lambda: grantee.state.get(ST.StateKey(scope=_scope(shared), key="k")),
                   lambda: grantee.artifacts.list(A.ListArtifactsRequest(session_id=shared.session_id))):  # fmt: skip
            with pytest.raises(NotFound) as caught:
                op()
            assert caught.value.message == f"session {shared.session_id} not found"
        with pytest.raises(NotFound) as refused:
            grantee.sessions.get(_ref(shared))
        assert (refused.value.code, refused.value.message.replace(shared.session_id, "<id>")) == _missing_answer(
            grantee
        )
    assert principal not in dict(shared.owner.sessions.list_grants(_ref(shared)).grants)


def test_a_grant_names_a_principal_that_exists(shared: Shared) -> None:
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidArgument) as caught:
        _grant(shared, nobody, "read")
    assert nobody in caught.value.message and "unknown principal" in caught.value.message
    change = A.PermissionChange(
        session_id=shared.session_id, artifact_id=shared.artifact_id, user=nobody, permission="read"
    )
    with pytest.raises(InvalidArgument) as on_artifact:
        shared.owner.artifacts.grant_permission(change)
    assert nobody in on_artifact.value.message
    with pytest.raises(InvalidArgument):
        _grant(shared, shared.owner_principal, "nonsense")
    with pytest.raises(ScriptpoolError) as to_owner:
        _grant(shared, shared.owner_principal, "read")
    assert to_owner.value.code == "FAILED_PRECONDITION"


def test_only_the_owner_or_an_admin_grantee_grants_and_only_the_owner_grants_admin(
    stack: Stack, shared: Shared
) -> None:
    writer, writer_key = stack.new_api_key()
    admin, admin_key = stack.new_api_key()
    third, _ = stack.new_api_key()
    _grant(shared, writer, "write")
    _grant(shared, admin, "admin")
    change = S.SessionGrantChange(session_id=shared.session_id, principal=third, level="read")
    with ScriptpoolClient(stack.address, writer_key) as by_writer:
        with pytest.raises(PermissionDenied) as caught:
            by_writer.sessions.grant(change)
        assert caught.value.message.endswith("needs admin; has write")
    with ScriptpoolClient(stack.address, admin_key) as by_admin:
        assert dict(by_admin.sessions.grant(change).grants)[third] == "read"
        with pytest.raises(PermissionDenied) as to_admin:
            by_admin.sessions.grant(S.SessionGrantChange(session_id=shared.session_id, principal=third, level="admin"))
        assert "only the owner grants or revokes admin" in to_admin.value.message
        assert dict(by_admin.sessions.revoke(change).grants).get(third) is None
    assert dict(shared.owner.sessions.list_grants(_ref(shared)).grants) == {writer: "write", admin: "admin"}


def test_every_refusal_is_in_the_sessions_audit_log(stack: Stack, shared: Shared) -> None:
    reader, reader_key = stack.new_api_key()
    stranger, stranger_key = stack.new_api_key()
    _grant(shared, reader, "read")
    with ScriptpoolClient(stack.address, reader_key) as by_reader:
        with pytest.raises(PermissionDenied):
            by_reader.sessions.set_tags(S.SetTagsRequest(session_id=shared.session_id, tags=["x"]))
    with ScriptpoolClient(stack.address, stranger_key) as by_stranger:
        with pytest.raises(NotFound):
            by_stranger.sessions.get(_ref(shared))
        with pytest.raises(NotFound):
            by_stranger.read_artifact(shared.session_id, shared.artifact_id)
        with pytest.raises(NotFound):
            by_stranger.state.get(ST.StateKey(scope=_scope(shared), key="k"))
    log = shared.owner.sessions.get_audit_log(S.GetSessionAuditLogRequest(session_id=shared.session_id))
    refusals = [(e.user, e.action, e.reason) for e in log.entries if not e.allowed]
    assert refusals == [
        (reader, "Session.setTags", "needs write; has read"),
        (stranger, "Session.get", "no grant"),
        (stranger, "Artifact.get", f"artifact {shared.artifact_id}: no grant"),
        (stranger, "State.get", "no grant"),
    ]
    grants = [(e.user, e.action, e.reason) for e in log.entries if e.allowed]
    assert grants == [(shared.owner_principal, "Session.grant", f"granted {reader} read")]


def test_a_grantees_job_acts_on_the_shared_session_with_the_grantees_rights(stack: Stack, shared: Shared) -> None:
    """The job runs in the grantee's own session; its globals name the shared one and act with the
    job's principal: a read grant reads, its writes are refused (and audited)."""
    principal, key = stack.new_api_key()
    _grant(shared, principal, "read")
    source = """
    local sid = INPUT.sid
    local function try(fn, ...)
      local ok, e = pcall(fn, ...)
      if ok then return "OK" end
      return e.code
    end
    return {
      name = Session.get(sid).name,
      k = State.get("session:" .. sid, "k"),
      listed = #Artifact.list(sid),
      set_tags = try(Session.setTags, sid, {"x"}),
      set_state = try(State.set, "session:" .. sid, "k", 2),
      delete = try(Session.delete, sid),
    }
    """
    with ScriptpoolClient(stack.address, key) as grantee:
        out = result_of(run_lua(grantee, source, inputs={"sid": shared.session_id}))
    assert out == {"name": "shared", "k": 1, "listed": 1, "set_tags": "PERMISSION_DENIED",
                   "set_state": "PERMISSION_DENIED", "delete": "PERMISSION_DENIED"}  # fmt: skip
    assert shared.owner.state.get(ST.StateKey(scope=_scope(shared), key="k")).value.int_value == 1
    log = shared.owner.sessions.get_audit_log(S.GetSessionAuditLogRequest(session_id=shared.session_id))
    refused = [(e.action, bool(e.job_id)) for e in log.entries if not e.allowed]
    assert refused == [("Session.setTags", True), ("State.set", True), ("Session.delete", True)]


def test_a_job_is_not_submitted_into_a_shared_session(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    _grant(shared, principal, "admin")
    with ScriptpoolClient(stack.address, key) as grantee, pytest.raises(NotFound):
        run_lua(grantee, "return 1", session_id=shared.session_id)


def test_grants_are_bounded_and_go_with_the_session(redis_client: Redis) -> None:
    lean = LeanPool(redis_client)
    try:
        _bounded_grants(redis_client, lean)
    finally:
        lean.close()


def _bounded_grants(redis_client: Redis, lean: LeanPool) -> None:
    access = SessionAccess(redis_client, max_grants=1, max_shared=1)
    sessions = SessionStore(redis_client, 1000, lean=lean, access=access)
    owner, a, b = Caller(principal="own"), "grantee-a", "grantee-b"
    for principal in (a, b):
        ApiKeyStore(redis_client).create(principal)
    first = sessions.create(owner, S.CreateSessionRequest(name="one")).id
    second = sessions.create(owner, S.CreateSessionRequest(name="two")).id
    access.change(owner, first, "own", a, "read", revoke=False)
    access.change(owner, first, "own", a, "write", revoke=False)  # a change of level is not a new grant
    with pytest.raises(ResourceExhausted, match="max_grants_per_session"):
        access.change(owner, first, "own", b, "read", revoke=False)
    with pytest.raises(ResourceExhausted, match="max_sessions_shared_to_principal"):
        access.change(owner, second, "own", a, "read", revoke=False)
    assert redis_client.zcard(shared_sessions_key(a)) == 1
    sessions.delete(owner, first)
    assert redis_client.zcard(shared_sessions_key(a)) == 0  # the grantee's index lets go with the session
    access.change(owner, second, "own", a, "read", revoke=False)


def test_a_job_credential_cannot_share(stack: Stack, shared: Shared) -> None:
    """Sharing is a person's decision: Grant with a job credential is refused."""
    redis = Redis.from_url(stack.redis_url)
    try:
        job_id, credential = running_job_credential(shared.owner, redis)
        with ScriptpoolClient(stack.address, credential) as job:
            with pytest.raises(PermissionDenied, match="client API key"):
                job.sessions.grant(S.SessionGrantChange(session_id=shared.session_id, principal="x", level="read"))
        release_job(job_id)
    finally:
        redis.close()


def test_the_cli_grants_lists_revokes_and_shows_the_audit_log(
    stack: Stack, shared: Shared, capsys: pytest.CaptureFixture[str]
) -> None:
    principal, _ = stack.new_api_key()

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["session", "--coordinator", stack.address, "--api-key", shared.owner_key, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert cli("grant", shared.session_id, principal, "write") == (
        0, f"{shared.owner_principal}\towner\n{principal}\twrite\n", ""
    )  # fmt: skip
    code, out, _ = cli("grants", shared.session_id, "--json")
    assert code == 0 and '"write"' in out
    code, _, err = cli("grant", shared.session_id, "nobody-" + uuid.uuid4().hex[:6], "read")
    assert code == 2 and "unknown principal" in err
    with pytest.raises(SystemExit) as bad_level:  # a usage mistake: one line, exit 2
        cli("grant", shared.session_id, principal, "owner")
    assert bad_level.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert cli("revoke", shared.session_id, principal)[1] == f"{shared.owner_principal}\towner\n"
    code, out, _ = cli("audit", shared.session_id)
    assert code == 0 and "Session.grant" in out and "Session.revoke" in out


def test_a_grantees_lists_and_queries_hold_its_own_sessions_and_the_shared_ones(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as grantee:
        own = grantee.create_session("mine").id
        assert [s.id for s in grantee.list_sessions().sessions] == [own]
        _grant(shared, principal, "read")
        assert [s.id for s in grantee.list_sessions().sessions] == [own, shared.session_id]  # newest update first
        shared.owner.sessions.set_tags(S.SetTagsRequest(session_id=shared.session_id, tags=["later"]))
        assert [s.id for s in grantee.list_sessions().sessions] == [shared.session_id, own]
        by_name = grantee.list_sessions(S.ListSessionsRequest(sort="name")).sessions
        assert [s.name for s in by_name] == ["mine", "shared"]
        assert [a.id for a in grantee.artifacts.query(A.ArtifactQuery()).artifacts] == [shared.artifact_id]
        shared.owner.sessions.revoke(S.SessionGrantChange(session_id=shared.session_id, principal=principal))
        assert [s.id for s in grantee.list_sessions().sessions] == [own]
        assert list(grantee.artifacts.query(A.ArtifactQuery()).artifacts) == []


def test_a_sessions_audit_log_is_trimmed(redis_client: Redis) -> None:
    access = SessionAccess(redis_client, max_audit_entries=100)
    session_id, prober = str(uuid.uuid4()), Caller(principal="prober")
    pipe = redis_client.pipeline(transaction=False)
    for _ in range(1000):
        access.audit(pipe, session_id, prober, "Session.get", False, "no grant")
    pipe.execute()
    held = redis_client.xlen(session_audit_key(session_id))
    assert 100 <= held <= 200  # MAXLEN ~ drops whole stream nodes (up to 100 entries each)
    redis_client.delete(session_audit_key(session_id))


def test_a_grantee_receives_the_shared_sessions_events_until_revoked(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    other = shared.owner.create_session("not shared").id
    with ScriptpoolClient(stack.address, key) as grantee:
        with pytest.raises(NotFound) as before:  # no grant yet: as a session of nothing
            grantee.events.subscribe(E.SubscribeRequest(pattern="session.*", session_id=shared.session_id))
        assert before.value.message == f"session {shared.session_id} not found"
        _grant(shared, principal, "read")
        sub = grantee.events.subscribe(E.SubscribeRequest(pattern="session.*", session_id=shared.session_id))
        shared.owner.sessions.suspend(S.SessionRef(session_id=other))  # the owner's other session: not delivered
        shared.owner.sessions.suspend(_ref(shared))
        event = next_event(grantee, sub.subscription_id)
        assert event is not None and (event.name, event.session_id) == ("session.state_changed", shared.session_id)
        shared.owner.sessions.revoke(S.SessionGrantChange(session_id=shared.session_id, principal=principal))
        with pytest.raises(NotFound):
            grantee.events.receive(E.ReceiveRequest(subscription_id=sub.subscription_id))
    log = shared.owner.sessions.get_audit_log(S.GetSessionAuditLogRequest(session_id=shared.session_id))
    assert [(e.user, e.action) for e in log.entries if not e.allowed] == [
        (principal, "Event.subscribe"),
        (principal, "Event.receive"),
    ]


def test_a_grantees_live_stream_of_the_shared_session_ends_when_revoked(stack: Stack, shared: Shared) -> None:
    principal, key = stack.new_api_key()
    _grant(shared, principal, "read")
    stop = threading.Event()

    def churn() -> None:  # the owner keeps changing the session until the test has what it needs
        while not stop.is_set():
            shared.owner.sessions.suspend(_ref(shared))
            shared.owner.sessions.resume(_ref(shared))

    with ScriptpoolClient(stack.address, key) as grantee:
        events = grantee.follow_events("session.*", session_id=shared.session_id)
        churner = threading.Thread(target=churn)
        churner.start()
        try:
            first = next(events)
            assert (first.name, first.session_id) == ("session.state_changed", shared.session_id)
            shared.owner.sessions.revoke(S.SessionGrantChange(session_id=shared.session_id, principal=principal))
            with pytest.raises(NotFound, match=f"session {shared.session_id} not found"):
                for _ in events:  # the events already read, then the refusal at the next wakeup
                    pass
        finally:
            stop.set()
            churner.join(timeout=30)
