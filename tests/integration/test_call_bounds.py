"""Bounds on the work one call can cause in the coordinator, whatever the principal holds: each test
runs a store on the real Redis through a connection that counts the reply elements Redis sends
back, so a call that reads more than its page (a whole index, every key of the database) shows up
as a count, not as a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis import ConnectionPool, Redis
from redis.connection import Connection

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.stores.jobs import MAX_JOB_PAGE, JobStore
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.core.job_records import texts
from scriptpool.core.keys import session_jobs_key, snapshot_bytes_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.limits import LimitPolicy
from scriptpool.v1 import artifacts_pb2, common_pb2, events_pb2, events_pb2_grpc, jobs_pb2, sessions_pb2, state_pb2
from tests.conftest import Stack

from .helpers import outcome, run_lua


class ReplyCounter:
    """How many reply elements (list items and map keys and values, recursively; a scalar reply counts
    1) Redis sent."""

    def __init__(self) -> None:
        self.elements = 0
        self.replies = 0
        """Replies read: one per command (a pipeline's commands each count)."""

    def reset(self) -> None:
        self.elements = self.replies = 0

    def add(self, reply: object) -> None:
        if isinstance(reply, dict):  # a RESP3 map (HGETALL, XREAD)
            for name, item in reply.items():
                self.add(name)
                self.add(item)
        elif isinstance(reply, (list, tuple, set)):
            for item in reply:
                self.add(item)
        else:
            self.elements += 1


def counting_redis(redis_client: Redis, counter: ReplyCounter) -> Redis:
    """A client of the test Redis whose every reply (pipelines included) is counted in `counter`."""

    base: type[Connection] = redis_client.connection_pool.connection_class  # (a unix socket's, here)

    class CountingConnection(base):  # type: ignore[valid-type, misc]
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            reply = super().read_response(*args, **kwargs)
            counter.replies += 1
            counter.add(reply)
            return reply

    kwargs = redis_client.connection_pool.connection_kwargs
    return Redis(connection_pool=ConnectionPool(connection_class=CountingConnection, **kwargs))


@pytest.fixture
def counter() -> ReplyCounter:
    return ReplyCounter()


@pytest.fixture
def counted(redis_client: Redis, counter: ReplyCounter) -> Iterator[Redis]:
    client = counting_redis(redis_client, counter)
    yield client
    client.close()


def _caller() -> Caller:
    return Caller(principal=f"c-{uuid.uuid4().hex[:12]}")


def _job_store(redis: Redis, lean: LeanPool, max_list_bytes: int = 4 * 1024 * 1024) -> JobStore:
    """A job store on its own queue (no worker takes its jobs)."""
    sessions = SessionStore(redis, 1000, lean=lean)
    return JobStore(
        redis, sessions, queue=f"call-bounds-{uuid.uuid4().hex[:8]}", policy=LimitPolicy(),
        max_source_bytes=1024 * 1024, queue_ttl_seconds=600, result_ttl_seconds=600, lean=lean,
        max_list_bytes=max_list_bytes,
    )  # fmt: skip


@pytest.fixture
def lean(redis_client: Redis) -> Iterator[LeanPool]:
    pool = LeanPool(redis_client)
    yield pool
    pool.close()


def _submit(jobs: JobStore, caller: Caller, session_id: str, count: int, source: str = "return 1") -> list[str]:
    """Submit `count` Lua jobs into the session; their ids, oldest first."""
    request = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=source, session_id=session_id)
    return [jobs.submit(caller, request).id for _ in range(count)]


def _list(
    jobs: JobStore, caller: Caller, session_id: str, limit: int = 0, cursor: str = ""
) -> jobs_pb2.ListJobsResponse:
    page = common_pb2.PageRequest(limit=limit, cursor=cursor)
    return jobs.list_for_session(caller, jobs_pb2.ListJobsRequest(session_id=session_id, page=page))


def test_list_jobs_reads_only_its_page_of_the_sessions_index(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    writer = _job_store(redis_client, lean)
    caller = _caller()
    session_id = writer.sessions.create(caller, sessions_pb2.CreateSessionRequest(name="many jobs")).id
    # 5,000 older jobs whose records have expired (their ids stay in the session's index) ...
    redis_client.zadd(session_jobs_key(session_id), {str(uuid.uuid4()): float(i) for i in range(5000)})
    newest = list(reversed(_submit(writer, caller, session_id, 3)))  # ... and 3 live ones, newer
    reader = _job_store(counted, lean)
    counter.reset()
    page = _list(reader, caller, session_id, limit=2)
    assert [job.id for job in page.jobs] == newest[:2] and page.next_cursor == "2"
    # the session's record, 3 ids, 2 x 2 sizes, 2 job records: tens of elements, not 5,000
    assert counter.elements < 100
    rest = _list(reader, caller, session_id, limit=2, cursor="2")
    assert [job.id for job in rest.jobs] == newest[2:] and rest.next_cursor == "4"


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", " 1", "\u00b2", "9" * 30, str(2**53 + 1)])
def test_list_jobs_refuses_a_cursor_it_did_not_hand_out(redis_client: Redis, lean: LeanPool, cursor: str) -> None:
    jobs = _job_store(redis_client, lean)
    caller = _caller()
    session_id = jobs.sessions.create(caller, sessions_pb2.CreateSessionRequest(name="cursor")).id
    _submit(jobs, caller, session_id, 1)
    with pytest.raises(InvalidArgument, match="invalid cursor"):
        _list(jobs, caller, session_id, cursor=cursor)


def test_list_jobs_page_limit_edge(redis_client: Redis, lean: LeanPool) -> None:
    jobs = _job_store(redis_client, lean)
    caller = _caller()
    session_id = jobs.sessions.create(caller, sessions_pb2.CreateSessionRequest(name="limit")).id
    _submit(jobs, caller, session_id, 1)
    assert len(_list(jobs, caller, session_id, limit=MAX_JOB_PAGE).jobs) == 1
    with pytest.raises(InvalidArgument, match=f"above the maximum {MAX_JOB_PAGE}"):
        _list(jobs, caller, session_id, limit=MAX_JOB_PAGE + 1)


def test_list_jobs_reads_at_most_max_list_bytes_of_records(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    writer = _job_store(redis_client, lean)
    caller = _caller()
    session_id = writer.sessions.create(caller, sessions_pb2.CreateSessionRequest(name="big sources")).id
    source = "return 1 -- " + "x" * 3000
    newest = list(reversed(_submit(writer, caller, session_id, 5, source)))
    spec_bytes = int(redis_client.hstrlen(f"sp:job:{newest[0]}", "spec"))
    reader = _job_store(counted, lean, max_list_bytes=2 * spec_bytes)  # exactly two records fit
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = _list(reader, caller, session_id, limit=100, cursor=cursor)
        assert len(page.jobs) <= 2
        seen += [job.id for job in page.jobs]
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == newest and pages == 3
    # one record bigger than the budget still comes back alone, so paging always moves on
    tiny = _job_store(redis_client, lean, max_list_bytes=10)
    page = _list(tiny, caller, session_id, limit=100)
    assert [job.id for job in page.jobs] == newest[:1] and page.next_cursor == "1"


@pytest.mark.parametrize("cursor", ["\u00b2", "9" * 30])
def test_session_list_refuses_a_cursor_past_a_redis_index(redis_client: Redis, lean: LeanPool, cursor: str) -> None:
    sessions = SessionStore(redis_client, 1000, lean=lean)
    caller = _caller()
    sessions.create(caller, sessions_pb2.CreateSessionRequest(name="one"))
    request = sessions_pb2.ListSessionsRequest(page=common_pb2.PageRequest(cursor=cursor))
    with pytest.raises(InvalidArgument, match="invalid cursor"):
        sessions.list(caller, request)


def test_deleting_a_session_does_not_scan_the_database(
    redis_client: Redis, lean: LeanPool, counted: Redis, counter: ReplyCounter
) -> None:
    filler = f"sp:test:filler:{uuid.uuid4().hex}"
    pipe = redis_client.pipeline(transaction=False)
    for start in range(0, 30_000, 1000):
        pipe.mset({f"{filler}:{n}": "x" for n in range(start, start + 1000)})
    pipe.execute()
    try:
        sessions = SessionStore(counted, 1000, lean=lean, max_snapshots=3)
        snapshots = SnapshotStore(sessions, max_per_session=3)
        caller = _caller()
        session_id = sessions.create(caller, sessions_pb2.CreateSessionRequest(name="doomed")).id
        for _ in range(5):
            snapshots.save(caller, session_id)
        counter.reset()
        sessions.delete(caller, session_id)
        # get, the snapshot count, the kept snapshots' sizes (3), the transaction (~8): no SCAN over
        # the 30,000 other keys (which took 30 round trips at least)
        assert counter.replies < 20
        assert texts(list(redis_client.scan_iter(f"sp:session:{session_id}*", count=10_000))) == []
        assert int(redis_client.get(snapshot_bytes_key(caller.principal)) or 0) == 0
    finally:
        for start in range(0, 30_000, 1000):
            redis_client.unlink(*[f"{filler}:{n}" for n in range(start, start + 1000)])


def test_a_deleted_session_leaves_no_key_behind(client: ScriptpoolClient, redis_client: Redis) -> None:
    """Every store's keys under the session go: a store that adds one must name it in
    `sessions.session_keys` (the delete no longer scans for them)."""
    session = client.create_session("everything")
    job = run_lua(
        client,
        """
        State.set("session:current", "k", {1, 2, 3})
        Session.save(Session.getCurrent())
        Event.emit("made.it", {ok = true})
        return 1
        """,
        session_id=session.id,
    )
    assert outcome(job).value == "ok"
    client.state.set(
        state_pb2.SetStateRequest(scope=f"session:{session.id}", key="c", value=common_pb2.Value(int_value=7))
    )
    client.sessions.save(sessions_pb2.SessionRef(session_id=session.id))
    header = artifacts_pb2.StoreArtifactChunk(
        session_id=session.id,
        type="text",
        metadata=artifacts_pb2.ArtifactMetadata(name="notes", tags=["a", "b"], description="some words"),
    )
    ref = client.store_artifact(header, [b"alpha beta gamma"])
    client.store_artifact(artifacts_pb2.StoreArtifactChunk(session_id=session.id, artifact_id=ref.id), [b"delta"])
    client.sessions.replay(sessions_pb2.ReplayRequest(session_id=session.id, speed=0))
    assert len(list(redis_client.scan_iter(f"sp:session:{session.id}:*", count=10_000))) >= 8
    client.sessions.delete(sessions_pb2.SessionRef(session_id=session.id))
    assert texts(list(redis_client.scan_iter(f"sp:session:{session.id}*", count=10_000))) == []
    assert redis_client.exists(f"sp:artifact:{ref.id}") == 0


def test_a_hook_poll_returns_at_most_max_poll_firings(stack: Stack, principal_and_key: tuple[str, str]) -> None:
    second = start_coordinator(replace(stack.settings, listen="127.0.0.1:0", max_poll_firings=3))
    try:
        with ScriptpoolClient(f"127.0.0.1:{second.port}", principal_and_key[1]) as client:
            hooks = events_pb2_grpc.HookServiceStub(client.channel)
            md = client._metadata
            hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), metadata=md)
            for n in range(7):
                value = common_pb2.Value(int_value=n)
                client.state.set(state_pb2.SetStateRequest(scope="global", key=f"k{n}", value=value))
            pages = []
            for _ in range(4):
                firings = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0), metadata=md).firings
                pages.append([f.context.data.fields["key"].string_value for f in firings])
            assert pages == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"], []]  # each once, in order
    finally:
        second.stop(grace=1)
