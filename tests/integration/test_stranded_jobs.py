"""Exactly one outcome per job when a worker dies between RQ's dequeue and its claim (issue 14):
the job's id sits in RQ's intermediate queue with its record `queued`, no worker will claim it, and
before the fix `WaitJob` never ended. The coordinator's sweeper puts it back on the queue."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2, sessions_pb2
from tests.conftest import WORKER_COMMAND, Stack, stop_process, wait_for

from .helpers import outcome, result_of

STRANDED_QUEUE = "scriptpool-stranded-test"


@dataclass
class OwnStack:
    """A coordinator of its own on a queue no shared worker serves (workers start when a test says)."""

    coordinator: RunningCoordinator
    address: str
    redis: Redis
    queue: Queue
    client: ScriptpoolClient
    log_dir: Path

    def start_worker(self, redis_url: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": redis_url, "SCRIPTPOOL_COORDINATOR": self.address,
               "SCRIPTPOOL_QUEUE": STRANDED_QUEUE}  # fmt: skip
        with open(self.log_dir / "worker.log", "ab") as log:
            return subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip


@pytest.fixture
def own(stack: Stack, redis_client: Redis, tmp_path: Path) -> Iterator[OwnStack]:
    settings = Settings(
        redis_url=stack.redis_url, listen="127.0.0.1:0", queue=STRANDED_QUEUE, stranded_after_seconds=0.5
    )
    coordinator = start_coordinator(settings)
    address = f"127.0.0.1:{coordinator.port}"
    queue = Queue(STRANDED_QUEUE, connection=redis_client)
    key = coordinator.auth.create_api_key("stranded")
    try:
        with ScriptpoolClient(address, key) as client:
            yield OwnStack(coordinator, address, redis_client, queue, client, tmp_path)
    finally:
        coordinator.stop(grace=0)


def test_a_job_stranded_in_rqs_intermediate_queue_is_queued_again_and_runs_once(own: OwnStack, stack: Stack) -> None:
    job = own.client.submit(Language.LUA, "return 6 * 7")
    # A worker's dequeue, exactly as workers/rq_compat/lean_dequeue.py sends it, by a worker that then dies
    # before its start transaction: nothing claims the job.
    moved = own.redis.lmove(own.queue.key, own.queue.intermediate_queue_key, "LEFT", "RIGHT")
    assert moved == job.id.encode()
    assert own.client.get_job(job.id).status == jobs_pb2.JOB_STATUS_QUEUED

    # The sweeper finds it stranded and puts it back on RQ's queue (the job is still queued in RQ).
    assert wait_for(lambda: own.redis.lrange(own.queue.key, 0, -1) == [job.id.encode()], timeout=15)
    assert own.redis.llen(own.queue.intermediate_queue_key) == 0
    assert Job.fetch(job.id, connection=own.redis).get_status() == JobStatus.QUEUED

    worker = own.start_worker(stack.redis_url)
    try:
        done = own.client.wait(job.id, timeout=60)
    finally:
        stop_process(worker)
    assert outcome(done) is Outcome.OK and result_of(done) == 42
    timeline = own.client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=done.session_id))
    job_entries = [e.type for e in timeline.entries if e.job_id == job.id and e.type.startswith("job.")]
    assert job_entries == ["job.started", "job.finished"]  # ran once (its session's completion follows)
    # RQ agrees: finished, in its finished registry only, nothing left in its queues.
    assert Job.fetch(job.id, connection=own.redis).get_status() == JobStatus.FINISHED
    assert job.id in FinishedJobRegistry(STRANDED_QUEUE, connection=own.redis).get_job_ids()
    assert job.id not in FailedJobRegistry(STRANDED_QUEUE, connection=own.redis).get_job_ids()
    assert StartedJobRegistry(STRANDED_QUEUE, connection=own.redis).get_job_ids() == []
    assert own.redis.llen(own.queue.key) == 0 and own.redis.llen(own.queue.intermediate_queue_key) == 0


def test_a_stranded_job_cancelled_meanwhile_is_not_queued_again(own: OwnStack) -> None:
    job = own.client.submit(Language.LUA, "return 1")
    own.redis.lmove(own.queue.key, own.queue.intermediate_queue_key, "LEFT", "RIGHT")
    cancelled = own.client.cancel(job.id)
    assert outcome(cancelled) is Outcome.CANCELLED
    assert wait_for(lambda: own.redis.llen(own.queue.intermediate_queue_key) == 0, timeout=15)
    assert own.redis.llen(own.queue.key) == 0  # dropped, not queued again
    assert outcome(own.client.get_job(job.id)) is Outcome.CANCELLED
