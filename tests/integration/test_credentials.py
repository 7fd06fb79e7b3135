"""Every global call is authorised by a credential valid only for its own job."""

from __future__ import annotations

import time

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc, sessions_pb2, sessions_pb2_grpc
from tests.conftest import Stack, wait_for

from .helpers import assert_worker_healthy, outcome, release_job, result_of, running_job_credential


def _session_get(stack: Stack, token: str, session_id: str) -> grpc.RpcError | sessions_pb2.Session:
    with grpc.insecure_channel(stack.address) as channel:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        try:
            return stub.Get(
                sessions_pb2.SessionRef(session_id=session_id),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
        except grpc.RpcError as exc:
            return exc


def test_missing_credentials_are_unauthenticated(stack: Stack) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            sessions_pb2_grpc.SessionServiceStub(channel).Create(sessions_pb2.CreateSessionRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "apikey create" in (caught.value.details() or "")


def test_forged_job_credential_is_refused(stack: Stack, client: ScriptpoolClient) -> None:
    session = client.create_session("target")
    answer = _session_get(stack, "spj_" + "A" * 43, session.id)
    assert isinstance(answer, grpc.RpcError) and answer.code() is grpc.StatusCode.UNAUTHENTICATED
    forged_key = _session_get(stack, "spk_forged", session.id)
    assert isinstance(forged_key, grpc.RpcError) and forged_key.code() is grpc.StatusCode.UNAUTHENTICATED


def test_job_credential_works_only_while_its_job_runs(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    job_id, credential = running_job_credential(client, redis_client)
    own_session = client.get_job(job_id).session_id
    during = _session_get(stack, credential, own_session)
    assert isinstance(during, sessions_pb2.Session) and during.id == own_session
    release_job(job_id)
    assert outcome(client.wait(job_id, timeout=30)).value == "ok"
    after = _session_get(stack, credential, own_session)
    assert isinstance(after, grpc.RpcError) and after.code() is grpc.StatusCode.UNAUTHENTICATED
    assert redis_client.hget(f"sp:job:{job_id}", "credential") is None


def test_a_used_credential_stops_working_when_its_job_is_cancelled(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    """The coordinator caches verified job credentials: a cancel must end it too, at once."""
    job_id, credential = running_job_credential(client, redis_client)
    own_session = client.get_job(job_id).session_id
    for _ in range(3):  # used (and so cached) while the job runs
        assert isinstance(_session_get(stack, credential, own_session), sessions_pb2.Session)
    client.cancel(job_id)
    assert outcome(client.wait(job_id, timeout=30)).value == "cancelled"
    after = _session_get(stack, credential, own_session)
    assert isinstance(after, grpc.RpcError) and after.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_used_credential_stops_working_without_anyone_waiting_for_the_job(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    """Nobody calls WaitJob/GetJob here: only the job-finished message ends the cached credential."""
    job_id, credential = running_job_credential(client, redis_client)
    session_id = client.get_job(job_id).session_id
    assert isinstance(_session_get(stack, credential, session_id), sessions_pb2.Session)  # used, so cached
    release_job(job_id)
    assert wait_for(lambda: redis_client.hget(f"sp:job:{job_id}", "status") == b"finished", timeout=30, interval=0.01)
    # the finish message travels Redis -> the coordinator's listener; allow it a moment, never more
    refused_within = time.monotonic() + 1.0
    answer = _session_get(stack, credential, session_id)
    while not isinstance(answer, grpc.RpcError) and time.monotonic() < refused_within:
        time.sleep(0.01)
        answer = _session_get(stack, credential, session_id)
    assert isinstance(answer, grpc.RpcError) and answer.code() is grpc.StatusCode.UNAUTHENTICATED


def test_another_principals_job_credential_cannot_reach_my_sessions(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    mine = client.create_session("private", metadata={"secret": "s3cr3t"})
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        job_id, credential = running_job_credential(other, redis_client)
        answer = _session_get(stack, credential, mine.id)
        assert isinstance(answer, grpc.RpcError) and answer.code() is grpc.StatusCode.NOT_FOUND
        assert "s3cr3t" not in (answer.details() or "")
        release_job(job_id)
        other.wait(job_id, timeout=30)
        # and from inside a script of the other principal
        leaked = other.run(Language.LUA, f"local ok, e = pcall(Session.get, '{mine.id}') return e.code")
        assert result_of(leaked) == "NOT_FOUND"
        listed = other.run(Language.LUA, "local n = 0 for _, s in ipairs(Session.list()) do n = n + 1 end return n")
        assert isinstance(count := result_of(listed), int) and count >= 1
        names = other.run(
            Language.LUA, "local t = {} for _, s in ipairs(Session.list()) do t[#t+1] = s.name end return t"
        )
        assert isinstance(seen := result_of(names), (list, dict)) and "private" not in seen


def test_a_job_credential_cannot_submit_or_cancel_jobs(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    job_id, credential = running_job_credential(client, redis_client)
    with grpc.insecure_channel(stack.address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        metadata = (("authorization", f"Bearer {credential}"),)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitJob(
                jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 1"),
                metadata=metadata,
                timeout=5,
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as caught:
            stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=metadata, timeout=5)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    release_job(job_id)
    assert outcome(client.wait(job_id, timeout=30)).value == "ok"  # neither call reached the job
    assert_worker_healthy(client)


def test_a_client_cannot_see_another_principals_job(stack: Stack, client: ScriptpoolClient) -> None:
    job = client.run(Language.LUA, "return 1")
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        from scriptpool.errors import NotFound

        with pytest.raises(NotFound):
            other.get_job(job.id)
        with pytest.raises(NotFound):
            other.cancel(job.id)


def test_only_a_job_may_record_a_refused_call_and_only_real_operations(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    def record(token: str, op: str, code: str) -> grpc.RpcError | None:
        with grpc.insecure_channel(stack.address) as channel:
            try:
                sessions_pb2_grpc.SessionServiceStub(channel).RecordRefusedCall(
                    sessions_pb2.RefusedCall(op=op, code=code),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=5,
                )
            except grpc.RpcError as exc:
                return exc
        return None

    _, api_key = stack.new_api_key()
    refused = record(api_key, "Session.get", "INVALID_ARGUMENT")
    assert refused is not None and refused.code() is grpc.StatusCode.PERMISSION_DENIED
    job_id, credential = running_job_credential(client, redis_client)
    session_id = client.get_job(job_id).session_id
    for op, code in (("Redis.flushall", "INVALID_ARGUMENT"), ("Session.get", "NOT_A_CODE"), ("", "")):
        bad = record(credential, op, code)
        assert bad is not None and bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert record(credential, "Session.get", "INVALID_ARGUMENT") is None
    client.cancel(job_id)
    client.wait(job_id, timeout=30)
    entries = client.sessions.get_timeline(
        sessions_pb2.GetTimelineRequest(session_id=session_id, types=["global_call"])
    )
    recorded = [e.description for e in entries.entries if not e.description.startswith("Event.")]  # the held job's own
    assert recorded == ["Session.get -> INVALID_ARGUMENT"]
