"""What one job may send, read and leave behind, at the edge of each bound: its source, artifact
content read into it (bounded by its memory limit), its job-scope State (gone when it ends) and its
finished record (kept `result_ttl_seconds`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import fields

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.stores.state import JOB_STATE_TTL_SECONDS
from scriptpool.core.keys import job_key, job_state_key, session_jobs_key, session_key
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.languages import Language
from scriptpool.workers.bridge.call_stream import CoordinatorStubs
from scriptpool.workers.bridge.host import CoordinatorBridge
from scriptpool.workers.settings import WorkerSettings
from tests.conftest import Stack

from .helpers import HeldJob, release_job, result_of, running_job_credential, subscribe
from .test_artifact_quotas import coordinator
from .test_artifacts import store


def _queue() -> str:
    return f"edges-{uuid.uuid4().hex[:8]}"  # a queue no worker takes jobs from


# ---------------------------------------------------------------------------- source
def test_a_source_of_max_source_bytes_is_accepted_and_one_byte_more_refused(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    limit, queue = stack.settings.max_source_bytes, _queue()
    head = "return 1 --"
    with coordinator(stack, redis_client, principal_and_key[1], queue=queue) as client:
        client.submit(Language.LUA, head + "x" * (limit - len(head)))
        assert redis_client.llen(f"rq:queue:{queue}") == 1
        for source in (head + "x" * (limit - len(head) + 1), head + "é" * ((limit - len(head)) // 2 + 1)):
            size = len(source.encode())  # bytes, not characters: the second is fewer characters than `limit`
            with pytest.raises(InvalidArgument, match=f"source: {size} bytes is above the maximum of {limit} bytes"):
                client.submit(Language.LUA, source)
        assert redis_client.llen(f"rq:queue:{queue}") == 1


# ---------------------------------------------------------------------------- content read into a job
def test_content_read_into_a_job_stops_at_its_memory_limit(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis
) -> None:
    """The worker's bridge reads artifact content for a job of memory limit N: N bytes are handed
    over, N + 1 are refused (and the stream cancelled) before the job holds them. (The edge cannot be
    reached through a script: a job of memory N cannot hold N bytes of content besides itself;
    tests/security/test_lua_attacks.py reads past the bound from a real job.)"""
    job_id, credential = running_job_credential(client, redis_client)
    try:
        session_id = client.get_job(job_id).session_id
        limit = 600_000  # three chunks of the stream
        at_bound = store(client, session_id, b"a" * limit, "at")
        past = store(client, session_id, b"b" * (limit + 1), "past")
        with grpc.insecure_channel(stack.address) as channel:
            bridge = CoordinatorBridge(
                CoordinatorStubs(channel), credential, session_id, time.monotonic() + 30, content_bytes_limit=limit
            )
            with pytest.raises(ResourceExhausted, match=rf"larger than this job's memory limit \({limit} bytes\)"):
                bridge.call("Artifact.getContent", [session_id, past.id])
            assert bridge.call("Artifact.getContent", [session_id, at_bound.id]) == b"a" * limit
    finally:
        release_job(job_id)


# ---------------------------------------------------------------------------- job-scope State
HOLDS_JOB_STATE = """
State.set('job', 'k', 1)
local go = Event.subscribe(INPUT.go)
Event.emit(INPUT.ready, {})
repeat local released = Event.receive(go, 3000) until released
return State.get('job', 'k')
"""
"""A job that writes its `job` State scope, says so, then waits until released."""


def _hold_job_state(client: ScriptpoolClient, redis: Redis) -> HeldJob:
    tag = uuid.uuid4().hex
    ready, go = f"edges.ready.{tag}", f"edges.go.{tag}"
    subscription = subscribe(client, ready)
    held = HeldJob(
        client, client.submit(Language.LUA, HOLDS_JOB_STATE, inputs={"ready": ready, "go": go}), subscription, go
    )
    held.wait_running()
    assert redis.hget(job_state_key(held.job.id), "k")  # written, and expiring behind the job
    assert 0 < redis.ttl(job_state_key(held.job.id)) <= JOB_STATE_TTL_SECONDS
    return held


def test_job_state_is_deleted_when_the_job_finishes(client: ScriptpoolClient, redis_client: Redis) -> None:
    held = _hold_job_state(client, redis_client)
    held.release()
    assert result_of(client.wait(held.job.id, timeout=60)) == 1
    assert not redis_client.exists(job_state_key(held.job.id))


def test_job_state_is_deleted_when_the_job_is_cancelled(client: ScriptpoolClient, redis_client: Redis) -> None:
    held = _hold_job_state(client, redis_client)
    client.cancel(held.job.id)
    client.wait(held.job.id, timeout=60)
    assert not redis_client.exists(job_state_key(held.job.id))


# ---------------------------------------------------------------------------- finished job records
def test_a_finished_job_record_expires_after_result_ttl_and_its_session_stays(
    client: ScriptpoolClient, redis_client: Redis
) -> None:
    """The worker finishes the job: its record expires after the worker's `result_ttl_seconds`; its
    credential is gone at once; its session, the session's timeline and job index do not expire
    (they go with the session: an expired job's id stays in the index, and ListJobs skips it)."""
    job = client.run(Language.LUA, "return 1")
    assert result_of(job) == 1
    result_ttl = next(f.default for f in fields(WorkerSettings) if f.name == "result_ttl_seconds")
    assert isinstance(result_ttl, int)  # the stack's workers run with the default
    assert 0 < redis_client.ttl(job_key(job.id)) <= result_ttl
    assert redis_client.hget(job_key(job.id), "credential") is None
    cred_hash = redis_client.hget(job_key(job.id), "cred_hash")
    assert isinstance(cred_hash, bytes) and not redis_client.exists(f"sp:cred:{cred_hash.decode()}")
    for kept in (session_key(job.session_id), session_jobs_key(job.session_id)):
        assert redis_client.ttl(kept) == -1  # no expiry


def test_a_job_the_coordinator_finishes_expires_after_its_result_ttl(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    """A job finished by the coordinator (cancelled while queued) expires after the coordinator's
    `result_ttl_seconds`, set small here to see the bound."""
    with coordinator(stack, redis_client, principal_and_key[1], queue=_queue(), result_ttl_seconds=120) as client:
        job = client.submit(Language.LUA, "return 1")
        assert redis_client.ttl(job_key(job.id)) == -1  # queued: no expiry yet
        client.cancel(job.id)
        assert client.wait(job.id, timeout=10).result.message
        assert 0 < redis_client.ttl(job_key(job.id)) <= 120
