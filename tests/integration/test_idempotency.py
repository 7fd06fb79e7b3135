"""Idempotency keys on SubmitJob and SubmitJobs (issue 14): a submission sent again with its key
answers with the job(s) the first one queued; one key, one request; per principal; bounded."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores.idempotency import MAX_IDEMPOTENCY_KEY_BYTES
from scriptpool.languages import Language
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import TEST_QUEUE, Stack

from .helpers import result_of


def _stub(client: ScriptpoolClient) -> jobs_pb2_grpc.JobServiceStub:
    return jobs_pb2_grpc.JobServiceStub(client.channel)


def _submit(client: ScriptpoolClient, source: str, key: str, wait_seconds: float = 0.0) -> jobs_pb2.SubmitJobResponse:
    request = job_request(Language.LUA, source)
    request.idempotency_key = key
    request.wait_seconds = wait_seconds
    response: jobs_pb2.SubmitJobResponse = _stub(client).SubmitJob(
        request, metadata=client._metadata, timeout=wait_seconds + 30
    )
    return response


def _sessions(client: ScriptpoolClient) -> int:
    return len(client.list_sessions().sessions)  # each job submitted without a session makes one


def _idem_key(principal: str, key: str) -> str:
    return "sp:idem:" + hashlib.sha256(principal.encode() + b"\0" + key.encode()).hexdigest()


def test_the_same_key_answers_with_the_job_it_first_queued(client: ScriptpoolClient) -> None:
    key = uuid.uuid4().hex
    first = _submit(client, "return 6 * 7", key).job
    again = _submit(client, "return 6 * 7", key, wait_seconds=20)  # a wait is not part of the request
    assert again.job.id == first.id and again.finished and result_of(again.job) == 42
    assert _sessions(client) == 1
    without_key = [_submit(client, "return 6 * 7", "").job.id for _ in range(2)]
    assert len(set(without_key)) == 2 and _sessions(client) == 3


def test_concurrent_submissions_with_one_key_queue_exactly_one_job(client: ScriptpoolClient) -> None:
    key = uuid.uuid4().hex
    start = threading.Barrier(16)
    ids: list[str] = []

    def submit() -> None:
        start.wait()
        ids.append(_submit(client, "return 1", key).job.id)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert _sessions(client) == 1


def test_the_same_key_with_another_request_is_failed_precondition_naming_the_key(client: ScriptpoolClient) -> None:
    key = f"order-{uuid.uuid4().hex}"
    _submit(client, "return 1", key)
    with pytest.raises(grpc.RpcError) as refused:
        _submit(client, "return 2", key)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"idempotency_key '{key}' was already used for a different request" in (refused.value.details() or "")
    assert _sessions(client) == 1


def test_keys_belong_to_their_principal(stack: Stack, client: ScriptpoolClient) -> None:
    key = uuid.uuid4().hex
    mine = _submit(client, "return 1", key).job
    with ScriptpoolClient(stack.address, stack.new_api_key()[1]) as other:
        theirs = _submit(other, "return 1", key).job  # same key, same request: a job of its own
        assert theirs.id != mine.id and theirs.principal != mine.principal
        assert _sessions(other) == 1


def test_a_key_of_max_bytes_is_accepted_and_one_byte_more_refused(client: ScriptpoolClient) -> None:
    longest = "k" * (MAX_IDEMPOTENCY_KEY_BYTES - 2) + "é"  # (2 bytes in UTF-8)
    assert _submit(client, "return 1", longest).job.id
    with pytest.raises(grpc.RpcError) as refused:
        _submit(client, "return 1", longest + "k")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"idempotency_key: {MAX_IDEMPOTENCY_KEY_BYTES + 1} bytes is above the maximum" in (
        refused.value.details() or ""
    )
    assert _sessions(client) == 1


@pytest.fixture
def short_ttl(stack: Stack) -> Iterator[tuple[ScriptpoolClient, str]]:
    """A coordinator whose idempotency TTL (1000 s) is above its result TTL (100 s)."""
    settings = Settings(
        redis_url=stack.redis_url,
        listen="127.0.0.1:0",
        queue=TEST_QUEUE,
        result_ttl_seconds=100,
        idempotency_ttl_seconds=1000,
    )
    coordinator = start_coordinator(settings)
    principal = f"idem-{uuid.uuid4().hex[:8]}"
    try:
        with ScriptpoolClient(f"127.0.0.1:{coordinator.port}", coordinator.auth.create_api_key(principal)) as client:
            yield client, principal
    finally:
        coordinator.stop(grace=0)


def test_a_key_lives_at_most_the_result_ttl_and_once_gone_queues_anew(
    short_ttl: tuple[ScriptpoolClient, str], redis_client: Redis
) -> None:
    client, principal = short_ttl
    key = uuid.uuid4().hex
    first = _submit(client, "return 1", key).job
    ttl = redis_client.ttl(_idem_key(principal, key))
    assert isinstance(ttl, int) and 90 <= ttl <= 100, ttl  # capped at result_ttl_seconds
    redis_client.delete(_idem_key(principal, key))  # as when it expires
    assert _submit(client, "return 1", key).job.id != first.id


def _batch(
    client: ScriptpoolClient, sources: list[str], key: str, wait: float = 0.0
) -> list[jobs_pb2.SubmitJobsResponse]:
    request = jobs_pb2.SubmitJobsRequest(
        jobs=[job_request(Language.LUA, source) for source in sources], idempotency_key=key, wait_seconds=wait
    )
    return list(_stub(client).SubmitJobs(request, metadata=client._metadata, timeout=wait + 30))


def test_a_batch_key_answers_with_the_jobs_it_first_queued_in_order(client: ScriptpoolClient) -> None:
    key = uuid.uuid4().hex
    sources = [f"return {n}" for n in range(5)]
    first = {answer.index: answer.job.id for answer in _batch(client, sources, key)}
    again = _batch(client, sources, key, wait=20)
    assert {answer.index: answer.job.id for answer in again} == first
    assert all(answer.finished for answer in again)
    assert {answer.index: result_of(answer.job) for answer in again} == dict(enumerate(range(5)))
    assert _sessions(client) == 5
    with pytest.raises(grpc.RpcError) as refused:
        _batch(client, sources[:4], key)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_job_of_a_batch_cannot_carry_its_own_key(client: ScriptpoolClient) -> None:
    request = jobs_pb2.SubmitJobsRequest(jobs=[job_request(Language.LUA, "return 1")])
    request.jobs[0].idempotency_key = "mine"
    with pytest.raises(grpc.RpcError) as refused:
        list(_stub(client).SubmitJobs(request, metadata=client._metadata, timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[0]: idempotency_key: must be empty in a batch" in (refused.value.details() or "")
    assert _sessions(client) == 0


def test_the_sdk_sends_a_key_of_its_own(client: ScriptpoolClient, redis_client: Redis) -> None:
    job = client.submit(Language.LUA, "return 1")
    keys = [k for k in redis_client.scan_iter("sp:idem:*") if job.id.encode() in (redis_client.hget(k, "jobs") or b"")]
    assert len(keys) == 1
