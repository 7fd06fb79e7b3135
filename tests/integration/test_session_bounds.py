"""Bounds on the work and memory session calls can cause: snapshots (kept per session, bytes per
snapshot and per principal, saves per job, saveAll's reach) and Session.list's scan. Store-level
tests run on the real Redis with small bounds; one test goes through a real job."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import timeline
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.coordinator.stores.state import StateStore
from scriptpool.core.job_records import texts
from scriptpool.core.keys import job_key, snapshot_bytes_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import NotFound, ResourceExhausted
from scriptpool.v1 import common_pb2, sessions_pb2, state_pb2

from .helpers import outcome, result_of, run_lua

S = sessions_pb2


def _caller() -> Caller:
    return Caller(principal=f"b-{uuid.uuid4().hex[:12]}")


def _snapshot_numbers(redis: Redis, session_id: str) -> list[int]:
    keys = texts(list(redis.scan_iter(f"sp:session:{session_id}:snapshot:*", count=1000)))
    return sorted(int(key.rsplit(":", 1)[1]) for key in keys if not key.endswith(":state"))


Stores = Callable[..., tuple[SessionStore, SnapshotStore]]


@pytest.fixture
def stores(redis_client: Redis) -> Iterator[Stores]:
    """Session and snapshot stores on the test Redis with the bounds given (their lean connection
    is closed after the test)."""
    lean = LeanPool(redis_client)

    def make(**bounds: int) -> tuple[SessionStore, SnapshotStore]:
        sessions = SessionStore(redis_client, 1000, lean=lean, max_list_scan=bounds.pop("max_list_scan", 10_000))
        return sessions, SnapshotStore(sessions, **bounds)

    yield make
    lean.close()


def _bytes_of(redis: Redis, session_id: str, number: int) -> int:
    return int(redis.hget(f"sp:session:{session_id}:snapshot:{number}", "bytes") or 0)


def test_a_session_keeps_its_last_snapshots_and_the_principal_bytes_follow(redis_client: Redis, stores: Stores) -> None:
    sessions, snapshots = stores(max_per_session=3)
    caller = _caller()
    session_id = sessions.create(caller, S.CreateSessionRequest(name="kept")).id
    assert [snapshots.save(caller, session_id) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert _snapshot_numbers(redis_client, session_id) == [3, 4, 5]
    with pytest.raises(NotFound, match="keeps its last 3"):
        snapshots.load(caller, session_id, 2)
    assert snapshots.load(caller, session_id, 3).id == session_id
    total = sum(_bytes_of(redis_client, session_id, n) for n in (3, 4, 5))
    assert total > 0 and int(redis_client.get(snapshot_bytes_key(caller.principal)) or 0) == total
    sessions.delete(caller, session_id)
    assert int(redis_client.get(snapshot_bytes_key(caller.principal)) or 0) == 0


def test_a_snapshot_over_max_bytes_is_refused_and_writes_nothing(redis_client: Redis, stores: Stores) -> None:
    sessions, probe = stores()
    caller = _caller()
    session_id = sessions.create(caller, S.CreateSessionRequest(name="big")).id
    StateStore(redis_client, lean=sessions.lean).set(
        caller,
        state_pb2.SetStateRequest(
            scope=f"session:{session_id}", key="blob", value=common_pb2.Value(string_value="x" * 50_000)
        ),
    )
    size = _bytes_of(redis_client, session_id, probe.save(caller, session_id))
    assert size > 50_000
    _, at_bound = stores(max_bytes=size)
    assert at_bound.save(caller, session_id) == 2
    _, below = stores(max_bytes=size - 1)
    with pytest.raises(ResourceExhausted, match=f"would be {size} bytes"):
        below.save(caller, session_id)
    assert _snapshot_numbers(redis_client, session_id) == [1, 2]
    assert redis_client.hget(f"sp:session:{session_id}", "snapshots") == b"2"


def test_a_principals_snapshot_bytes_are_bounded(redis_client: Redis, stores: Stores) -> None:
    sessions, probe = stores()
    caller = _caller()
    first, second, third = (sessions.create(caller, S.CreateSessionRequest(name="same")).id for _ in range(3))
    size = _bytes_of(redis_client, first, probe.save(caller, first))
    _, snapshots = stores(max_principal_bytes=3 * size)
    snapshots.save(caller, second)
    snapshots.save(caller, third)  # exactly at the bound
    with pytest.raises(ResourceExhausted, match="bytes of snapshots"):
        snapshots.save(caller, third)
    assert int(redis_client.get(snapshot_bytes_key(caller.principal)) or 0) == 3 * size
    sessions.delete(caller, first)
    assert snapshots.save(caller, third) == 2


def test_a_job_makes_at_most_max_saves_per_job(redis_client: Redis, stores: Stores) -> None:
    sessions, snapshots = stores(max_saves_per_job=2)
    owner = _caller()
    session_id = sessions.create(owner, S.CreateSessionRequest(name="job saves")).id
    job_id = str(uuid.uuid4())
    job = Caller(principal=owner.principal, job_id=job_id, session_id=session_id)
    assert [snapshots.save(job, session_id) for _ in range(2)] == [1, 2]
    with pytest.raises(ResourceExhausted, match="already saved 2 snapshots"):
        snapshots.save(job, session_id)
    with pytest.raises(ResourceExhausted):
        snapshots.save_all(job)
    assert _snapshot_numbers(redis_client, session_id) == [1, 2]
    assert redis_client.hget(job_key(job_id), "saves") == b"2"
    assert snapshots.save(owner, session_id) == 3  # clients are not counted


def test_save_all_reaches_only_the_most_recently_updated_sessions(redis_client: Redis, stores: Stores) -> None:
    sessions, snapshots = stores(max_save_all=2)
    caller = _caller()
    ids = [sessions.create(caller, S.CreateSessionRequest(name=f"s{i}")).id for i in range(4)]
    sessions.transition(caller, ids[3], "suspend")  # the newest is not active
    assert set(snapshots.save_all(caller)) == {ids[2]}
    assert _snapshot_numbers(redis_client, ids[0]) == []


def test_list_reads_at_most_max_list_scan_sessions_per_call(redis_client: Redis, stores: Stores) -> None:
    sessions, _ = stores(max_list_scan=3)
    caller = _caller()
    ids = [sessions.create(caller, S.CreateSessionRequest(name=f"n{i}", tags=["t"])).id for i in range(5)]
    sessions.set_tags(caller, ids[0], ["oldest"])  # now the most recently updated
    sessions.set_tags(caller, ids[0], ["oldest"])
    page = sessions.list(caller, S.ListSessionsRequest(tags=["t"], page=common_pb2.PageRequest(limit=10)))
    assert [s.id for s in page.sessions] == [ids[4], ids[3]] and page.next_cursor == "3"
    rest = sessions.list(caller, S.ListSessionsRequest(tags=["t"], page=common_pb2.PageRequest(cursor="3")))
    assert [s.id for s in rest.sessions] == [ids[2], ids[1]] and rest.next_cursor == ""
    with pytest.raises(ResourceExhausted, match="sort by name"):
        sessions.list(caller, S.ListSessionsRequest(sort="name"))


def test_a_scripts_saves_stop_at_max_saves_per_job(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("saving job").id
    source = """
    local id = Session.getCurrent()
    for i = 1, 101 do
      local ok, err = pcall(Session.save, id)
      if not ok then return {i, err.code} end
    end
    return "all saved"
    """
    job = run_lua(client, source, session_id=session_id)
    assert outcome(job).value == "ok" and result_of(job) == [101, "RESOURCE_EXHAUSTED"]
    assert redis_client.hget(f"sp:session:{session_id}", "snapshots") == b"100"
    assert len(_snapshot_numbers(redis_client, session_id)) == 20  # the last max_snapshots_per_session


def test_get_timeline_reads_at_most_max_scan_entries_per_call(redis_client: Redis, stores: Stores) -> None:
    sessions, _ = stores()
    caller = _caller()
    session_id = sessions.create(caller, S.CreateSessionRequest(name="timeline")).id  # 1 entry
    for i in range(4):
        sessions.set_tags(caller, session_id, [f"t{i}"])  # 4 more, none of the wanted type
    sessions.transition(caller, session_id, "suspend")  # the 6th: the one wanted
    wanted = S.GetTimelineRequest(session_id=session_id, types=["session.state_changed"])
    short = timeline.read(redis_client, session_id, wanted, max_scan=5)
    assert list(short.entries) == [] and short.next_after
    wanted.after = short.next_after
    rest = timeline.read(redis_client, session_id, wanted, max_scan=5)
    assert [e.type for e in rest.entries] == ["session.state_changed"] and rest.next_after == ""
    whole = timeline.read(redis_client, session_id, S.GetTimelineRequest(session_id=session_id, types=wanted.types), 7)
    assert len(whole.entries) == 1 and whole.next_after == ""
