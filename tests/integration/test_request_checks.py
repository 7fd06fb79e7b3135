"""Every double field of a request is finite and in range, and every waiting call ends when it does.

A NaN wait passed `< 0` and made a deadline that never arrives: the call's thread spun until the
coordinator had none left. Now the request is refused (INVALID_ARGUMENT) before its handler runs,
and a waiting call that is cancelled frees its server thread at once.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from redis import Redis

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.request_checks import FIELD_RANGES
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.v1 import events_pb2, events_pb2_grpc, jobs_pb2, jobs_pb2_grpc, sessions_pb2, sessions_pb2_grpc
from tests.conftest import Stack

BAD_NUMBERS = [math.nan, -math.nan, math.inf, -math.inf, -1.0, 1e300]
LUA_SOURCE = "return 1"


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


def _job_keys(redis: Redis) -> int:
    return sum(1 for key in redis.scan_iter(match="sp:job:*") if key.count(b":") == 2)


@pytest.mark.parametrize("number", BAD_NUMBERS, ids=repr)
def test_a_bad_wait_is_refused_before_anything_is_written(stack: Stack, redis_client: Redis, number: float) -> None:
    _, key = stack.new_api_key()
    metadata = (("authorization", f"Bearer {key}"),)
    jobs_before = _job_keys(redis_client)
    with grpc.insecure_channel(stack.address) as channel:
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        hooks = events_pb2_grpc.HookServiceStub(channel)
        sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        job = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=LUA_SOURCE)
        calls: list[Callable[[], Any]] = [
            lambda: jobs.SubmitJob(
                jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=LUA_SOURCE, wait_seconds=number),
                metadata=metadata, timeout=10,
            ),
            lambda: list(jobs.SubmitJobs(jobs_pb2.SubmitJobsRequest(jobs=[job], wait_seconds=number),
                                         metadata=metadata, timeout=10)),
            lambda: jobs.WaitJob(jobs_pb2.WaitJobRequest(job_id=str(uuid.uuid4()), timeout_seconds=number),
                                 metadata=metadata, timeout=10),
            lambda: hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=number), metadata=metadata, timeout=10),
            lambda: sessions.Replay(sessions_pb2.ReplayRequest(session_id=str(uuid.uuid4()), speed=number),
                                    metadata=metadata, timeout=10),
        ]  # fmt: skip
        for call in calls:
            assert _code(call) == grpc.StatusCode.INVALID_ARGUMENT
        assert _job_keys(redis_client) == jobs_before  # refused before any job was queued
        health = jobs.SubmitJob(job, metadata=metadata, timeout=10)  # the coordinator still answers
        assert health.job.id


def test_the_refusal_names_the_field_and_its_range(stack: Stack) -> None:
    _, key = stack.new_api_key()
    with grpc.insecure_channel(stack.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            events_pb2_grpc.HookServiceStub(channel).Poll(
                events_pb2.PollHooksRequest(timeout_seconds=math.nan),
                metadata=(("authorization", f"Bearer {key}"),), timeout=10,
            )  # fmt: skip
    assert caught.value.details() == "PollHooksRequest.timeout_seconds must be from 0 to 86400 (got nan)"


def test_each_range_accepts_its_edges(stack: Stack) -> None:
    """At the bound is fine (the server caps waits at its own maximum, and the deadline)."""
    _, key = stack.new_api_key()
    metadata = (("authorization", f"Bearer {key}"),)
    low, high = FIELD_RANGES["scriptpool.v1.PollHooksRequest.timeout_seconds"]
    with grpc.insecure_channel(stack.address) as channel:
        hooks = events_pb2_grpc.HookServiceStub(channel)
        assert not hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=low), metadata=metadata, timeout=10).firings
        assert not hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=high), metadata=metadata, timeout=0.5).firings
        over = events_pb2.PollHooksRequest(timeout_seconds=math.nextafter(high, math.inf))
        assert _code(lambda: hooks.Poll(over, metadata=metadata, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_request_that_does_not_parse_is_invalid_argument(stack: Stack) -> None:
    """Text that is not UTF-8 (an encoded lone surrogate): grpcio answered INTERNAL
    "Exception deserializing request!"; the coordinator now answers INVALID_ARGUMENT naming the type."""
    _, key = stack.new_api_key()
    not_utf8 = b"\x0a\x03\xed\xa0\x80"  # CreateSessionRequest.name = U+D800 as UTF-8 would encode it
    with grpc.insecure_channel(stack.address) as channel:
        create = channel.unary_unary("/scriptpool.v1.SessionService/Create", None, None)
        with pytest.raises(grpc.RpcError) as caught:
            create(not_utf8, metadata=(("authorization", f"Bearer {key}"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid CreateSessionRequest message" in str(caught.value.details())


# ------------------------------------------------------------------ waits end with their calls
THREADS = 3


@pytest.fixture
def small_coordinator(redis_server: PrivateRedis) -> Iterator[RunningCoordinator]:
    """A coordinator with few threads, room for as many waits, and a queue no worker serves (its
    jobs stay queued)."""
    settings = Settings(
        redis_url=redis_server.url, listen="127.0.0.1:0", queue=f"nobody-{uuid.uuid4().hex[:8]}",
        max_wait_seconds=600, grpc_threads=THREADS, max_waiting_calls=THREADS,
        max_waiting_calls_per_principal=THREADS, max_event_waits=THREADS,
    )  # fmt: skip
    running = start_coordinator(settings)
    try:
        yield running
    finally:
        running.stop(grace=0)


def _threads_in(function_name: str) -> int:
    """Server threads whose stack is inside `function_name` now (the handshake: they are waiting)."""
    count = 0
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            if f.f_code.co_name == function_name:
                count += 1
                break
            f = f.f_back
    return count


def _until(predicate: Callable[[], bool]) -> None:
    give_up = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < give_up, "the calls never started waiting"
        time.sleep(0.01)


WAITS: dict[str, tuple[str, Callable[[grpc.Channel, Any, str], grpc.Future[Any]]]] = {
    "SubmitJob": (
        "_until_finished",
        lambda ch, md, _: jobs_pb2_grpc.JobServiceStub(ch).SubmitJob.future(
            jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=LUA_SOURCE, wait_seconds=600),
            metadata=md,
        ),
    ),
    "WaitJob": (
        "_until_finished",
        lambda ch, md, job_id: jobs_pb2_grpc.JobServiceStub(ch).WaitJob.future(
            jobs_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=600), metadata=md
        ),
    ),
    "Poll": (
        "Poll",
        lambda ch, md, _: events_pb2_grpc.HookServiceStub(ch).Poll.future(
            events_pb2.PollHooksRequest(timeout_seconds=600), metadata=md
        ),
    ),
    "Receive": (
        "receive",
        lambda ch, md, subscription_id: events_pb2_grpc.EventServiceStub(ch).Receive.future(
            events_pb2.ReceiveRequest(subscription_id=subscription_id, timeout_ms=600_000), metadata=md
        ),
    ),
}


@pytest.mark.parametrize("rpc", sorted(WAITS))
def test_a_cancelled_wait_frees_its_server_thread(
    small_coordinator: RunningCoordinator, redis_server: PrivateRedis, rpc: str
) -> None:
    """Every wait the server allows is held (asking for 10 minutes): one more is refused at once,
    while other calls are still answered (the waits have threads of their own); the calls are
    cancelled, their threads leave the wait, and as many waits as before can be held again (before
    the fix cancelled waits went on holding their threads, and later calls queued behind them)."""
    address = f"127.0.0.1:{small_coordinator.port}"
    key = small_coordinator.auth.create_api_key(f"t-{uuid.uuid4().hex[:12]}")
    metadata = (("authorization", f"Bearer {key}"),)
    waiting_in, start = WAITS[rpc]
    with grpc.insecure_channel(address) as channel:
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        queued = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=LUA_SOURCE),
                                metadata=metadata, timeout=10).job  # fmt: skip
        argument = queued.id
        if rpc == "Receive":
            argument = (
                events_pb2_grpc.EventServiceStub(channel)
                .Subscribe(events_pb2.SubscribeRequest(pattern="nothing.*"), metadata=metadata, timeout=10)
                .subscription_id
            )
        before = _threads_in(waiting_in)
        for _ in range(2):  # the second round needs the slots and threads the first one's waits held
            futures = [start(channel, metadata, argument) for _ in range(THREADS)]
            _until(lambda: _threads_in(waiting_in) - before == THREADS)
            with pytest.raises(grpc.RpcError) as refused:
                start(channel, metadata, argument).result(timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"holds {THREADS} waiting calls" in str(refused.value.details())
            for _ in range(THREADS):  # the other calls' threads are all free
                got = jobs.GetJob(jobs_pb2.GetJobRequest(job_id=queued.id), metadata=metadata, timeout=10)
                assert got.id == queued.id
            for future in futures:
                future.cancel()
            _until(lambda: _threads_in(waiting_in) == before)
            _until(lambda: small_coordinator.waiting is not None and small_coordinator.waiting.taken == 0)


def test_a_wait_past_its_deadline_answers_in_time(small_coordinator: RunningCoordinator) -> None:
    """A short deadline bounds the wait: the call answers (unfinished) instead of running past it."""
    address = f"127.0.0.1:{small_coordinator.port}"
    key = small_coordinator.auth.create_api_key(f"t-{uuid.uuid4().hex[:12]}")
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(address) as channel:
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        request = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source=LUA_SOURCE, wait_seconds=600)
        for _ in range(THREADS * 2):
            answer = jobs.SubmitJob(request, metadata=metadata, timeout=1.0)
            assert not answer.finished
