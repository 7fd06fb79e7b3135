"""Nothing is lost: a worker that dies mid-job leaves a `worker_lost` result, not a job stuck running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2, sessions_pb2
from tests.conftest import CLI, Stack, stop_process, wait_for

from .helpers import assert_worker_healthy, outcome

LOST_QUEUE = "scriptpool-lost-test"


def test_killed_worker_ends_its_job_as_worker_lost(stack: Stack, tmp_path: Path) -> None:
    from scriptpool.coordinator.server import start_coordinator
    from scriptpool.coordinator.settings import Settings

    # A coordinator and a worker of their own, on a queue no other worker serves.
    settings = Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=LOST_QUEUE)
    coordinator = start_coordinator(settings)
    address = f"127.0.0.1:{coordinator.port}"
    env = {**os.environ, "REDIS_URL": stack.redis_url, "SCRIPTPOOL_COORDINATOR": address,
           "SCRIPTPOOL_QUEUE": LOST_QUEUE, "SCRIPTPOOL_LEASE_SECONDS": "1",
           "SCRIPTPOOL_WORKER_NAME": f"lost-{os.getpid()}"}  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([*CLI, "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, process_group=0)  # fmt: skip
    key = coordinator.auth.create_api_key("lost")
    try:
        with ScriptpoolClient(address, key) as client:
            job = client.submit(
                Language.LUA, "while true do end", limits={"cpu_time_ms": 60_000, "wall_time_ms": 60_000}
            )
            give_up = time.monotonic() + 20
            while client.get_job(job.id).status != jobs_pb2.JOB_STATUS_RUNNING:
                assert time.monotonic() < give_up, "the job never started"
                time.sleep(0.05)
            rq_redis = Redis.from_url(stack.redis_url)
            listed = [w.name for w in Worker.all(queue=Queue(LOST_QUEUE, connection=rq_redis))]
            assert listed == [f"lost-{os.getpid()}"]
            os.killpg(worker.pid, signal.SIGKILL)  # the worker and its sandbox child, without warning
            worker.wait()
            done = client.wait(job.id, timeout=30)
            assert outcome(done) is Outcome.WORKER_LOST
            assert "stopped responding" in done.result.message
            timeline = client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=done.session_id))
            assert [e.description for e in timeline.entries][-2:] == [
                f"job {job.id} finished: worker_lost",
                "active -> completed",  # the session made for the job ends with it
            ]
            assert client.get_session(done.session_id).state == sessions_pb2.SESSION_STATE_COMPLETED
            # RQ's registries agree right after (not when the RQ execution's heartbeat of minutes expires),
            # and the dead worker leaves RQ's worker list in the same sweep (not when its key expires).
            assert wait_for(lambda: Job.fetch(job.id, connection=rq_redis).get_status() == JobStatus.FAILED)
            assert job.id in FailedJobRegistry(LOST_QUEUE, connection=rq_redis).get_job_ids()
            assert StartedJobRegistry(LOST_QUEUE, connection=rq_redis).get_job_ids() == []
            assert wait_for(lambda: Worker.all(queue=Queue(LOST_QUEUE, connection=rq_redis)) == [], timeout=1)
            assert all(w.name != listed[0] for w in Worker.all(connection=rq_redis))
            result = Job.fetch(job.id, connection=rq_redis).latest_result()
            assert result is not None and result.exc_string is not None
            assert result.exc_string.startswith("worker_lost: ")
            rq_redis.close()
    finally:
        stop_process(worker)
        coordinator.stop(grace=0)


def test_other_workers_keep_serving(client: ScriptpoolClient) -> None:
    assert_worker_healthy(client)
