"""Opt-in retries (issue 14): a job that asked for `max_retries` and whose worker is lost mid-run is
queued again (record and RQ together) and runs once more; without retries left it ends
`worker_lost`. A worker whose lease was taken away cannot renew or finish the later attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import JobRecords, text, texts
from scriptpool.core.keys import credential_key, job_key, queued_jobs_key, running_jobs_key
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc, sessions_pb2
from tests.conftest import WORKER_COMMAND, Stack, stop_process, wait_for

from .helpers import next_event, outcome, result_of, subscribe

RETRY_QUEUE = "scriptpool-retry-test"

# Counts its runs in the principal's global State, says so, then spins on its first run only.
SPIN_ON_FIRST_RUN = """
local runs = State.increment('global', INPUT.tag, 1)
Event.emit(INPUT.ready, {run = runs})
if runs == 1 then while true do end end
return runs
"""
SPIN_FOREVER = """
local runs = State.increment('global', INPUT.tag, 1)
Event.emit(INPUT.ready, {run = runs})
while true do end
"""
LONG = {"cpu_time_ms": 120_000, "wall_time_ms": 120_000}


@dataclass
class RetryStack:
    coordinator: RunningCoordinator
    address: str
    redis: Redis
    client: ScriptpoolClient
    log_dir: Path
    redis_url: str

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": self.redis_url, "SCRIPTPOOL_COORDINATOR": self.address,
               "SCRIPTPOOL_QUEUE": RETRY_QUEUE, "SCRIPTPOOL_LEASE_SECONDS": "1"}  # fmt: skip
        with open(self.log_dir / "worker.log", "ab") as log:
            return subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip

    def submit_spinning(self, source: str, max_retries: int) -> tuple[jobs_pb2.Job, str, str]:
        """Submit `source`; returns the job, its State counter's key and its readiness subscription."""
        tag = f"runs-{uuid.uuid4().hex}"
        ready = f"retry.ready.{tag}"
        subscription = subscribe(self.client, ready)
        inputs = {"tag": tag, "ready": ready}
        job = self.client.submit(Language.LUA, source, limits=LONG, inputs=inputs, max_retries=max_retries)
        return job, tag, subscription

    def run_number(self, subscription: str) -> int:
        event = next_event(self.client, subscription)
        assert event is not None, "the job did not start"
        return int(event.data.map_value.fields["run"].int_value)


@pytest.fixture
def retry(stack: Stack, redis_client: Redis, tmp_path: Path) -> Iterator[RetryStack]:
    settings = Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=RETRY_QUEUE)
    coordinator = start_coordinator(settings)
    address = f"127.0.0.1:{coordinator.port}"
    key = coordinator.auth.create_api_key(f"retry-{uuid.uuid4().hex[:8]}")
    try:
        with ScriptpoolClient(address, key) as client:
            yield RetryStack(coordinator, address, redis_client, client, tmp_path, stack.redis_url)
    finally:
        coordinator.stop(grace=0)


def _kill(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGKILL)  # the worker, its zygote and its sandbox child, without warning
    worker.wait()


def _record(redis: Redis, job_id: str, field: str) -> str:
    return text(redis.hget(job_key(job_id), field) or b"")


def test_a_lost_job_with_a_retry_left_is_queued_again_and_finishes_ok_on_attempt_2(retry: RetryStack) -> None:
    worker = retry.start_worker()
    try:
        job, _, ready = retry.submit_spinning(SPIN_ON_FIRST_RUN, max_retries=1)
        assert retry.run_number(ready) == 1
        first_credential = _record(retry.redis, job.id, "cred_hash")
        _kill(worker)

        # Back in the queue, record and RQ agreeing, before any worker takes it.
        assert wait_for(lambda: _record(retry.redis, job.id, "status") == "queued", timeout=30)
        again = retry.client.get_job(job.id)
        assert again.status == jobs_pb2.JOB_STATUS_QUEUED and again.attempt == 2 and again.max_retries == 1
        assert not again.worker
        queue = Queue(RETRY_QUEUE, connection=retry.redis)
        assert queue.get_job_ids() == [job.id]
        assert Job.fetch(job.id, connection=retry.redis).get_status() == JobStatus.QUEUED
        assert StartedJobRegistry(RETRY_QUEUE, connection=retry.redis).get_job_ids() == []
        assert FailedJobRegistry(RETRY_QUEUE, connection=retry.redis).get_job_ids() == []
        assert not retry.redis.exists(credential_key(first_credential)), "the lost worker's credential ends"

        worker = retry.start_worker()
        assert retry.run_number(ready) == 2
        done = retry.client.wait(job.id, timeout=60)
        assert outcome(done) is Outcome.OK and result_of(done) == 2
        assert done.attempt == 2
        assert wait_for(lambda: Job.fetch(job.id, connection=retry.redis).get_status() == JobStatus.FINISHED)
        assert job.id in FinishedJobRegistry(RETRY_QUEUE, connection=retry.redis).get_job_ids()
        assert StartedJobRegistry(RETRY_QUEUE, connection=retry.redis).get_job_ids() == []
        timeline = retry.client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=done.session_id))
        kinds = [entry.type for entry in timeline.entries]
        assert kinds.count("job.started") == 2 and kinds.count("job.requeued") == 1
        assert kinds.count("job.finished") == 1
    finally:
        stop_process(worker)


@pytest.mark.parametrize("max_retries", [0, 1])
def test_a_lost_job_without_retries_left_ends_worker_lost(retry: RetryStack, max_retries: int) -> None:
    worker = retry.start_worker()
    try:
        job, _, ready = retry.submit_spinning(SPIN_FOREVER, max_retries=max_retries)
        for run in range(1, max_retries + 2):
            if run > 1:
                worker = retry.start_worker()
            assert retry.run_number(ready) == run
            _kill(worker)
        done = retry.client.wait(job.id, timeout=60)
        assert outcome(done) is Outcome.WORKER_LOST
        assert done.attempt == max_retries + 1
        assert wait_for(lambda: Job.fetch(job.id, connection=retry.redis).get_status() == JobStatus.FAILED)
        assert Queue(RETRY_QUEUE, connection=retry.redis).get_job_ids() == []
    finally:
        stop_process(worker)


def test_the_principals_queued_and_running_counts_follow_a_lost_job(retry: RetryStack) -> None:
    """The queued-jobs quota's count (docs/adr/0020-quotas.md) through start, requeue after a lost
    worker, start again, and the sweeper's final worker_lost."""
    worker = retry.start_worker()
    try:
        job, _, ready = retry.submit_spinning(SPIN_FOREVER, max_retries=1)
        queued, running = queued_jobs_key(job.principal), running_jobs_key(job.principal)

        def counts() -> tuple[list[str], list[str]]:
            return texts(retry.redis.zrange(queued, 0, -1)), texts(list(retry.redis.smembers(running)))

        assert retry.run_number(ready) == 1
        assert counts() == ([], [job.id])
        _kill(worker)
        assert wait_for(lambda: _record(retry.redis, job.id, "status") == "queued", timeout=30)
        assert counts() == ([job.id], [])
        worker = retry.start_worker()
        assert retry.run_number(ready) == 2
        assert counts() == ([], [job.id])
        _kill(worker)
        assert outcome(retry.client.wait(job.id, timeout=60)) is Outcome.WORKER_LOST
        assert counts() == ([], [])
    finally:
        stop_process(worker)


def test_a_worker_whose_lease_was_taken_away_cannot_renew_or_finish_the_next_attempt(retry: RetryStack) -> None:
    worker = retry.start_worker()
    try:
        job, _, ready = retry.submit_spinning(SPIN_ON_FIRST_RUN, max_retries=1)
        assert retry.run_number(ready) == 1
        os.killpg(worker.pid, signal.SIGSTOP)  # paused past its 1 s lease: the sweeper takes the job back
        try:
            assert wait_for(lambda: _record(retry.redis, job.id, "status") == "queued", timeout=30)
            assert _record(retry.redis, job.id, "attempt") == "2"
            # What the paused worker would send for its attempt 1 is refused.
            records = JobRecords(retry.redis)
            try:
                assert records.heartbeat(job.id, time.time(), attempt=1) is None
                stale = jobs_pb2.JobResult(outcome=Outcome.OK.to_proto()).SerializeToString()
                assert not records.finish(job.id, stale, time.time(), 60, outcome="ok", attempt=1)
            finally:
                records.close()
            assert _record(retry.redis, job.id, "status") == "queued"
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        # Resumed, it learns its lease is gone, stops its child, and its own finish is refused; the
        # job's one outcome is attempt 2's (run by whichever worker takes it from the queue).
        done = retry.client.wait(job.id, timeout=60)
        assert outcome(done) is Outcome.OK and result_of(done) == 2
        assert done.attempt == 2
    finally:
        stop_process(worker)


def test_max_retries_past_the_server_maximum_is_refused(retry: RetryStack) -> None:
    stub = jobs_pb2_grpc.JobServiceStub(retry.client.channel)
    request = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1", max_retries=11)
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJob(request, metadata=retry.client._metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_retries: 11 is above the maximum of 10" in (refused.value.details() or "")
    request.max_retries = 10
    queued = stub.SubmitJob(request, metadata=retry.client._metadata, timeout=10).job
    assert queued.max_retries == 10 and queued.attempt == 1
    retry.client.cancel(queued.id)
