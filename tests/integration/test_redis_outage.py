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
import subprocess
import uuid
from pathlib import Path

from rq.job import Job, JobStatus
from scriptpool.errors import Unavailable
from scriptpool.v1 import jobs_pb2

from coordinator.client import ScriptpoolClient
from coordinator.redis_server import PrivateRedis
from coordinator.server import start_coordinator
from coordinator.settings import Settings
from sandbox.languages import Language
from sandbox.outcomes import Outcome
from tests.conftest import WORKER_COMMAND, stop_process, wait_for

from .helpers import next_event, result_of, run_lua, subscribe

OUTAGE_QUEUE = "scriptpool-outage-test"

UNTIL_REDIS_GOES = """
local mine = Event.subscribe(INPUT.never)
Event.emit(INPUT.ready, {})
repeat local reachable = pcall(Event.receive, mine, 1000) until not reachable
return 42
"""


def test_a_worker_delivers_the_result_it_holds_after_redis_restarts(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis = PrivateRedis(redis_dir, persistent=True, die_with_parent=True).start()
    coordinator = start_coordinator(Settings(redis_url=redis.url, listen="127.0.0.1:0", queue=OUTAGE_QUEUE))
    address = f"127.0.0.1:{coordinator.port}"
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "REDIS_URL": redis.url, "SCRIPTPOOL_COORDINATOR": address, "SCRIPTPOOL_QUEUE": OUTAGE_QUEUE}
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    key = coordinator.auth.create_api_key("outage")
    try:
        with ScriptpoolClient(address, key) as client:
            tag = uuid.uuid4().hex
            ready = subscribe(client, f"outage.ready.{tag}")
            job = client.submit(
                Language.LUA, UNTIL_REDIS_GOES, inputs={"ready": f"outage.ready.{tag}", "never": f"outage.never.{tag}"}
            )
            assert next_event(client, ready) is not None, "the job did not start"

            redis.stop()  # SIGTERM: Redis writes its AOF and exits; the job's next call fails
            assert wait_for(lambda: f"recording the end of job {job.id}" in log_path.read_text(), timeout=60), (
                log_path.read_text()[-3000:]
            )
            redis = PrivateRedis(redis_dir, persistent=True, die_with_parent=True).start()  # same socket, same data

            done = _wait_through_reconnect(client, job.id)
            assert done.result.outcome == Outcome.OK.to_proto() and result_of(done) == 42
            assert worker.poll() is None, "the worker quit"
            rq_job = Job.fetch(job.id, connection=coordinator.sweeper.queue.connection)
            assert rq_job.get_status() == JobStatus.FINISHED
            assert result_of(run_lua(client, "return 20 + 22")) == 42  # the same worker serves on
            assert worker.poll() is None
    finally:
        stop_process(worker)
        coordinator.stop(grace=0)
        redis.stop()
    assert "unhandled exception" not in log_path.read_text()


def _wait_through_reconnect(client: ScriptpoolClient, job_id: str) -> jobs_pb2.Job:
    """`wait`, retried while the coordinator's first calls after the restart still find Redis gone."""
    for _ in range(20):
        try:
            return client.wait(job_id, timeout=30)
        except Unavailable:
            continue
    raise AssertionError("the coordinator never answered after Redis came back")
