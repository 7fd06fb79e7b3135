"""JobService.SubmitJobs: many jobs in one call, all or none, answered as queued or as they finish;
through the real coordinator, Redis, RQ and worker processes."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import grpc
import pytest
from redis import Redis
from rq.job import Job as RQJob

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.waiters import JobWaiters
from scriptpool.core.job_records import texts
from scriptpool.core.keys import session_jobs_key
from scriptpool.errors import InvalidArgument, NotFound, PermissionDenied
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import MAX_LIMITS
from scriptpool.v1 import events_pb2, jobs_pb2
from tests.conftest import TEST_QUEUE, Stack, wait_for

from .helpers import (
    HELD_LUA,
    assert_worker_healthy,
    next_event,
    outcome,
    release_job,
    result_of,
    running_job_credential,
    subscribe,
)

QUEUED, RUNNING, FINISHED = jobs_pb2.JOB_STATUS_QUEUED, jobs_pb2.JOB_STATUS_RUNNING, jobs_pb2.JOB_STATUS_FINISHED
RQ_QUEUE = f"rq:queue:{TEST_QUEUE}"
# Each returns its INPUT.n times 10, in its own language.
TIMES_TEN = {
    Language.LUA: "return INPUT.n * 10",
    Language.JAVASCRIPT: "INPUT.n * 10",
    Language.PYTHON: "INPUT['n'] * 10",
}
SPIN = "while true do end"  # ended by its wall limit, or cancelled


@pytest.fixture(scope="module", autouse=True)
def workers_ready(stack: Stack) -> None:
    """The workers have started (a cold start can take longer than a batch here waits)."""
    with ScriptpoolClient(stack.address, stack.new_api_key()[1]) as client:
        for language, source in TIMES_TEN.items():
            assert result_of(client.run(language, source, inputs={"n": 1}, timeout=120)) == 10


def mixed_batch(count: int) -> list[jobs_pb2.SubmitJobRequest]:
    languages = list(TIMES_TEN)
    return [job_request(languages[i % 3], TIMES_TEN[languages[i % 3]], inputs={"n": i}) for i in range(count)]


def answers(
    client: ScriptpoolClient, requests: list[jobs_pb2.SubmitJobRequest], wait: float = 0.0
) -> list[jobs_pb2.SubmitJobsResponse]:
    return list(client.submit_many(requests, wait_seconds=wait))


def records_of(redis: Redis, principal: str) -> list[str]:
    """The keys of `principal`'s job records (a fresh principal per test)."""
    keys = [key for key in texts(list(redis.scan_iter("sp:job:*", count=1000))) if key.count(":") == 2]
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "principal")
    return [key for key, owner in zip(keys, pipe.execute(), strict=True) if owner == principal.encode()]


def spinners(client: ScriptpoolClient, stack: Stack) -> list[jobs_pb2.Job]:
    """One running spinner per worker, so that jobs submitted next stay queued until they are cancelled."""
    spinning = [client.submit(Language.LUA, SPIN, limits={"wall_time_ms": 60_000}) for _ in stack.workers]
    assert wait_for(lambda: all(client.get_job(s.id).status == RUNNING for s in spinning), timeout=30)
    return spinning


def test_a_batch_of_lua_js_and_python_jobs_comes_back_finished_with_each_result_at_its_index(
    client: ScriptpoolClient,
) -> None:
    requests = mixed_batch(9)
    got = answers(client, requests, wait=60)
    assert sorted(a.index for a in got) == list(range(9))  # exactly one answer per job
    for answer in got:
        assert answer.finished and answer.job.status == FINISHED
        assert answer.job.language == requests[answer.index].language
        assert result_of(answer.job) == answer.index * 10
    assert len({a.job.id for a in got}) == 9
    assert result_of(client.get_job(got[0].job.id)) == got[0].index * 10  # recorded like any job


def test_run_many_returns_the_finished_jobs_in_request_order(client: ScriptpoolClient) -> None:
    jobs = client.run_many(Language.LUA, [f"return {i} * {i}" for i in range(6)], timeout=60)
    assert [result_of(job) for job in jobs] == [i * i for i in range(6)]
    assert all(job.status == FINISHED for job in jobs)
    assert client.run_many(Language.LUA, []) == []


def test_without_wait_each_job_is_answered_queued_then_finishes(client: ScriptpoolClient, redis_client: Redis) -> None:
    got = answers(client, mixed_batch(6))
    assert [a.index for a in got] == list(range(6))  # as queued: in request order
    assert all(not a.finished and a.job.status == QUEUED and a.job.created_at > 0 for a in got)
    for answer in got:
        rq_job = RQJob.fetch(answer.job.id, connection=redis_client)  # a real RQ job: `rq info` counts it
        assert rq_job.origin == TEST_QUEUE and rq_job.args == (answer.job.id,)
        assert result_of(client.wait(answer.job.id, timeout=60)) == answer.index * 10


BAD_JOBS = [
    (job_request(Language.LUA, "   \n"), "jobs[{}]: source: the script is empty"),
    (
        jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_UNSPECIFIED, source="return 1"),
        "jobs[{}]: language: must be one of",
    ),
    (
        job_request(Language.LUA, "return 1", limits={"cpu_time_ms": MAX_LIMITS.cpu_time_ms + 1}),
        "jobs[{}]: limits.cpu_time_ms",
    ),
    (
        jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 1", wait_seconds=5),
        "jobs[{}]: wait_seconds: must be 0",
    ),
    (job_request(Language.LUA, "return 1", session_id="not-a-session"), "jobs[{}]: invalid session id"),
]


@pytest.mark.parametrize("position", [0, 3, 5])
@pytest.mark.parametrize(("bad", "message"), BAD_JOBS)
def test_one_invalid_job_refuses_the_whole_batch_and_enqueues_nothing(
    client: ScriptpoolClient,
    redis_client: Redis,
    principal_and_key: tuple[str, str],
    position: int,
    bad: jobs_pb2.SubmitJobRequest,
    message: str,
) -> None:
    assert wait_for(lambda: redis_client.llen(RQ_QUEUE) == 0, timeout=30)  # (other tests' jobs have started)
    requests = mixed_batch(6)
    requests[position] = bad
    with pytest.raises(InvalidArgument) as caught:
        answers(client, requests, wait=10)
    assert caught.value.message.startswith(message.format(position))
    assert redis_client.llen(RQ_QUEUE) == 0
    principal = principal_and_key[0]
    assert records_of(redis_client, principal) == []
    assert not redis_client.exists(f"sp:principal:{principal}:sessions")  # no job's new session either


def test_an_unknown_or_anothers_session_refuses_the_batch_naming_the_job(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    mine = client.create_session("mine")
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        theirs = other.create_session("theirs")
    for foreign in (theirs.id, "7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f"):
        requests = [job_request(Language.LUA, "return 1", session_id=mine.id) for _ in range(4)]
        requests[2].session_id = foreign
        with pytest.raises(NotFound) as caught:
            answers(client, requests)
        assert caught.value.message == f"jobs[2]: session {foreign} not found"
    assert redis_client.zcard(session_jobs_key(mine.id)) == 0
    assert records_of(redis_client, principal_and_key[0]) == []


def test_an_empty_batch_and_one_over_the_maximum_are_refused(
    client: ScriptpoolClient, stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    maximum = stack.settings.max_batch_jobs
    with pytest.raises(InvalidArgument, match=f"jobs: the batch is empty; send 1 to {maximum} jobs"):
        answers(client, [])
    with pytest.raises(InvalidArgument) as caught:
        answers(client, [job_request(Language.LUA, "return 1")] * (maximum + 1))
    assert f"{maximum + 1} jobs is above the maximum of {maximum}" in caught.value.message
    assert "split them" in caught.value.message
    with pytest.raises(InvalidArgument, match=r"SubmitJobsRequest.wait_seconds must be from 0 to 86400 \(got -1.0\)"):
        answers(client, mixed_batch(2), wait=-1)
    assert records_of(redis_client, principal_and_key[0]) == []


def test_a_job_credential_cannot_submit_a_batch(
    stack: Stack, client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    job_id, credential = running_job_credential(client, redis_client)
    with ScriptpoolClient(stack.address, credential) as as_job:
        with pytest.raises(PermissionDenied, match="JobService.SubmitJobs needs a client API key"):
            answers(as_job, mixed_batch(2))
    release_job(job_id)
    client.wait(job_id, timeout=30)
    assert records_of(redis_client, principal_and_key[0]) == [f"sp:job:{job_id}"]


def test_a_short_wait_answers_the_finished_jobs_then_the_unfinished_ones(client: ScriptpoolClient) -> None:
    tag = uuid.uuid4().hex
    held = {"ready": f"held.ready.{tag}", "go": f"held.go.{tag}", "result": "released"}
    ready = subscribe(client, held["ready"])
    requests = [job_request(Language.LUA, "return 'quick'")]
    requests += [job_request(Language.LUA, HELD_LUA, inputs=held) for _ in range(3)]  # cannot finish yet
    got = answers(client, requests, wait=1.0)
    assert sorted(a.index for a in got) == [0, 1, 2, 3]
    late = [a for a in got if not a.finished]
    assert {a.index for a in late} >= {1, 2, 3}
    assert all(a.job.status in (QUEUED, RUNNING) for a in late)
    assert all(not a.finished for a in got[got.index(late[0]) :])  # the unfinished ones come last
    for _ in range(3):  # each held job says it runs (two workers: one waits its turn), then is let go
        assert next_event(client, ready) is not None
        client.events.emit(events_pb2.EmitEventRequest(name=held["go"]))
    for answer in late:
        done = client.wait(answer.job.id, timeout=60)
        assert result_of(done) == ("released" if answer.index else "quick")
    assert_worker_healthy(client)


def test_a_batch_job_cancelled_while_queued_comes_back_cancelled(client: ScriptpoolClient, stack: Stack) -> None:
    session = client.create_session("batch")
    spinning = spinners(client, stack)
    got: list[jobs_pb2.SubmitJobsResponse] = []
    requests = [job_request(Language.LUA, f"return {i}", session_id=session.id) for i in range(2)]
    streaming = threading.Thread(target=lambda: got.extend(client.submit_many(requests, wait_seconds=60)))
    streaming.start()
    try:
        listed: list[jobs_pb2.Job] = []

        def queued() -> bool:
            listed[:] = client._call(client._jobs.ListJobs, jobs_pb2.ListJobsRequest(session_id=session.id)).jobs
            return len(listed) == 2

        assert wait_for(queued, timeout=10)
        victim = listed[0]
        assert victim.status == QUEUED
        assert outcome(client.cancel(victim.id)) is Outcome.CANCELLED
        assert wait_for(lambda: len(got) == 1, timeout=5)  # answered while the other is still queued
    finally:
        for spinner in spinning:
            client.cancel(spinner.id)
        streaming.join(timeout=60)
    assert got[0].finished and got[0].job.id == victim.id and outcome(got[0].job) is Outcome.CANCELLED
    assert len(got) == 2 and got[1].finished and result_of(got[1].job) == got[1].index
    assert_worker_healthy(client)


def test_jobs_without_a_session_get_one_each_and_the_given_session_is_used(
    client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    own = client.run_many(Language.LUA, ["return {Session.getCurrent(), Session.get(Session.getCurrent()).name}"] * 3)
    results = [result_of(job) for job in own]
    assert len({job.session_id for job in own}) == 3
    assert results == [[job.session_id, "lua job"] for job in own]
    session = client.create_session("shared")
    shared = client.run_many(Language.LUA, ["return Session.getCurrent()"] * 3, session_id=session.id)
    assert [result_of(job) for job in shared] == [session.id] * 3
    assert all(job.session_id == session.id for job in shared)
    assert sorted(texts(redis_client.zrange(session_jobs_key(session.id), 0, -1))) == sorted(j.id for j in shared)
    assert redis_client.zcard(f"sp:principal:{principal_and_key[0]}:sessions") == 4  # 3 new + "shared"


def test_answers_come_even_when_the_finished_messages_are_lost(
    client: ScriptpoolClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-check of the pending jobs finds what the pub/sub listener missed (a Redis reconnect)."""
    lost: list[str] = []
    monkeypatch.setattr(stack.coordinator.waiters, "_wake", lost.append)
    started = time.monotonic()
    got = answers(client, mixed_batch(4), wait=30)
    assert all(a.finished and result_of(a.job) == a.index * 10 for a in got)
    assert len(got) == 4 and len(lost) >= 4  # the messages did come, and were dropped
    assert time.monotonic() - started < 15


def test_a_cancelled_stream_ends_its_handler_and_unregisters_its_watch(client: ScriptpoolClient, stack: Stack) -> None:
    session = client.create_session("abandoned")
    spin = {"cpu_time_ms": 20_000, "wall_time_ms": 4_000}
    request = jobs_pb2.SubmitJobsRequest(
        jobs=[job_request(Language.LUA, SPIN, session_id=session.id, limits=spin)], wait_seconds=30
    )
    stream: Any = client._jobs.SubmitJobs(request, metadata=client._metadata, timeout=60)
    watchers = stack.coordinator.waiters._watchers
    listed: list[jobs_pb2.Job] = []

    def registered() -> bool:
        listed[:] = client._call(client._jobs.ListJobs, jobs_pb2.ListJobsRequest(session_id=session.id)).jobs
        return bool(listed) and listed[0].id in watchers

    assert wait_for(registered, timeout=10)
    stream.cancel()
    assert wait_for(lambda: listed[0].id not in watchers, timeout=2)  # not after its 30 s wait
    with pytest.raises(grpc.RpcError):
        next(iter(stream))
    assert outcome(client.wait(listed[0].id, timeout=60)) is Outcome.WALL_TIME_EXCEEDED  # it ran on


def test_watch_many_delivers_ids_together_once_and_unregisters(redis_client: Redis) -> None:
    waiters = JobWaiters(redis_client)  # not started: the test plays the listener
    ids = [f"job-{i}" for i in range(5)]
    with waiters.watch_many(ids) as finished, waiters.watch_many(ids[:1]) as other:
        for job_id in ids[:3]:
            waiters._wake(job_id)
        waiters._wake("not-watched")
        assert finished.take(1.0) == ids[:3]  # all that arrived, in one take
        assert other.take(1.0) == ids[:1]
        waiters._wake(ids[0])  # (a second message for a job is not delivered again)
        started = time.monotonic()
        assert finished.take(0.2) == []
        assert time.monotonic() - started >= 0.15
        finished.interrupt()
        assert finished.take(5.0) == []  # ends at once
        assert set(waiters._watchers) == set(ids[3:])
    assert waiters._watchers == {}


def test_max_batch_jobs_comes_from_the_environment_or_the_flag_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scriptpool.coordinator.cli.main import _settings, build_parser
    from scriptpool.coordinator.settings import Settings

    assert Settings().max_batch_jobs == 1000
    monkeypatch.setenv("SCRIPTPOOL_MAX_BATCH_JOBS", "250")
    assert Settings.from_env().max_batch_jobs == 250
    assert _settings(build_parser().parse_args(["coordinator", "--max-batch-jobs", "7"])).max_batch_jobs == 7
    with pytest.raises(InvalidArgument, match="max_batch_jobs must be from 1 to 2000"):
        Settings(max_batch_jobs=0)
    assert Settings(max_batch_jobs=2000).max_batch_jobs == 2000
    with pytest.raises(InvalidArgument, match="max_batch_jobs must be from 1 to 2000"):
        Settings(max_batch_jobs=2001)
