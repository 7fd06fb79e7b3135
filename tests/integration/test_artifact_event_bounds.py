"""Bounds on the work one call can cause in the event and artifact paths, whatever the principal
holds: each test runs a store (or servicer) on the real Redis through a connection that counts the
reply elements Redis sends back (test_call_bounds.py), so reading more than the bound shows up as a
count, not as a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.hooks import HookServicer
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.stores.api_keys import ApiKeyStore
from scriptpool.coordinator.stores.artifacts import ArtifactStore
from scriptpool.coordinator.stores.events import EventStore
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.stores.replay import ReplayStore
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.core.event_streams import append_event
from scriptpool.core.keys import principal_grants_key, session_index, session_key, session_state_key, snapshot_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument, NotFound, ResourceExhausted
from scriptpool.sandbox.limits import LimitPolicy
from scriptpool.v1 import artifacts_pb2, common_pb2, events_pb2, jobs_pb2, sessions_pb2

from .test_call_bounds import ReplyCounter, counting_redis

ENTRY_ELEMENTS = 15
"""Reply elements one emitted event's stream entry costs: its id and 7 field-value pairs."""


@pytest.fixture
def counter() -> ReplyCounter:
    return ReplyCounter()


@pytest.fixture
def counted(redis_client: Redis, counter: ReplyCounter) -> Iterator[Redis]:
    client = counting_redis(redis_client, counter)
    yield client
    client.close()


def _caller() -> Caller:
    return Caller(principal=f"e-{uuid.uuid4().hex[:12]}")


def _emit(events: EventStore, caller: Caller, name: str, count: int = 1) -> None:
    for n in range(count):
        events.emit(caller, name, common_pb2.Value(int_value=n), "")


def test_a_receive_reads_at_most_max_event_scan_entries(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    writer = EventStore(redis_client)
    reader = EventStore(counted, max_scan=100)
    caller = _caller()
    subscription = reader.subscribe(caller, "wanted")
    _emit(writer, caller, "noise", 1000)
    _emit(writer, caller, "wanted")
    counter.reset()
    assert reader.receive(caller, subscription.subscription_id, 0) is None
    # 100 entries and a few small replies, not the 1,001 entries waiting
    assert 100 * ENTRY_ELEMENTS <= counter.elements < 100 * ENTRY_ELEMENTS + 50
    calls = 1
    event = None
    while event is None:
        event = reader.receive(caller, subscription.subscription_id, 0)
        calls += 1
    assert event.name == "wanted" and calls == 11  # each call continued where the last one stopped
    assert reader.receive(caller, subscription.subscription_id, 0) is None  # delivered once


@pytest.mark.parametrize(("noise", "calls"), [(99, 1), (100, 2)])
def test_a_receive_finds_a_match_at_the_edge_of_its_scan(redis_client: Redis, noise: int, calls: int) -> None:
    events = EventStore(redis_client, max_scan=100)
    caller = _caller()
    subscription = events.subscribe(caller, "wanted")
    _emit(events, caller, "noise", noise)
    _emit(events, caller, "wanted")
    answers = [events.receive(caller, subscription.subscription_id, 0) for _ in range(calls)]
    assert [a is not None for a in answers] == [False] * (calls - 1) + [True]


def test_a_stream_wakeup_reads_at_most_max_event_scan_entries(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    writer = EventStore(redis_client)
    reader = EventStore(counted, max_scan=100)
    caller = _caller()
    wakeups = 0

    def still_wanted() -> bool:
        nonlocal wakeups
        wakeups += 1
        if wakeups == 1:  # the stream has started (its position is taken): now the backlog comes
            _emit(writer, caller, "noise", 1000)
            _emit(writer, caller, "wanted")
            counter.reset()
        return True

    stream = reader.follow(caller, "wanted", still_wanted)
    event = next(stream)
    assert event.name == "wanted"
    assert wakeups == 11  # ten wakeups of 100 entries, then the one that found it
    assert counter.elements < 1001 * ENTRY_ELEMENTS + 11 * 10


class _OneCaller:
    def __init__(self, caller: Caller) -> None:
        self.the_caller = caller

    def caller(self, context: grpc.ServicerContext) -> Caller:
        return self.the_caller


class _Context:
    """The few parts of a gRPC servicer context that HookService.Poll and the status wrapper read."""

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def code(self) -> None:
        return None


def _hooks(events: EventStore, caller: Caller) -> tuple[HookServicer, grpc.ServicerContext]:
    auth = cast(Authenticator, _OneCaller(caller))
    return HookServicer(auth, events, 30, 1000, WaitingCalls(8, 8, 8)), cast(Any, _Context())


def test_a_hook_poll_reads_at_most_max_event_scan_entries_across_its_hooks(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    caller = _caller()
    writer = EventStore(redis_client)
    hooks, context = _hooks(EventStore(counted, max_scan=300), caller)
    for _ in range(3):
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), context)
    _emit(writer, caller, "noise", 1000)
    # the coordinator's own lifecycle entry (scripts and clients may not emit that name)
    append_event(redis_client, caller.principal, "", {"type": "state.changed", "ts": "1", "job_id": ""})
    counter.reset()
    first = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0), context)
    assert list(first.firings) == []
    # 3 hooks x 100 entries (a share each) and small replies: not 3 x 1,001 entries
    assert 300 * ENTRY_ELEMENTS <= counter.elements < 300 * ENTRY_ELEMENTS + 100
    fired: list[str] = []
    polls = 1
    while len(fired) < 3:
        fired += [f.hook_id for f in hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0), context).firings]
        polls += 1
    assert len(set(fired)) == 3 and polls == 11  # each hook fired once, continuing where it stopped


def test_an_idle_hook_poll_blocks_instead_of_polling(counted: Redis, counter: ReplyCounter) -> None:
    caller = _caller()
    hooks, context = _hooks(EventStore(counted, max_scan=300), caller)
    for _ in range(3):
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), context)
    counter.reset()
    assert list(hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0.5), context).firings) == []
    # one pass over the 3 hooks (about 6 replies each) and one blocking read: the old loop made a
    # pass every 0.1 s
    assert counter.replies < 30


# ---------------------------------------------------------------- artifacts


def _artifacts(redis: Redis, lean: LeanPool, **bounds: Any) -> tuple[ArtifactStore, SessionStore]:
    sessions = SessionStore(redis, 1000, lean=lean)
    store = ArtifactStore(
        redis, max_artifact_bytes=1 << 20, max_session_bytes=1 << 30, max_principal_bytes=1 << 30, **bounds
    )
    sessions.delete_hooks.append(store.delete_session_artifacts)
    return store, sessions


def _session(sessions: SessionStore, caller: Caller) -> str:
    return sessions.create(caller, sessions_pb2.CreateSessionRequest(name="art")).id


def _store(store: ArtifactStore, caller: Caller, session_id: str, name: str, kind: str = "text") -> str:
    header = artifacts_pb2.StoreArtifactChunk(
        session_id=session_id, type=kind, metadata=artifacts_pb2.ArtifactMetadata(name=name)
    )
    return store.store(caller, header, [f"content of {name}".encode()]).id


def _query(store: ArtifactStore, caller: Caller, **fields: Any) -> list[str]:
    return [a.metadata.name for a in store.query(caller, artifacts_pb2.ArtifactQuery(**fields)).artifacts]


@pytest.fixture
def lean(redis_client: Redis) -> Iterator[LeanPool]:
    pool = LeanPool(redis_client)
    yield pool
    pool.close()


@pytest.mark.parametrize("cursor", ["\u00b2", "9" * 30, "-1", "x"])
def test_artifact_list_and_query_refuse_a_cursor_they_did_not_hand_out(
    redis_client: Redis, lean: LeanPool, cursor: str
) -> None:
    store, sessions = _artifacts(redis_client, lean)
    caller = _caller()
    session_id = _session(sessions, caller)
    _store(store, caller, session_id, "one")
    page = common_pb2.PageRequest(cursor=cursor)
    with pytest.raises(InvalidArgument, match="invalid cursor"):
        store.list(caller, session_id, page)
    with pytest.raises(InvalidArgument, match="invalid cursor"):
        store.query(caller, artifacts_pb2.ArtifactQuery(session_id=session_id, page=page))


def test_a_grantee_lists_only_its_page_of_a_big_session(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    store, sessions = _artifacts(redis_client, lean)
    owner, grantee = _caller(), _caller()
    ApiKeyStore(redis_client).create(grantee.principal)  # a grant names a principal that exists
    session_id = _session(sessions, owner)
    first, second = _store(store, owner, session_id, "first"), _store(store, owner, session_id, "second")
    _store(store, owner, session_id, "not granted")
    # 5,000 more artifacts in the session's index and 5,000 grants elsewhere (ids only: never loaded)
    redis_client.zadd(session_index(session_id, ":created"), {str(uuid.uuid4()): i for i in range(5000)})
    redis_client.sadd(principal_grants_key(grantee.principal), *[str(uuid.uuid4()) for _ in range(5000)])
    for artifact_id in (first, second):
        store.change_permission(
            owner, artifacts_pb2.PermissionChange(session_id=session_id, artifact_id=artifact_id,
                                                  user=grantee.principal, permission="read"), "grant",
        )  # fmt: skip
    reader, _ = _artifacts(counted, lean)
    counter.reset()
    page = reader.list(grantee, session_id, common_pb2.PageRequest(limit=1))
    assert [a.id for a in page.artifacts] == [second] and page.next_cursor == "1"
    assert counter.elements < 100  # the session, 2 ids, one artifact's records: not 5,000 ids
    rest = reader.list(grantee, session_id, common_pb2.PageRequest(limit=1, cursor="1"))
    assert [a.id for a in rest.artifacts] == [first] and rest.next_cursor == ""
    assert _query(reader, grantee, session_id=session_id) == ["second", "first"]
    store.change_permission(
        owner, artifacts_pb2.PermissionChange(session_id=session_id, artifact_id=second,
                                              user=grantee.principal, permission="read"), "revoke",
    )  # fmt: skip
    assert [a.id for a in reader.list(grantee, session_id, common_pb2.PageRequest()).artifacts] == [first]
    store.delete(owner, session_id, first)
    with pytest.raises(NotFound):  # nothing granted any more: the session is not confirmed
        reader.list(grantee, session_id, common_pb2.PageRequest())


def test_a_query_without_session_id_looks_at_most_max_query_sessions(redis_client: Redis, lean: LeanPool) -> None:
    store, sessions = _artifacts(redis_client, lean, max_query_sessions=3)
    caller = _caller()
    made = [_session(sessions, caller) for _ in range(3)]
    for n, session_id in enumerate(made):
        _store(store, caller, session_id, f"a{n}")
    assert sorted(_query(store, caller)) == ["a0", "a1", "a2"]
    _session(sessions, caller)
    with pytest.raises(ResourceExhausted, match="narrow the query with session_id"):
        _query(store, caller)
    assert _query(store, caller, session_id=made[0]) == ["a0"]


def test_a_query_loads_at_most_max_query_candidates(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    store, sessions = _artifacts(redis_client, lean, max_query_candidates=4)
    caller = _caller()
    session_id = _session(sessions, caller)
    for n in range(3):
        _store(store, caller, session_id, f"t{n}")
    _store(store, caller, _session(sessions, caller), "code", kind="code")
    assert len(_query(store, caller)) == 4  # at the bound
    _store(store, caller, session_id, "t3")
    with pytest.raises(ResourceExhausted, match="narrow it"):
        _query(store, caller)  # one past it, across sessions
    assert _query(store, caller, type="code") == ["code"]  # narrowed by an index: counted, then read
    # a session whose index holds 5,000 ids: counted, never read
    redis_client.zadd(session_index(session_id, ":created"), {str(uuid.uuid4()): i for i in range(5000)})
    reader, _ = _artifacts(counted, lean, max_query_candidates=4)
    counter.reset()
    with pytest.raises(ResourceExhausted, match="more than 4 artifacts"):
        _query(reader, caller, session_id=session_id)
    assert counter.elements < 20
    counter.reset()
    assert _query(reader, caller, session_id=session_id, type="code") == []
    assert counter.elements < 20


def test_a_query_refuses_more_grants_than_max_query_candidates_unread(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    caller = _caller()
    redis_client.sadd(principal_grants_key(caller.principal), *[str(uuid.uuid4()) for _ in range(5)])
    store, _ = _artifacts(redis_client, lean, max_query_candidates=5)
    assert _query(store, caller) == []  # at the bound (the granted artifacts are gone)
    redis_client.sadd(principal_grants_key(caller.principal), str(uuid.uuid4()))
    with pytest.raises(ResourceExhausted, match="6 granted artifacts"):
        _query(store, caller)  # one past it
    redis_client.sadd(principal_grants_key(caller.principal), *[str(uuid.uuid4()) for _ in range(1000)])
    reader, _ = _artifacts(counted, lean, max_query_candidates=5)
    counter.reset()
    with pytest.raises(ResourceExhausted, match="1006 granted artifacts"):
        _query(reader, caller)
    assert counter.elements < 50  # counted (and a connection's handshake), never read


def test_session_delete_releases_at_most_max_session_delete_versions_per_call(
    redis_client: Redis, lean: LeanPool
) -> None:
    store, sessions = _artifacts(redis_client, lean, max_delete_versions=4)
    caller = _caller()
    session_id = _session(sessions, caller)
    for n in range(5):
        _store(store, caller, session_id, f"a{n}")
        _store(store, caller, session_id, f"a{n}")  # a second version
    index = session_index(session_id)
    for left in (3, 1):
        with pytest.raises(ResourceExhausted, match="call Session.delete again"):
            sessions.delete(caller, session_id)
        assert redis_client.zcard(index) == left and redis_client.exists(session_key(session_id))
    sessions.delete(caller, session_id)
    assert not redis_client.exists(session_key(session_id), index)
    assert int(redis_client.get(f"sp:principal:{caller.principal}:artifact-count") or 0) == 0
    # at the bound: 2 artifacts of 2 versions go in one call
    session_id = _session(sessions, caller)
    for n in range(2):
        _store(store, caller, session_id, f"b{n}")
        _store(store, caller, session_id, f"b{n}")
    sessions.delete(caller, session_id)
    assert not redis_client.exists(session_key(session_id))


# ---------------------------------------------------------------- snapshots and replay


def test_restore_recent_copies_at_most_max_restore_bytes(redis_client: Redis, lean: LeanPool) -> None:
    sessions = SessionStore(redis_client, 1000, lean=lean)
    caller = _caller()
    made = [_session(sessions, caller) for _ in range(3)]
    for session_id in made:
        redis_client.hset(session_state_key(session_id), "k", "v" * 1000)
        SnapshotStore(sessions).save(caller, session_id)
    size = int(redis_client.hget(snapshot_key(made[0], 1), "bytes") or 0)
    snapshots = SnapshotStore(sessions, max_restore_bytes=2 * size + 10)  # two fit (sizes differ by a byte or so)
    for session_id in made:
        redis_client.hset(session_state_key(session_id), "k", "changed")
    with pytest.raises(ResourceExhausted, match="ask for count=2 or fewer"):
        snapshots.restore_recent(caller, 3)
    assert [redis_client.hget(session_state_key(s), "k") for s in made] == [b"changed"] * 3  # nothing copied
    assert sorted(snapshots.restore_recent(caller, 2)) == sorted(made[1:])  # at the bound
    assert [redis_client.hget(session_state_key(s), "k") for s in made] == [b"changed"] + [b"v" * 1000] * 2
    tiny = SnapshotStore(sessions, max_restore_bytes=1)
    assert len(tiny.restore_recent(caller, 1)) == 1  # one snapshot always goes, whatever its size


def test_replay_metadata_reads_no_job_records(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    sessions = SessionStore(redis_client, 1000, lean=lean)
    jobs = JobStore(
        redis_client, sessions, queue=f"art-bounds-{uuid.uuid4().hex[:8]}", policy=LimitPolicy(),
        max_source_bytes=1024 * 1024, queue_ttl_seconds=600, result_ttl_seconds=600, lean=lean,
    )  # fmt: skip
    caller = _caller()
    session_id = _session(sessions, caller)
    request = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 1", session_id=session_id)
    for _ in range(20):
        jobs.submit(caller, request)
    replays = ReplayStore(SessionStore(counted, 1000, lean=lean), jobs, cast(Any, None), max_jobs=20, max_per_job=1)
    counter.reset()
    assert replays.can_replay(caller, session_id) is False
    assert replays.metadata(caller, session_id).job_count == 20
    # 2 x (the session, 20 ids, 20 HEXISTS) and the timeline's ends: not 2 x 20 records of ~30 fields
    assert counter.elements < 2 * 80 + 100
