"""RQ tells the truth about scriptpool jobs, and what an operator does through RQ reaches scriptpool's
records (issue 17 item 1): a job that did not end `ok` is failed in RQ; `rq empty`, RQ's cancel and
delete end a queued job `cancelled` instead of leaving its client waiting; RQ's requeue of a failed
job does not run it again. Checked with RQ's own API and rq-dashboard's JSON endpoints."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import flask
import pytest
import rq_dashboard.web as rq_dashboard_web  # type: ignore[import-untyped]
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from tests.conftest import TEST_QUEUE, Stack, wait_for

from .helpers import outcome, run_lua


@pytest.fixture
def rq_redis(stack: Stack) -> Iterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def unserved(stack: Stack) -> Iterator[tuple[ScriptpoolClient, str, RunningCoordinator]]:
    """A coordinator of its own on a queue no worker serves: its jobs stay queued."""
    name = f"scriptpool-unserved-{uuid.uuid4().hex[:8]}"
    running: RunningCoordinator = start_coordinator(
        Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=name, max_wait_seconds=30)
    )
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", running.auth.create_api_key("unserved")) as client:
            yield client, name, running
    finally:
        running.stop(grace=0)


def _queued(client: ScriptpoolClient) -> jobs_pb2.Job:
    return client.submit(Language.LUA, "return 1")


def _assert_cancelled_by_rq(client: ScriptpoolClient, job_id: str, because: str) -> None:
    done = client.wait(job_id, timeout=20)
    assert done.status == jobs_pb2.JOB_STATUS_FINISHED, "the client must not wait for ever"
    assert outcome(done) is Outcome.CANCELLED
    assert "removed from the RQ queue" in done.result.message and because in done.result.message


def _walk_the_keyspace(running: RunningCoordinator) -> list[str]:
    """One whole walk of the sweeper's reconciliation through the job records, at once: the sweeper
    thread reads 1000 keys a sweep, so on the suite's shared Redis (every earlier test's records) its
    own walk can take longer than a test should wait. The ids of the jobs it ended."""
    ended: list[str] = []
    for _ in range(10_000):
        ended += running.sweeper.reconcile_queued()
        if running.sweeper.scan_cursor == 0:
            break
    return ended


def test_rq_empty_ends_the_queued_jobs_cancelled(
    unserved: tuple[ScriptpoolClient, str, RunningCoordinator], rq_redis: Redis
) -> None:
    client, name, running = unserved
    jobs = [_queued(client) for _ in range(3)]
    queue = Queue(name, connection=rq_redis)
    assert set(queue.job_ids) == {job.id for job in jobs}
    queue.empty()  # type: ignore[no-untyped-call]  # what `rq empty <queue>` does
    assert queue.count == 0
    _walk_the_keyspace(running)
    for job in jobs:
        _assert_cancelled_by_rq(client, job.id, "its RQ job was deleted")
    assert client.get_job(jobs[0].id).result.outcome == jobs_pb2.OUTCOME_CANCELLED


def test_rqs_cancel_and_delete_of_a_queued_job_end_it_cancelled(
    unserved: tuple[ScriptpoolClient, str, RunningCoordinator], rq_redis: Redis
) -> None:
    client, name, running = unserved
    cancelled, deleted, untouched = _queued(client), _queued(client), _queued(client)
    Job.fetch(cancelled.id, connection=rq_redis).cancel()
    Job.fetch(deleted.id, connection=rq_redis).delete()
    assert cancelled.id in CanceledJobRegistry(name, connection=rq_redis).get_job_ids()
    _walk_the_keyspace(running)
    _assert_cancelled_by_rq(client, cancelled.id, "RQ's status for it: canceled")
    _assert_cancelled_by_rq(client, deleted.id, "its RQ job was deleted")
    # a job RQ still holds stays queued, for a worker to run
    assert client.get_job(untouched.id).status == jobs_pb2.JOB_STATUS_QUEUED
    assert untouched.id in Queue(name, connection=rq_redis).job_ids


def test_a_job_still_on_rqs_queue_is_left_queued_whatever_its_rq_status(
    unserved: tuple[ScriptpoolClient, str, RunningCoordinator], rq_redis: Redis
) -> None:
    """A worker paused past its lease can mark the RQ job failed after the sweeper queued the next
    attempt (ADR 0006): the job is on RQ's queue, so it must stay queued for that attempt."""
    client, name, running = unserved
    kept, gone = _queued(client), _queued(client)
    for job_id in (kept.id, gone.id):
        Job.fetch(job_id, connection=rq_redis).set_status(JobStatus.FAILED)
    Queue(name, connection=rq_redis).remove(gone.id)
    ended = _walk_the_keyspace(running)
    assert kept.id not in ended
    assert client.get_job(kept.id).status == jobs_pb2.JOB_STATUS_QUEUED
    _assert_cancelled_by_rq(client, gone.id, "RQ's status for it: failed")


def test_a_job_not_ok_is_failed_in_rq_and_rqs_requeue_does_not_run_it_again(
    client: ScriptpoolClient, rq_redis: Redis
) -> None:
    failed = run_lua(client, "error('nope')")
    assert outcome(failed) is Outcome.SCRIPT_ERROR
    registry = FailedJobRegistry(TEST_QUEUE, connection=rq_redis)
    assert wait_for(lambda: failed.id in registry.get_job_ids())
    rq_job = Job.fetch(failed.id, connection=rq_redis)
    assert rq_job.get_status() == JobStatus.FAILED
    result = rq_job.latest_result()
    assert result is not None and result.exc_string is not None
    assert result.exc_string.startswith("JobNotOk: script_error: ") and "nope" in result.exc_string

    before = client.get_job(failed.id)
    registry.requeue(failed.id)  # what `rq requeue` and rq-dashboard's requeue do
    # a worker takes it, finds its record finished, and runs nothing: RQ shows it finished with that note
    assert wait_for(lambda: Job.fetch(failed.id, connection=rq_redis).get_status() == JobStatus.FINISHED)
    assert failed.id in FinishedJobRegistry(TEST_QUEUE, connection=rq_redis).get_job_ids()
    note = Job.fetch(failed.id, connection=rq_redis).return_value()
    assert note is not None and note["outcome"] is None and "not queued any more" in note["note"]
    after = client.get_job(failed.id)
    assert after == before  # the record, its result and its times untouched


def test_a_limit_and_a_cancel_of_a_running_job_are_failed_in_rq_naming_the_outcome(
    client: ScriptpoolClient, rq_redis: Redis
) -> None:
    over = run_lua(client, "while true do end", limits={"cpu_time_ms": 200})
    assert outcome(over) is Outcome.CPU_TIME_EXCEEDED
    running = client.submit(Language.LUA, "while true do end", limits={"cpu_time_ms": 60_000, "wall_time_ms": 60_000})
    assert wait_for(lambda: client.get_job(running.id).status == jobs_pb2.JOB_STATUS_RUNNING, timeout=20)
    client.cancel(running.id)
    cancelled = client.wait(running.id, timeout=20)
    assert outcome(cancelled) is Outcome.CANCELLED
    registry = FailedJobRegistry(TEST_QUEUE, connection=rq_redis)
    for job, named in ((over, "cpu_time_exceeded"), (cancelled, "cancelled")):
        assert wait_for(lambda job=job: job.id in registry.get_job_ids())
        result = Job.fetch(job.id, connection=rq_redis).latest_result()
        assert result is not None and result.exc_string == f"JobNotOk: {named}: {job.result.message}"


def test_rq_dashboard_shows_the_failed_job_and_the_workers(
    stack: Stack, client: ScriptpoolClient, rq_redis: Redis
) -> None:
    failed = run_lua(client, "error('shown on the dashboard')")
    ok = run_lua(client, "return 1")
    assert wait_for(lambda: failed.id in FailedJobRegistry(TEST_QUEUE, connection=rq_redis).get_job_ids())
    assert wait_for(lambda: Job.fetch(ok.id, connection=rq_redis).get_status() == JobStatus.FINISHED)

    app = flask.Flask("rq-dashboard-under-test")  # rq-dashboard's blueprint, as its own app mounts it
    app.config["RQ_DASHBOARD_REDIS_URL"] = stack.redis_url
    app.register_blueprint(rq_dashboard_web.blueprint)
    with app.app_context():
        rq_dashboard_web.setup_rq_connection(app)
    web = app.test_client()

    def get(path: str) -> Any:
        response = web.get(path)
        assert response.status_code == 200, response.data
        return response.get_json()

    job = get(f"/0/data/job/{failed.id}.json")
    assert job["status"] == "failed"
    assert job["exc_info"].startswith("JobNotOk: script_error: ") and "shown on the dashboard" in job["exc_info"]
    assert get(f"/0/data/job/{ok.id}.json")["status"] == "finished"
    queues = {q["name"]: q for q in get("/0/data/queues.json")["queues"]}
    assert queues[TEST_QUEUE]["failed_job_registry_count"] >= 1
    listed = get(f"/0/data/jobs/{TEST_QUEUE}/failed/100/asc/1.json")
    assert failed.id in {j["id"] for j in listed["jobs"]}
    workers = get("/0/data/workers.json")["workers"]
    assert {w["name"] for w in workers} >= {w.name for w in _stack_workers(rq_redis)}
    assert StartedJobRegistry(TEST_QUEUE, connection=rq_redis).get_job_ids() == []


def _stack_workers(rq_redis: Redis) -> list[Any]:
    from rq import Worker

    found = Worker.all(queue=Queue(TEST_QUEUE, connection=rq_redis))
    assert found, "the stack's workers are listed by RQ"
    return found
