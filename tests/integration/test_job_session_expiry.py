"""Sessions made for jobs submitted without one: completed when the job ends, deleted with all they
hold after `job_session_retention_seconds` by the coordinator's sweep (driven here directly, with a
`now` past the retention), so a principal running many jobs is never locked out by them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.session_expiry import SessionExpiry
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import SESSION_JOB_FIELD, texts
from scriptpool.core.keys import (
    EXPIRING_SESSIONS_KEY,
    principal_sessions_key,
    session_key,
    snapshot_bytes_key,
    state_bytes_key,
)
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.languages import Language
from scriptpool.v1 import sessions_pb2
from tests.conftest import Stack

from .helpers import outcome, result_of, run_lua

RETENTION = 600
"""The retention of these tests' coordinators: long enough that the sweeper thread never deletes
anything while a test looks; the tests sweep with a `now` past it."""


@contextmanager
def coordinator(stack: Stack, **overrides: object) -> Iterator[tuple[ScriptpoolClient, RunningCoordinator, str]]:
    """A coordinator of its own on the stack's Redis and queue (the stack's workers run its jobs), with
    `overrides`, and a client of a new principal: (client, coordinator, principal)."""
    settings = replace(stack.settings, **{"job_session_retention_seconds": RETENTION, **overrides})  # type: ignore[arg-type]
    running = start_coordinator(settings, Redis.from_url(stack.redis_url, protocol=2))
    principal = f"t-{uuid.uuid4().hex[:12]}"
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", running.auth.create_api_key(principal)) as client:
            yield client, running, principal
    finally:
        running.stop(grace=1)


def _expiry(running: RunningCoordinator) -> SessionExpiry:
    assert running.session_expiry is not None
    return running.session_expiry


def _after_retention(redis: Redis, session_id: str) -> float:
    """A time just past the session's retention (it must be listed to expire)."""
    deadline = redis.zscore(EXPIRING_SESSIONS_KEY, session_id)
    assert deadline is not None, "the session is not listed to expire"
    return deadline + 1


def _counter(redis: Redis, key: str) -> int:
    return int(redis.get(key) or 0)


def _session_keys(redis: Redis, session_id: str) -> list[str]:
    return texts(list(redis.scan_iter(f"sp:session:{session_id}*", count=10_000)))


FILLS_ITS_SESSION = """
State.set("session:current", "k", {1, 2, 3})
Artifact.store('', {content = string.rep('z', 5000), type = 'text', metadata = {name = 'notes'}})
Session.save(Session.getCurrent())
return 1
"""
"""A job that leaves State, an artifact and a snapshot in its session."""


def test_a_job_session_is_completed_when_its_job_ends_and_deleted_after_the_retention(
    stack: Stack, redis_client: Redis
) -> None:
    with coordinator(stack) as (client, running, principal):
        job = run_lua(client, FILLS_ITS_SESSION)
        assert result_of(job) == 1
        session = client.get_session(job.session_id)
        assert session.state == sessions_pb2.SESSION_STATE_COMPLETED
        timeline = client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=job.session_id))
        assert [e.description for e in timeline.entries][-2:] == [f"job {job.id} finished: ok", "active -> completed"]
        deadline = redis_client.zscore(EXPIRING_SESSIONS_KEY, job.session_id)
        assert deadline == pytest.approx(job.finished_at + RETENTION)
        held = {
            key: _counter(redis_client, key)
            for key in (
                f"sp:principal:{principal}:artifact-bytes",
                f"sp:principal:{principal}:artifact-count",
                state_bytes_key(principal),
                snapshot_bytes_key(principal),
            )
        }
        assert all(held.values()), held
        assert redis_client.zcard(principal_sessions_key(principal)) == 1
        assert len(_session_keys(redis_client, job.session_id)) >= 8

        assert _expiry(running).sweep(now=time.time()) == 0  # not yet
        assert redis_client.exists(session_key(job.session_id))
        assert _expiry(running).sweep(now=_after_retention(redis_client, job.session_id)) == 1

        assert _session_keys(redis_client, job.session_id) == []
        assert redis_client.zcard(principal_sessions_key(principal)) == 0
        assert {key: _counter(redis_client, key) for key in held} == dict.fromkeys(held, 0)
        assert redis_client.zscore(EXPIRING_SESSIONS_KEY, job.session_id) is None
        assert redis_client.zscore(f"sp:principal:{principal}:saved", job.session_id) is None


def test_sessions_a_client_or_a_script_created_are_never_completed_or_removed(
    stack: Stack, redis_client: Redis
) -> None:
    with coordinator(stack) as (client, running, _):
        given = client.create_session("mine")
        assert outcome(run_lua(client, "return 1", session_id=given.id)).value == "ok"
        job = run_lua(client, "local id = Session.create{name = 'by the script'}\nSession.setCurrent(id)\nreturn id")
        made_by_script = result_of(job)
        assert isinstance(made_by_script, str)
        for session_id in (given.id, made_by_script):
            assert client.get_session(session_id).state == sessions_pb2.SESSION_STATE_ACTIVE
            assert redis_client.zscore(EXPIRING_SESSIONS_KEY, session_id) is None
        # the job's own session ends with it, whatever the script made current
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
        _expiry(running).sweep(now=_after_retention(redis_client, job.session_id))
        assert not redis_client.exists(session_key(job.session_id))
        for session_id in (given.id, made_by_script):
            assert client.get_session(session_id).state == sessions_pb2.SESSION_STATE_ACTIVE


def test_a_job_submitted_into_a_job_session_makes_it_the_principals_own(stack: Stack, redis_client: Redis) -> None:
    """A later job in the session takes the mark off: the session stays (completed: that is terminal)."""
    with coordinator(stack) as (client, running, principal):
        first = run_lua(client, "return 1")
        later = time.time() + 10 * RETENTION
        assert redis_client.zscore(EXPIRING_SESSIONS_KEY, first.session_id) is not None
        assert result_of(run_lua(client, "return 2", session_id=first.session_id)) == 2
        assert redis_client.hget(session_key(first.session_id), SESSION_JOB_FIELD) is None
        assert _expiry(running).sweep(now=later) == 0
        assert client.get_session(first.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
        assert redis_client.zscore(EXPIRING_SESSIONS_KEY, first.session_id) is None  # dropped, not kept
        assert redis_client.zcard(principal_sessions_key(principal)) == 1


def test_a_snapshot_loaded_into_a_job_session_makes_it_the_principals_own(stack: Stack, redis_client: Redis) -> None:
    """Loading a snapshot makes the session active again, by the principal's choice: it stays."""
    with coordinator(stack) as (client, running, _):
        job = run_lua(client, "return Session.save(Session.getCurrent())")
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
        later = _after_retention(redis_client, job.session_id)
        loaded = client.sessions.load(sessions_pb2.LoadSessionRequest(session_id=job.session_id))
        assert loaded.state == sessions_pb2.SESSION_STATE_ACTIVE
        assert _expiry(running).sweep(now=later) == 0
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_ACTIVE


def test_a_job_cancelled_while_queued_completes_its_session(stack: Stack, redis_client: Redis) -> None:
    with coordinator(stack, queue=f"expiry-{uuid.uuid4().hex[:8]}") as (client, running, principal):  # no worker
        job = client.submit(Language.LUA, "return 1")
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_ACTIVE
        client.cancel(job.id)
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
        assert _expiry(running).sweep(now=_after_retention(redis_client, job.session_id)) == 1
        assert redis_client.zcard(principal_sessions_key(principal)) == 0


def test_a_retention_of_0_keeps_job_sessions_for_good(stack: Stack, redis_client: Redis) -> None:
    with coordinator(stack, job_session_retention_seconds=0) as (client, running, _):
        job = run_lua(client, "return 1")
        assert client.get_session(job.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
        assert redis_client.zscore(EXPIRING_SESSIONS_KEY, job.session_id) is None
        _expiry(running).sweep(now=time.time() + 100 * 365 * 24 * 3600)
        assert redis_client.exists(session_key(job.session_id))
    with pytest.raises(InvalidArgument, match="job_session_retention_seconds must be 0"):
        Settings(job_session_retention_seconds=-1)


def test_many_jobs_do_not_lock_out_a_principal_once_their_sessions_are_swept(stack: Stack, redis_client: Redis) -> None:
    """100 jobs without sessions, for a principal of 50 sessions at most: the first 50 fill it, and
    once their sessions are past the retention and swept, the next 50 run."""
    with coordinator(stack, max_sessions_per_principal=50) as (client, running, principal):
        for _ in range(2):
            jobs = client.run_many(Language.LUA, ["return 1"] * 50, timeout=120)
            assert [outcome(job).value for job in jobs] == ["ok"] * 50
            assert redis_client.zcard(principal_sessions_key(principal)) == 50
            with pytest.raises(ResourceExhausted, match="quota sessions .*: 50 sessions in use, limit 50 "):
                client.submit(Language.LUA, "return 1")
            latest = max(_after_retention(redis_client, job.session_id) for job in jobs)
            assert _expiry(running).sweep(now=latest) == 50
            assert redis_client.zcard(principal_sessions_key(principal)) == 0


def test_a_sweep_deletes_at_most_max_expired_sessions_per_sweep(stack: Stack, redis_client: Redis) -> None:
    with coordinator(stack, max_expired_sessions_per_sweep=2) as (client, running, principal):
        jobs = client.run_many(Language.LUA, ["return 1"] * 3, timeout=120)
        latest = max(_after_retention(redis_client, job.session_id) for job in jobs)
        assert _expiry(running).sweep(now=latest) == 2
        assert redis_client.zcard(principal_sessions_key(principal)) == 1
        assert _expiry(running).sweep(now=latest) == 1
        assert redis_client.zcard(principal_sessions_key(principal)) == 0
    with pytest.raises(InvalidArgument, match="max_expired_sessions_per_sweep must be at least 1"):
        Settings(max_expired_sessions_per_sweep=0)
