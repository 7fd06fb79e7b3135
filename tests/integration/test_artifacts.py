"""The Artifact service and global: storage, versions, dedup, queries, permissions, audit, limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import start_coordinator
from scriptpool.core.script_times import iso_utc
from scriptpool.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from scriptpool.v1 import artifacts_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value_map, to_value_map
from tests.conftest import Stack

from .helpers import result_of, run_lua

A = artifacts_pb2


def header(session_id: str, name: str = "", kind: str = "data", **meta: object) -> A.StoreArtifactChunk:
    custom = meta.pop("custom", {})
    assert isinstance(custom, dict)
    return A.StoreArtifactChunk(
        session_id=session_id,
        type=kind,
        metadata=A.ArtifactMetadata(name=name, custom=to_value_map(custom), **meta),  # type: ignore[arg-type]
    )


def store(client: ScriptpoolClient, session_id: str, content: bytes, name: str = "", **kw: object) -> A.ArtifactRef:
    return client.store_artifact(header(session_id, name, **kw), [content])  # type: ignore[arg-type]


def read(client: ScriptpoolClient, session_id: str, artifact_id: str, version: int = 0) -> tuple[A.ArtifactInfo, bytes]:
    info, chunks = client.read_artifact(session_id, artifact_id, version)
    return info, b"".join(chunks)


def blob(redis: Redis, content: bytes) -> dict[bytes, bytes]:
    return redis.hgetall(f"sp:blob:{hashlib.sha256(content).hexdigest()}")  # type: ignore[return-value]


def blob_keys(redis: Redis, content: bytes) -> list[bytes]:
    return list(redis.scan_iter(f"sp:blob:{hashlib.sha256(content).hexdigest()}*"))


@pytest.fixture
def session_id(client: ScriptpoolClient) -> str:
    return client.create_session("artifacts").id


@pytest.fixture
def other(stack: Stack) -> Iterator[tuple[str, ScriptpoolClient]]:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as c:
        yield principal, c


# ---------------------------------------------------------------------------- storage
def test_same_content_is_stored_once_and_freed_with_its_last_reference(
    client: ScriptpoolClient, session_id: str, redis_client: Redis
) -> None:
    content = b"shared bytes " * 50_000  # several chunks
    second_session = client.create_session("second").id
    first = store(client, session_id, content, "a.bin")
    twin = store(client, second_session, content, "b.bin")
    assert first.content_hash == twin.content_hash == hashlib.sha256(content).hexdigest()
    assert blob(redis_client, content)[b"refs"] == b"2"
    assert len(blob_keys(redis_client, content)) == 1 + (len(content) + 256 * 1024 - 1) // (256 * 1024)
    client.artifacts.delete(A.ArtifactKey(session_id=session_id, artifact_id=first.id))
    assert blob(redis_client, content)[b"refs"] == b"1"
    assert read(client, second_session, twin.id)[1] == content
    client.artifacts.delete(A.ArtifactKey(session_id=second_session, artifact_id=twin.id))
    assert blob_keys(redis_client, content) == []


def test_storing_a_name_again_and_update_make_versions_that_stay_readable(
    client: ScriptpoolClient, session_id: str, redis_client: Redis
) -> None:
    v1 = store(client, session_id, b"one", "notes.txt", kind="text", tags=["a"])
    v2 = store(client, session_id, b"two", "notes.txt", kind="text", tags=["b"])
    assert (v1.id, v1.version, v2.version) == (v2.id, 1, 2)
    v3 = client.store_artifact(A.StoreArtifactChunk(session_id=session_id, artifact_id=v1.id), [b"three"])
    assert (v3.id, v3.version) == (v1.id, 3)
    for version, content in ((1, b"one"), (2, b"two"), (3, b"three"), (0, b"three")):
        info, data = read(client, session_id, v1.id, version)
        assert data == content and info.version == (version or 3)
    info, _ = read(client, session_id, v1.id)
    assert list(info.metadata.tags) == ["b"] and info.type == "text"  # update without metadata keeps it
    assert [a.version for a in client.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts] == [3]
    assert list(client.artifacts.find_by_tag(A.FindByTagRequest(session_id=session_id, tag="a")).artifacts) == []
    with pytest.raises(NotFound, match="no version 4"):
        read(client, session_id, v1.id, 4)
    client.artifacts.delete(A.ArtifactKey(session_id=session_id, artifact_id=v1.id))
    for content in (b"one", b"two", b"three"):
        assert blob_keys(redis_client, content) == []
    with pytest.raises(NotFound):
        read(client, session_id, v1.id)


def test_deleting_a_session_deletes_its_artifacts_but_keeps_shared_content(
    client: ScriptpoolClient, session_id: str, redis_client: Redis
) -> None:
    keeper = client.create_session("keeper").id
    store(client, session_id, b"only here", "x")
    shared = store(client, session_id, b"in both", "y")
    store(client, keeper, b"in both", "z")
    client.sessions.delete(sessions_pb2.SessionRef(session_id=session_id))
    assert blob_keys(redis_client, b"only here") == []
    assert blob(redis_client, b"in both")[b"refs"] == b"1"
    assert not redis_client.exists(f"sp:artifact:{shared.id}")


def test_a_corrupted_chunk_is_data_loss(client: ScriptpoolClient, session_id: str, redis_client: Redis) -> None:
    content = bytes(range(256)) * 4000
    ref = store(client, session_id, content, "c")
    redis_client.setrange(f"sp:blob:{ref.content_hash}:1", 10, b"X")
    with pytest.raises(DataLoss, match="does not match its sha256"):
        read(client, session_id, ref.id)
    redis_client.delete(f"sp:blob:{ref.content_hash}:0")
    with pytest.raises(DataLoss, match="chunk 0"):
        read(client, session_id, ref.id)


# ---------------------------------------------------------------------------- queries
def test_query_filters_sorts_and_pages_using_the_indexes(client: ScriptpoolClient, session_id: str) -> None:
    ids = {}
    for name, kind, tags, size, custom in (
        ("report.json", "data", ["q4", "final"], 10, {"owner": "ann"}),
        ("report.txt", "text", ["q4"], 200, {"owner": "bob"}),
        ("model.bin", "model", ["final"], 3000, {"owner": "ann"}),
    ):
        ids[name] = store(client, session_id, b"x" * size, name, kind=kind, tags=tags, custom=custom).id

    def names(**q: object) -> list[str]:
        query = A.ArtifactQuery(session_id=session_id, **q)  # type: ignore[arg-type]
        return [a.metadata.name for a in client.artifacts.query(query).artifacts]

    assert names(sort="name") == ["model.bin", "report.json", "report.txt"]
    assert names(tags=["q4", "final"]) == ["report.json"]
    assert sorted(names(tags_any=["q4", "final"])) == ["model.bin", "report.json", "report.txt"]
    assert names(type="model") == ["model.bin"]
    assert names(name_pattern="report.*", sort="-size") == ["report.txt", "report.json"]
    assert sorted(names(metadata=to_value_map({"owner": "ann"}))) == ["model.bin", "report.json"]
    assert names(min_size=100, max_size=1000) == ["report.txt"]
    assert names(sort="-created_at") == ["model.bin", "report.txt", "report.json"]
    query = A.ArtifactQuery(session_id=session_id, sort="name", page={"limit": 2})  # type: ignore[arg-type]
    page = client.artifacts.query(query)
    assert len(page.artifacts) == 2 and page.next_cursor == "2"
    query.page.cursor = page.next_cursor
    assert [a.metadata.name for a in client.artifacts.query(query).artifacts] == ["report.txt"]
    query = A.ArtifactQuery(session_id=session_id)
    query.created_after.float_value = 0.0
    assert len(client.artifacts.query(query).artifacts) == 3
    # Without a session: every session of the caller.
    assert ids["model.bin"] in {a.id for a in client.artifacts.query(A.ArtifactQuery(type="model")).artifacts}


def test_search_finds_words_in_name_description_and_text_content(client: ScriptpoolClient, session_id: str) -> None:
    store(client, session_id, b"the quarterly revenue grew", "alpha", description="finance numbers")
    store(client, session_id, b"\xff\xfe binary revenue", "beta")
    store(client, session_id, b"nothing", "gamma-revenue")

    def found(text: str) -> list[str]:
        request = A.SearchArtifactsRequest(session_id=session_id, text=text)
        return sorted(a.metadata.name for a in client.artifacts.search(request).artifacts)

    assert found("Revenue") == ["alpha", "gamma-revenue"]  # binary content is not indexed
    assert found("finance quarterly") == ["alpha"]
    assert found("absent") == []
    with pytest.raises(InvalidArgument):
        found("  ")


# ---------------------------------------------------------------------------- permissions and audit
def test_permission_matrix_owner_granted_revoked_stranger(
    client: ScriptpoolClient, session_id: str, other: tuple[str, ScriptpoolClient], stack: Stack
) -> None:
    friend, friend_client = other
    stranger_name, stranger_key = stack.new_api_key()
    stranger = ScriptpoolClient(stack.address, stranger_key)
    ref = store(client, session_id, b"secret", "s")
    key = A.ArtifactKey(session_id=session_id, artifact_id=ref.id)

    def change(method: str, user: str, permission: str, by: ScriptpoolClient = client) -> A.Permissions:
        request = A.PermissionChange(session_id=session_id, artifact_id=ref.id, user=user, permission=permission)
        return (by.artifacts.grant_permission if method == "GrantPermission" else by.artifacts.revoke_permission)(
            request
        )

    def can(who: ScriptpoolClient) -> dict[str, bool | str]:
        """True (allowed), False (PERMISSION_DENIED: the caller has some access), or "unseen"
        (NOT_FOUND: no access at all, the answer a missing artifact gets)."""
        out: dict[str, bool | str] = {}
        update = A.StoreArtifactChunk(session_id=session_id, artifact_id=ref.id)
        audit = A.GetAuditLogRequest(session_id=session_id, artifact_id=ref.id)
        for action, attempt in (
            ("read", lambda: read(who, session_id, ref.id)),
            ("write", lambda: who.store_artifact(update, [b"secret"])),
            ("admin", lambda: who.artifacts.get_audit_log(audit)),
        ):
            try:
                attempt()
                out[action] = True
            except PermissionDenied:
                out[action] = False
            except NotFound:
                out[action] = "unseen"
        return out

    unseen = {"read": "unseen", "write": "unseen", "admin": "unseen"}

    assert can(client) == {"read": True, "write": True, "admin": True}
    assert can(friend_client) == unseen
    assert change("GrantPermission", friend, "read").grants[friend] == "read"
    assert can(friend_client) == {"read": True, "write": False, "admin": False}
    change("GrantPermission", friend, "write")
    assert can(friend_client) == {"read": True, "write": True, "admin": False}
    with pytest.raises(PermissionDenied):  # only admin grants
        change("GrantPermission", friend, "admin", by=friend_client)
    change("RevokePermission", friend, "write")
    assert client.artifacts.get_permissions(key).grants[friend] == "read"
    change("RevokePermission", friend, "read")
    assert friend not in client.artifacts.get_permissions(key).grants
    assert can(friend_client) == unseen
    assert can(stranger) == unseen
    with pytest.raises(NotFound):
        friend_client.artifacts.delete(key)
    change("GrantPermission", friend, "delete")
    owner = client.artifacts.get_permissions(key).owner
    with pytest.raises(FailedPrecondition, match="cannot be revoked"):
        change("RevokePermission", owner, "read")
    with pytest.raises(InvalidArgument, match="unknown permission"):
        change("GrantPermission", friend, "superuser")
    with pytest.raises(InvalidArgument, match="invalid user"):
        change("GrantPermission", "bad user!", "read")
    check = A.CheckAccessRequest(session_id=session_id, artifact_id=ref.id, user=friend, permission="delete")
    before = len(
        client.artifacts.get_audit_log(A.GetAuditLogRequest(session_id=session_id, artifact_id=ref.id)).entries
    )
    assert client.artifacts.check_access(check).allowed is True
    check.permission = "admin"
    assert client.artifacts.check_access(check).allowed is False
    assert client.artifacts.get_permissions(key).grants[friend] == "delete"  # no side effect
    check.user = ""
    assert friend_client.artifacts.check_access(check).allowed is False  # a grantee may ask about itself
    with pytest.raises(NotFound):  # a stranger may not even ask
        stranger.artifacts.check_access(check)
    log = client.artifacts.get_audit_log(A.GetAuditLogRequest(session_id=session_id, artifact_id=ref.id)).entries
    assert [(e.action, e.reason) for e in log[before:-1]] == [
        ("checkAccess", f"asked whether {friend} has delete: True"),
        ("checkAccess", f"asked whether {friend} has admin: False"),
        ("getPermissions", "owner"),
        ("checkAccess", f"asked whether {friend} has admin: False"),
    ]
    assert stranger_name not in {e.user for e in log}
    friend_client.artifacts.delete(key)  # delete granted
    stranger.close()


def test_the_audit_log_records_every_access_allowed_or_denied(
    client: ScriptpoolClient, session_id: str, other: tuple[str, ScriptpoolClient], stack: Stack
) -> None:
    friend, friend_client = other
    ref = store(client, session_id, b"audited", "a")
    read(client, session_id, ref.id)
    b"".join(client.read_artifact(session_id, ref.id)[1])
    grant = A.PermissionChange(session_id=session_id, artifact_id=ref.id, user=friend, permission="read")
    client.artifacts.grant_permission(grant)
    with pytest.raises(PermissionDenied):
        friend_client.artifacts.delete(A.ArtifactKey(session_id=session_id, artifact_id=ref.id))
    log = client.artifacts.get_audit_log(A.GetAuditLogRequest(session_id=session_id, artifact_id=ref.id))
    rows = [(e.user, e.action, e.allowed) for e in log.entries]
    me = client.artifacts.get_permissions(A.ArtifactKey(session_id=session_id, artifact_id=ref.id)).owner
    assert rows[:5] == [
        (me, "store", True), (me, "get", True), (me, "get", True), (me, "grant", True), (friend, "delete", False),
    ]  # fmt: skip
    assert log.entries[4].reason == "needs delete; has read"
    assert all(e.timestamp > 0 for e in log.entries)
    page = client.artifacts.get_audit_log(
        A.GetAuditLogRequest(session_id=session_id, artifact_id=ref.id, page={"limit": 2}),  # type: ignore[arg-type]
    )
    assert len(page.entries) == 2 and page.next_cursor
    timeline = client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=session_id))
    kinds = [e.type for e in timeline.entries]
    assert "artifact.stored" in kinds and kinds.count("artifact.accessed") == 2


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_and_stores_nothing(
    client: ScriptpoolClient, session_id: str, other: tuple[str, ScriptpoolClient], redis_client: Redis
) -> None:
    _, stranger = other
    for bad, error, message in (
        (header(session_id, "x", kind=""), InvalidArgument, "type is required"),
        (header(session_id, "x", kind="not a type!"), InvalidArgument, "invalid artifact type"),
        (header("nope", "x"), InvalidArgument, "invalid session id"),
        (header(session_id, "x" * 256), InvalidArgument, "maximum is 255"),
        (header(session_id, "x", tags=[""]), InvalidArgument, "each tag"),
        (A.StoreArtifactChunk(session_id=session_id, artifact_id="bad", type="data"), InvalidArgument, "artifact id"),
    ):
        with pytest.raises(error, match=message):
            client.store_artifact(bad, [b"content"])
    with pytest.raises(NotFound):  # never confirms another principal's session
        store(stranger, session_id, b"content", "x")
    client.sessions.suspend(sessions_pb2.SessionRef(session_id=session_id))
    with pytest.raises(FailedPrecondition, match="it is suspended; that needs active"):
        store(client, session_id, b"content", "x")
    for malformed in (
        A.ArtifactQuery(session_id=session_id, sort="colour"),
        A.ArtifactQuery(session_id=session_id, page={"cursor": "abc"}),  # type: ignore[arg-type]
        A.ArtifactQuery(session_id=session_id, page={"limit": 5000}),  # type: ignore[arg-type]
        A.ArtifactQuery(session_id=session_id, min_size=10, max_size=5),
        A.ArtifactQuery(session_id=session_id, type="bad type"),
        A.ArtifactQuery(session_id="x"),
    ):
        with pytest.raises(InvalidArgument):
            client.artifacts.query(malformed)
    query = A.ArtifactQuery(session_id=session_id)
    query.created_after.string_value = "last tuesday"
    with pytest.raises(InvalidArgument, match="RFC 3339"):
        client.artifacts.query(query)
    assert client.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts == []
    assert list(redis_client.scan_iter(f"sp:session:{session_id}:artifacts*")) == []
    assert list(redis_client.scan_iter("sp:upload:*")) == []


def test_oversized_content_is_refused_while_streaming(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    from dataclasses import replace

    running = start_coordinator(replace(stack.settings, max_artifact_bytes=600_000), redis_client)
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", principal_and_key[1]) as small:
            session_id = small.create_session("small").id
            sent = []

            def pieces() -> object:
                for i in range(100):  # would be 25 MB; refused after the third piece
                    sent.append(i)
                    yield bytes([i]) * 256 * 1024

            with pytest.raises(ResourceExhausted, match="maximum artifact size of 600000"):
                small.store_artifact(header(session_id, "big"), pieces())  # type: ignore[arg-type]
            assert len(sent) < 100
            assert small.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts == []
            assert list(redis_client.scan_iter("sp:upload:*")) == []
            assert store(small, session_id, b"y" * 600_000, "fits").version == 1
    finally:
        running.stop(grace=1)


# ---------------------------------------------------------------------------- Hypothesis
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.binary(max_size=3000),
    name=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    custom=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | st.binary(max_size=20),
        max_size=4,
    ),
)
def test_content_and_metadata_round_trip_exactly(
    client: ScriptpoolClient, session_id: str, content: bytes, name: str, custom: dict[str, PlainValue]
) -> None:
    ref = store(client, session_id, content, name, custom=custom, description=name)
    info, data = read(client, session_id, ref.id, ref.version)
    assert data == content
    assert info.metadata.name == name and info.metadata.description == name
    assert from_value_map(info.metadata.custom) == custom
    assert info.size == len(content) and info.content_hash == hashlib.sha256(content).hexdigest()


# ---------------------------------------------------------------------------- Lua, through a worker
def test_every_artifact_operation_from_lua(client: ScriptpoolClient, session_id: str, stack: Stack) -> None:
    stack.new_api_key("someone")  # a grant names a principal that exists
    source = """
    local sid = INPUT.sid
    local bin = {}
    for i = 0, 255 do bin[#bin + 1] = string.char(i) end
    bin = table.concat(bin)
    local ref = Artifact.store(sid, {content = bin, type = "binary",
                                     metadata = {name = "all.bin", description = "every byte", tags = {"t1"},
                                                 format = "raw", custom = {n = 1}}})
    local text_id = Artifact.store(nil, "text", "notes.txt", "hello artifact world", {tags = {"t2"}})
    local v2 = Artifact.update(sid, ref, bin .. bin)
    local got = Artifact.get(sid, ref, 1)
    local latest = Artifact.get(sid, tostring(ref))
    local perms = Artifact.getPermissions(sid, ref)
    local out = {
      id_is_string = type(tostring(ref)) == "string" and ("id:" .. ref) == ("id:" .. ref.id),
      same = ref == v2, hash = ref.content_hash, version = v2.version, session = ref.session_id,
      exact = got.content == bin, latest_size = latest.size, latest_version = latest.version,
      meta = got.metadata, type = got.type,
      content = Artifact.getContent(sid, ref, 2) == bin .. bin,
      listed = #Artifact.list(""), by_type = #Artifact.findByType(sid, "text"),
      by_tag = Artifact.findByTag(sid, "t1")[1].id == ref.id,
      search = Artifact.search(sid, "artifact")[1].metadata.name,
      queried = #Artifact.query({session_id = sid, tags_any = {"t1", "t2"}, sort = "name"}),
      granted = Artifact.grantPermission(sid, ref, "someone", "read"),
      perms = Artifact.getPermissions(sid, ref).grants.someone,
      check = Artifact.checkAccess(sid, ref, "someone", "write"),
      revoked = Artifact.revoke_permission(sid, ref, "someone", "read"),
      owner_is_admin = perms.grants[perms.owner],
      audit = #Artifact.getAuditLog(sid, ref),
    }
    local ok, e = pcall(Artifact.storeFile, sid, "../etc/passwd", {})
    out.escape = e.code
    ok, e = pcall(Artifact.save_to_file, sid, ref, "/../abs")
    out.escape_abs = e.code
    out.saved_in_root = Artifact.save_to_file(sid, ref, "/abs")  -- the job's root, not the host's /
    ok, e = pcall(Artifact.storeFile, sid, "inside.txt", {})
    out.missing_file = e.code
    ok, e = pcall(Artifact.get, sid, "not-an-id")
    out.bad_id = e.code
    ok, e = pcall(Artifact.store, sid, {content = {}, type = "x"})
    out.bad_content = e.code
    out.deleted = Artifact.delete(sid, text_id)
    out.after_delete = #Artifact.list(sid)
    return out
    """
    out = result_of(run_lua(client, source, session_id=session_id, inputs={"sid": session_id}))
    assert isinstance(out, dict)
    everything = bytes(range(256))
    assert out["id_is_string"] is True and out["same"] is True
    # the id's fields are as the job's latest store or update of it left them (the update's)
    assert out["hash"] == hashlib.sha256(everything * 2).hexdigest() and out["version"] == 2
    assert out["session"] == session_id and out["exact"] is True and out["content"] is True
    assert (out["latest_size"], out["latest_version"], out["type"]) == (512, 2, "binary")
    meta = out["meta"]
    assert isinstance(meta, dict)
    created, created_unix = meta.pop("created_at"), meta.pop("created_at_unix")
    updated, updated_unix = meta.pop("updated_at"), meta.pop("updated_at_unix")
    assert isinstance(created_unix, float) and isinstance(updated_unix, float) and updated_unix >= created_unix
    assert created == iso_utc(created_unix) and updated == iso_utc(updated_unix)
    # rs-llmspell's metadata fields (issue 16) beside scriptpool's own
    assert meta == {"name": "all.bin", "description": "every byte", "tags": ["t1"],
                    "custom": {"n": 1, "format": "raw"}, "artifact_type": "binary",
                    "mime_type": "application/octet-stream", "size": 256, "version": 1}  # fmt: skip
    assert (out["listed"], out["by_type"], out["by_tag"], out["search"], out["queried"]) == (2, 1, True, "notes.txt", 2)
    assert (out["granted"], out["check"], out["revoked"], out["perms"], out["owner_is_admin"]) == (
        True, False, True, "read", "admin",
    )  # fmt: skip
    assert isinstance(out["audit"], int) and out["audit"] >= 8
    assert (out["escape"], out["escape_abs"], out["missing_file"], out["saved_in_root"]) == (
        "PERMISSION_DENIED", "PERMISSION_DENIED", "NOT_FOUND", "abs",
    )  # fmt: skip
    assert (out["bad_id"], out["bad_content"]) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert (out["deleted"], out["after_delete"]) == (True, 1)
    info, data = read(client, session_id, str(out.get("id", "")) or _only_id(client, session_id), 2)
    assert data == everything * 2


def _only_id(client: ScriptpoolClient, session_id: str) -> str:
    artifacts = client.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts
    assert len(artifacts) == 1
    return str(artifacts[0].id)


def test_lua_text_content_comes_back_as_a_string_and_errors_carry_codes(
    client: ScriptpoolClient, session_id: str
) -> None:
    source = """
    local id = Artifact.store("", {content = "héllo", type = "text", metadata = {name = "h"}})
    local a = Artifact.get("", id)
    local ok, e = pcall(Artifact.grantPermission, "", id, "x", "owner")
    return {a.content, a.metadata.name, e.code, tostring(e)}
    """
    out = result_of(run_lua(client, source, session_id=session_id))
    assert out == ["héllo", "h", "INVALID_ARGUMENT",
                   "INVALID_ARGUMENT: unknown permission 'owner': use one of read, write, delete, admin"]  # fmt: skip
