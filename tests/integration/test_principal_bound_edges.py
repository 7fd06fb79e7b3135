"""What one principal may hold, at the edge of each bound: sessions, session metadata and tags, the
words an artifact version puts in the index, and the trimmed streams (a session's timeline, an
artifact's audit log). At the bound it works; one past it is refused with nothing written, or, for
what is trimmed or truncated, the count stays at the bound."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores.artifact_access import AUDIT_MAX, AccessControl
from scriptpool.coordinator.stores.artifact_index import MAX_WORDS
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.timeline import CallRecord
from scriptpool.coordinator.stores.validation import (
    MAX_DESCRIPTION,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_NAME,
    MAX_TAG,
    MAX_TAGS,
)
from scriptpool.core.job_records import TIMELINE_MAX, JobRecords
from scriptpool.core.keys import audit_key, principal_sessions_key, session_key, timeline_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.languages import Language
from scriptpool.sandbox.limits import LimitPolicy
from scriptpool.v1 import artifacts_pb2, common_pb2, jobs_pb2, sessions_pb2
from tests.conftest import Stack

from .test_artifact_quotas import coordinator
from .test_artifacts import store

A = artifacts_pb2
S = sessions_pb2

STREAM_NODE_ENTRIES = 100
"""Redis's `stream-node-max-entries` (its default): MAXLEN ~ drops whole nodes only, so a trimmed
stream keeps at least its bound and fewer than this many more."""


# ---------------------------------------------------------------------------- sessions per principal
def test_sessions_per_principal_stop_at_the_bound(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    """Session.Create and jobs submitted without a session (SubmitJob, SubmitJobs) share the bound."""
    principal, key = principal_and_key
    queue = f"edges-{uuid.uuid4().hex[:8]}"  # no worker takes these jobs
    owned = principal_sessions_key(principal)
    with coordinator(stack, redis_client, key, max_sessions_per_principal=3, queue=queue) as client:
        first = client.create_session("one").id
        client.create_session("two")
        client.submit(Language.LUA, "return 1")  # its new session is the third: at the bound
        assert redis_client.zcard(owned) == 3 and redis_client.llen(f"rq:queue:{queue}") == 1
        with pytest.raises(ResourceExhausted, match=r"quota sessions .*: 3 sessions in use, limit 3 "):
            client.create_session("four")
        with pytest.raises(ResourceExhausted, match=r"quota sessions .*: 3 sessions in use, limit 3 "):
            client.submit(Language.LUA, "return 1")
        assert redis_client.zcard(owned) == 3 and redis_client.llen(f"rq:queue:{queue}") == 1
        client.submit(Language.LUA, "return 1", session_id=first)  # no new session: accepted
        assert redis_client.llen(f"rq:queue:{queue}") == 2
        client.sessions.delete(S.SessionRef(session_id=first))
        batch = [job_request(Language.LUA, "return 1") for _ in range(2)]
        with pytest.raises(ResourceExhausted, match=r"2 sessions in use, limit 3 .*; 2 more would pass it"):
            list(client.submit_many(batch))  # refused whole: room for one of the two
        assert redis_client.zcard(owned) == 2 and redis_client.llen(f"rq:queue:{queue}") == 2
        assert [answer.index for answer in client.submit_many(batch[:1])] == [0]
        assert redis_client.zcard(owned) == 3 and redis_client.llen(f"rq:queue:{queue}") == 3


# ---------------------------------------------------------------------------- session metadata and tags
def _metadata(size: int) -> common_pb2.ValueMap:
    """Metadata of exactly `size` serialized bytes (one string field)."""
    metadata = common_pb2.ValueMap()
    length = size
    while True:
        metadata.fields["k"].string_value = "x" * length
        excess = len(metadata.SerializeToString(deterministic=True)) - size
        if excess == 0:
            return metadata
        length -= excess


def _nested(levels: int) -> common_pb2.ValueMap:
    """Metadata nested `levels` deep (the map itself is the first level)."""
    value = common_pb2.Value(string_value="deep")
    for _ in range(levels - 1):
        value = common_pb2.Value(list_value=common_pb2.ValueList(items=[value]))
    return common_pb2.ValueMap(fields={"k": value})


def _tags(count: int, length: int = MAX_TAG) -> list[str]:
    return [f"{i:04d}".ljust(length, "t") for i in range(count)]


PAST_THE_BOUND = [
    ({"name": "n" * (MAX_NAME + 1)}, f"name is {MAX_NAME + 1} characters; the maximum is {MAX_NAME}"),
    (
        {"description": "d" * (MAX_DESCRIPTION + 1)},
        f"description is {MAX_DESCRIPTION + 1} characters; the maximum is {MAX_DESCRIPTION}",
    ),
    ({"tags": _tags(MAX_TAGS + 1)}, f"{MAX_TAGS + 1} tags; the maximum is {MAX_TAGS}"),
    ({"tags": _tags(1, MAX_TAG + 1)}, f"each tag must be 1-{MAX_TAG} characters"),
    (
        {"metadata": _metadata(MAX_METADATA_BYTES + 1)},
        f"metadata is {MAX_METADATA_BYTES + 1} bytes; the maximum is {MAX_METADATA_BYTES}",
    ),
    (
        {"metadata": _nested(MAX_METADATA_DEPTH + 1)},
        f"nested {MAX_METADATA_DEPTH + 1} levels deep; the maximum is {MAX_METADATA_DEPTH}",
    ),
]


def test_a_session_at_every_size_bound_is_created(client: ScriptpoolClient, redis_client: Redis) -> None:
    for metadata in (_metadata(MAX_METADATA_BYTES), _nested(MAX_METADATA_DEPTH)):
        request = S.CreateSessionRequest(
            name="n" * MAX_NAME, description="d" * MAX_DESCRIPTION, tags=_tags(MAX_TAGS), metadata=metadata
        )
        session = client.sessions.create(request)
        assert (session.name, session.description) == (request.name, request.description)
        assert list(session.tags) == list(request.tags) and session.metadata == metadata
        assert redis_client.hget(session_key(session.id), "metadata") == metadata.SerializeToString(deterministic=True)


@pytest.mark.parametrize(("fields", "message"), PAST_THE_BOUND)
def test_a_session_one_past_a_size_bound_is_refused_and_not_written(
    client: ScriptpoolClient, redis_client: Redis, stack: Stack, fields: dict[str, object], message: str
) -> None:
    principal = client.get_session(client.create_session("probe").id).principal
    held = redis_client.zcard(principal_sessions_key(principal))
    with pytest.raises(InvalidArgument, match=message):
        client.sessions.create(S.CreateSessionRequest(**fields))  # type: ignore[arg-type]
    assert redis_client.zcard(principal_sessions_key(principal)) == held


def test_update_metadata_and_set_tags_stop_at_the_bounds(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("updated").id
    key, timeline = session_key(session_id), timeline_key(session_id)

    def update(metadata: common_pb2.ValueMap) -> common_pb2.ValueMap:
        return client.sessions.update_metadata(S.UpdateMetadataRequest(session_id=session_id, updates=metadata))

    assert update(_nested(MAX_METADATA_DEPTH)) == _nested(MAX_METADATA_DEPTH)
    at_bound = _metadata(MAX_METADATA_BYTES)
    assert update(at_bound) == at_bound  # replaces the nested "k": exactly the bound
    tags = client.sessions.set_tags(S.SetTagsRequest(session_id=session_id, tags=_tags(MAX_TAGS)))
    assert list(tags.tags) == _tags(MAX_TAGS)
    stored, entries = redis_client.hgetall(key), redis_client.xlen(timeline)
    with pytest.raises(InvalidArgument, match=f"metadata is {MAX_METADATA_BYTES + 1} bytes"):
        update(_metadata(MAX_METADATA_BYTES + 1))
    merged = _metadata(MAX_METADATA_BYTES)
    merged.fields["x"].int_value = 1
    with pytest.raises(InvalidArgument, match=f"metadata is {len(merged.SerializeToString())} bytes"):
        update(common_pb2.ValueMap(fields={"x": common_pb2.Value(int_value=1)}))  # the merge is what counts
    with pytest.raises(InvalidArgument, match=f"nested {MAX_METADATA_DEPTH + 1} levels deep"):
        update(_nested(MAX_METADATA_DEPTH + 1))
    with pytest.raises(InvalidArgument, match=f"{MAX_TAGS + 1} tags; the maximum is {MAX_TAGS}"):
        client.sessions.set_tags(S.SetTagsRequest(session_id=session_id, tags=_tags(MAX_TAGS + 1)))
    with pytest.raises(InvalidArgument, match=f"each tag must be 1-{MAX_TAG} characters"):
        client.sessions.set_tags(S.SetTagsRequest(session_id=session_id, tags=_tags(1, MAX_TAG + 1)))
    assert redis_client.hgetall(key) == stored and redis_client.xlen(timeline) == entries


# ---------------------------------------------------------------------------- artifact index words
def test_an_artifact_version_indexes_at_most_max_words_words(client: ScriptpoolClient, redis_client: Redis) -> None:
    """Past `MAX_WORDS` distinct words the index is truncated (the artifact is stored whole): the
    first `MAX_WORDS` are searchable, the rest are not, and the artifact's word set holds the bound."""
    session_id = client.create_session("words").id
    content = " ".join(f"w{i}" for i in range(MAX_WORDS + 1)).encode()  # the name "x" has no word

    def found(word: str) -> int:
        answer = client.artifacts.search(A.SearchArtifactsRequest(session_id=session_id, text=word))
        return len(answer.artifacts)

    at_bound = store(client, session_id, content.rsplit(b" ", 1)[0], "x", kind="text")
    assert redis_client.scard(f"sp:artifact:{at_bound.id}:words") == MAX_WORDS
    assert found(f"w{MAX_WORDS - 1}") == 1
    past = store(client, session_id, content, "y", kind="text")
    assert redis_client.scard(f"sp:artifact:{past.id}:words") == MAX_WORDS
    assert redis_client.hget(f"sp:artifact:{past.id}", "size") == str(len(content)).encode()
    assert found(f"w{MAX_WORDS - 1}") == 2 and found(f"w{MAX_WORDS}") == 0
    assert not redis_client.exists(f"sp:session:{session_id}:artifacts:word:w{MAX_WORDS}")


# ---------------------------------------------------------------------------- trimmed streams
_FILL = """
for i = 1, tonumber(ARGV[1]) do
  redis.call('XADD', KEYS[1], '*', 'type', 'filler', 'description', '', 'job_id', '', 'ts', '0', 'data', '')
end
return redis.call('XLEN', KEYS[1])
"""


def _fill_past(redis: Redis, stream: str, bound: int) -> None:
    """Fill `stream` (untrimmed) to two nodes past `bound`, so the next trimmed append must trim."""
    wanted = bound + 2 * STREAM_NODE_ENTRIES - redis.xlen(stream)
    assert redis.eval(_FILL, 1, stream, wanted) == bound + 2 * STREAM_NODE_ENTRIES


def _assert_trimmed(redis: Redis, stream: str, bound: int) -> None:
    assert bound <= redis.xlen(stream) < bound + STREAM_NODE_ENTRIES


@pytest.fixture
def lean(redis_client: Redis) -> Iterator[LeanPool]:
    pool = LeanPool(redis_client)
    yield pool
    pool.close()


def test_a_session_timeline_is_trimmed_at_timeline_max_by_every_writer(redis_client: Redis, lean: LeanPool) -> None:
    """The three writers of a timeline (`timeline.append`, a job's recorded call in Lua, a job's
    start and finish) each trim it to `TIMELINE_MAX`."""
    sessions = SessionStore(redis_client, 1000, lean=lean)
    owner = Caller(principal=f"e-{uuid.uuid4().hex[:12]}")
    session_id = sessions.create(owner, S.CreateSessionRequest(name="long")).id
    stream = timeline_key(session_id)
    try:
        _fill_past(redis_client, stream, TIMELINE_MAX)
        sessions.set_tags(owner, session_id, ["a"])  # timeline.append
        _assert_trimmed(redis_client, stream, TIMELINE_MAX)

        _fill_past(redis_client, stream, TIMELINE_MAX)
        jobs = JobStore(
            redis_client, sessions, queue=f"edges-{uuid.uuid4().hex[:8]}", policy=LimitPolicy(),
            max_source_bytes=1024, queue_ttl_seconds=600, result_ttl_seconds=600, lean=lean,
        )  # fmt: skip
        request = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 1", session_id=session_id)
        job_id = jobs.submit(owner, request).id
        job = Caller(principal=owner.principal, job_id=job_id, session_id=session_id)
        sessions.get_recorded(job, session_id, CallRecord("Session.get", job_id, session_id))  # LUA_RECORD_CALL
        _assert_trimmed(redis_client, stream, TIMELINE_MAX)

        _fill_past(redis_client, stream, TIMELINE_MAX)
        records = JobRecords(redis_client, lean=lean)
        assert records.start(job_id, "edges", 0.0) is not None  # log_job in proto/scriptpool/core/job_records.py
        _assert_trimmed(redis_client, stream, TIMELINE_MAX)
    finally:
        sessions.delete(owner, session_id)


def test_an_artifact_audit_log_is_trimmed_at_audit_max(redis_client: Redis) -> None:
    artifact_id = str(uuid.uuid4())
    stream = audit_key(artifact_id)
    try:
        _fill_past(redis_client, stream, AUDIT_MAX)
        AccessControl(redis_client).audit(redis_client, artifact_id, Caller(principal="auditor"), "read", True)
        _assert_trimmed(redis_client, stream, AUDIT_MAX)
    finally:
        redis_client.delete(stream)
