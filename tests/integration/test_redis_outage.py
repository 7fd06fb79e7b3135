"""Outages are waited out (issue 14): a worker holding a job's result while Redis goes away keeps
it, backs off, and delivers it once Redis is back; it does not quit (before: "found an unhandled
exception, quitting" from the finishing transaction, the job later `worker_lost`, the queue stuck).

Redis is the test's own (AOF on, so a restart keeps the data), stopped and started again on the
same socket. The job itself is the handshake: it says it is running, then waits in a global call
until one fails (Redis is gone), and only then returns its result, so the worker's finish is sent
while Redis is down, whatever the timing; the test restarts Redis once the worker has logged that
it is waiting to deliver."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

from rq.job import Job, JobStatus

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.errors import Unavailable
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from scriptpool.workers.rq_compat.lean_rq import EXIT_END_NOT_RECORDED
from tests.conftest import WORKER_COMMAND, stop_process, wait_for

from .helpers import next_event, result_of, run_lua, subscribe

OUTAGE_QUEUE = "scriptpool-outage-test"

UNTIL_REDIS_GOES = """
local mine = Event.subscribe(INPUT.never)
Event.emit(INPUT.ready, {})
repeat local reachable = pcall(Event.receive, mine, 1000) until not reachable
return 42
"""


class OutageStack:
    """The test's own Redis (AOF on), an in-process coordinator and one worker process."""

    def __init__(self, tmp_path: Path, lease_seconds: float = 15.0) -> None:
        self.redis_dir = tmp_path / "redis"
        self.redis = PrivateRedis(self.redis_dir, persistent=True, die_with_parent=True).start()
        self.coordinator = start_coordinator(
            Settings(redis_url=self.redis.url, listen="127.0.0.1:0", queue=OUTAGE_QUEUE)
        )
        self.address = f"127.0.0.1:{self.coordinator.port}"
        self.log_path = tmp_path / "worker.log"
        env = {**os.environ, "REDIS_URL": self.redis.url, "SCRIPTPOOL_COORDINATOR": self.address,
               "SCRIPTPOOL_QUEUE": OUTAGE_QUEUE, "SCRIPTPOOL_LEASE_SECONDS": str(lease_seconds)}  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.worker = subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
        self.key = self.coordinator.auth.create_api_key("outage")

    def submit_until_redis_goes(self, client: ScriptpoolClient) -> jobs_pb2.Job:
        """The job, once it runs, and Redis stopped (SIGTERM: it writes its AOF and exits) once the
        worker has logged that it is waiting to record the job's end."""
        tag = uuid.uuid4().hex
        ready = subscribe(client, f"outage.ready.{tag}")
        job = client.submit(
            Language.LUA, UNTIL_REDIS_GOES, inputs={"ready": f"outage.ready.{tag}", "never": f"outage.never.{tag}"}
        )
        assert next_event(client, ready) is not None, "the job did not start"
        self.redis.stop()  # the job's next call fails
        assert wait_for(lambda: f"recording the end of job {job.id}" in self.log_path.read_text(), timeout=60), (
            self.log_path.read_text()[-3000:]
        )
        return job

    def restart_redis(self) -> None:
        self.redis = PrivateRedis(self.redis_dir, persistent=True, die_with_parent=True).start()  # same socket, data

    def stop(self) -> None:
        stop_process(self.worker)
        self.coordinator.stop(grace=0)
        self.redis.stop()


def test_a_worker_delivers_the_result_it_holds_after_redis_restarts(tmp_path: Path) -> None:
    stack = OutageStack(tmp_path)
    try:
        with ScriptpoolClient(stack.address, stack.key) as client:
            job = stack.submit_until_redis_goes(client)
            stack.restart_redis()

            done = _wait_through_reconnect(client, job.id)
            assert done.result.outcome == Outcome.OK.to_proto() and result_of(done) == 42
            assert stack.worker.poll() is None, "the worker quit"
            rq_job = Job.fetch(job.id, connection=stack.coordinator.sweeper.queue.connection)
            assert rq_job.get_status() == JobStatus.FINISHED
            assert result_of(run_lua(client, "return 20 + 22")) == 42  # the same worker serves on
            assert stack.worker.poll() is None
    finally:
        stack.stop()
    log = stack.log_path.read_text()
    assert "unhandled exception" not in log
    # RQ's own retry line (its main loop and its pubsub thread, every 2 s) is logged once, then counted
    rq_retries = [line for line in log.splitlines() if "could not connect to Redis instance" in line]
    assert len([line for line in rq_retries if "more times in the last" not in line]) <= 1, rq_retries


def test_a_worker_asked_to_stop_gives_up_a_job_end_redis_never_takes(tmp_path: Path) -> None:
    """SIGTERM (an operator, a pod ending, the `up` that started it dying) while Redis is gone: the
    worker waits FINISH_GRACE_AFTER_STOP_SECONDS more, then exits 1 instead of living on as an
    orphan; the job it held ends worker_lost once Redis is back and its lease has expired."""
    stack = OutageStack(tmp_path, lease_seconds=2.0)
    try:
        with ScriptpoolClient(stack.address, stack.key) as client:
            job = stack.submit_until_redis_goes(client)
            stack.worker.send_signal(signal.SIGTERM)
            code = stack.worker.wait(timeout=60)
            assert code == EXIT_END_NOT_RECORDED, stack.log_path.read_text()[-3000:]
            assert f"exiting without recording the end of job {job.id}" in stack.log_path.read_text()

            stack.restart_redis()
            done = _wait_through_reconnect(client, job.id)
            assert done.result.outcome == Outcome.WORKER_LOST.to_proto(), done.result.message
    finally:
        stack.stop()


def _wait_through_reconnect(client: ScriptpoolClient, job_id: str) -> jobs_pb2.Job:
    """`wait`, retried while the coordinator's first calls after the restart still find Redis gone."""
    for _ in range(20):
        try:
            return client.wait(job_id, timeout=30)
        except Unavailable:
            continue
    raise AssertionError("the coordinator never answered after Redis came back")
