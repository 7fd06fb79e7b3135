"""JobCallService: a job's global calls on one stream must be exactly as authorised as unary calls.

Attacks: a client key opening a stream, a credential whose job has ended, method names outside the
three script services (JobService, streaming methods, made-up names), malformed requests, and more
streams than the coordinator allows (workers then fall back to unary calls, and nothing is lost).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.v1 import calls_pb2, calls_pb2_grpc, jobs_pb2, sessions_pb2, state_pb2
from scriptpool.workers.bridge.call_stream import CoordinatorStubs
from scriptpool.workers.bridge.host import CoordinatorBridge
from tests.conftest import TEST_QUEUE, Stack
from tests.integration.helpers import outcome, release_job, running_job_credential

SESSION_GET = "/scriptpool.v1.SessionService/Get"
STATE_GET = "/scriptpool.v1.StateService/Get"


class OpenStream:
    """A JobCallService stream opened by the test, one call at a time."""

    def __init__(self, address: str, token: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.requests: queue.SimpleQueue[calls_pb2.JobCall | None] = queue.SimpleQueue()
        stub = calls_pb2_grpc.JobCallServiceStub(self.channel)
        self.replies: Any = stub.Calls(self._calls(), metadata=(("authorization", f"Bearer {token}"),), timeout=60)
        self.next_id = 0

    def _calls(self) -> Iterator[calls_pb2.JobCall]:
        while (call := self.requests.get()) is not None:
            yield call

    def call(self, method: str, request: bytes) -> calls_pb2.JobCallReply:
        self.next_id += 1
        self.requests.put(calls_pb2.JobCall(call_id=self.next_id, method=method, request=request))
        reply: calls_pb2.JobCallReply = next(self.replies)
        assert reply.call_id == self.next_id
        return reply

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def _running_job(client: ScriptpoolClient, redis: Redis) -> tuple[jobs_pb2.Job, str]:
    """A held job (running until `release_job` or a cancel) and its credential."""
    job_id, credential = running_job_credential(client, redis)
    return client.get_job(job_id), credential


def _code(reply: calls_pb2.JobCallReply) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == reply.code)


def test_a_stream_call_runs_like_the_unary_call_and_stops_working_when_the_job_ends(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    job, credential = _running_job(client, redis_client)
    stream = OpenStream(stack.address, credential)
    try:
        own = stream.call(SESSION_GET, sessions_pb2.SessionRef(session_id=job.session_id).SerializeToString())
        assert own.code == 0 and sessions_pb2.Session.FromString(own.response).id == job.session_id
        other = client.create_session("not the job's")  # same principal: allowed, as for unary calls
        assert stream.call(SESSION_GET, sessions_pb2.SessionRef(session_id=other.id).SerializeToString()).code == 0
        release_job(job.id)
        assert outcome(client.wait(job.id, timeout=30)).value == "ok"
        after = stream.call(SESSION_GET, sessions_pb2.SessionRef(session_id=job.session_id).SerializeToString())
        assert _code(after) is grpc.StatusCode.UNAUTHENTICATED and not after.response
    finally:
        stream.close()


def test_a_client_api_key_cannot_open_a_stream(stack: Stack, client: ScriptpoolClient) -> None:
    stream = OpenStream(stack.address, client._metadata[0][1].split(" ", 1)[1])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            stream.call(STATE_GET, state_pb2.StateKey(scope="global", key="k").SerializeToString())
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "job credential" in (caught.value.details() or "")
    finally:
        stream.close()


@pytest.mark.parametrize(
    "method",
    [
        "/scriptpool.v1.JobService/SubmitJob",  # not a script service
        "/scriptpool.v1.JobService/CancelJob",
        "/scriptpool.v1.ArtifactService/Read",  # server-streaming: not carried by the stream
        "/scriptpool.v1.StateService/Nope",
        "/grpc.health.v1.Health/Check",
        "",
    ],
)
def test_only_unary_methods_of_the_script_services_are_carried(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis, method: str
) -> None:
    job, credential = _running_job(client, redis_client)
    stream = OpenStream(stack.address, credential)
    try:
        refused = stream.call(method, b"")
        assert _code(refused) is grpc.StatusCode.UNIMPLEMENTED and not refused.response
        still = stream.call(SESSION_GET, sessions_pb2.SessionRef(session_id=job.session_id).SerializeToString())
        assert still.code == 0  # one refused call does not end the stream
    finally:
        stream.close()
        client.cancel(job.id)


def test_a_malformed_request_is_invalid_argument_and_changes_nothing(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    job, credential = _running_job(client, redis_client)
    stream = OpenStream(stack.address, credential)
    try:
        garbage = stream.call("/scriptpool.v1.StateService/Set", b"\xff\xff\xff\xff")
        assert _code(garbage) is grpc.StatusCode.INVALID_ARGUMENT
        assert "SetStateRequest" in garbage.message
        bad_scope = stream.call(STATE_GET, state_pb2.StateKey(scope="nowhere", key="k").SerializeToString())
        assert _code(bad_scope) is grpc.StatusCode.INVALID_ARGUMENT  # the service's own validation
    finally:
        stream.close()
        client.cancel(job.id)


def test_over_the_stream_cap_workers_fall_back_to_unary_calls_and_nothing_is_lost(
    redis_server: PrivateRedis, client: ScriptpoolClient, redis_client: Redis
) -> None:
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_call_streams=1)
    capped = start_coordinator(settings)
    address = f"127.0.0.1:{capped.port}"
    job, credential = _running_job(client, redis_client)
    holder = OpenStream(address, credential)
    channel = grpc.insecure_channel(address)
    try:
        held = holder.call(SESSION_GET, sessions_pb2.SessionRef(session_id=job.session_id).SerializeToString())
        assert held.code == 0  # the one stream this coordinator allows
        second = OpenStream(address, credential)
        with pytest.raises(grpc.RpcError) as caught:
            second.call(SESSION_GET, b"")
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        second.close()
        bridge = CoordinatorBridge(CoordinatorStubs(channel), credential, job.session_id, time.monotonic() + 30)
        for n in range(4):  # the second call tries the stream, is refused, and goes unary
            bridge.call("State.set", ["global", f"cap-{n}", n])
        assert [bridge.call("State.get", ["global", f"cap-{n}"]) for n in range(4)] == [0, 1, 2, 3]
        assert bridge._stream is not None and not bridge._stream.usable  # it did try, and was refused
        bridge.close()
    finally:
        holder.close()
        channel.close()
        client.cancel(job.id)
        capped.stop(grace=1)


def _served_stream(address: str, credential: str, ref: bytes, within: float = 5.0) -> OpenStream:
    """A stream of the capped coordinator that has answered a call: waits for its one slot to be free."""
    give_up = time.monotonic() + within
    while True:
        stream = OpenStream(address, credential)
        try:
            assert stream.call(SESSION_GET, ref).code == 0
            return stream
        except grpc.RpcError as exc:
            stream.close()
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < give_up
            time.sleep(0.05)


def test_a_stream_the_worker_drops_frees_its_slot_and_logs_no_error(
    redis_server: PrivateRedis, client: ScriptpoolClient, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_call_streams=1)
    capped = start_coordinator(settings)
    address = f"127.0.0.1:{capped.port}"
    job, credential = _running_job(client, redis_client)
    ref = sessions_pb2.SessionRef(session_id=job.session_id).SerializeToString()
    try:
        dropped = _served_stream(address, credential, ref)
        dropped.replies.cancel()
        lost = _served_stream(address, credential, ref)  # the slot came back after the cancel
        lost.channel.close()
        _served_stream(address, credential, ref).close()  # and after the channel went away
        assert not [r for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("coordinator")]
    finally:
        client.cancel(job.id)
        capped.stop(grace=1)
