"""Time the lease sweeper could not observe is not held against a worker (issue 14, item 2).

A Redis pause longer than the lease made every running job's lease lapse; the first sweep after the
pause finished healthy jobs as `worker_lost`, whether or not their workers renewed a moment later.
Now the sweeper expires a lease only once it has observed Redis without a gap for a whole lease
interval, from its start and after every gap.

The sweeper's rules are checked first with a clock the test moves (real Redis, no waiting). Then end
to end: Redis SIGSTOPped for longer than the lease, with the worker's renewal held back until the
sweeper has swept twice after Redis came back (the worker is stopped too: the order the two would
otherwise reach Redis in is a race); its job still finishes `ok`. A worker that really died still has
its job finished `worker_lost`, one lease interval after Redis came back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.sweeper import LeaseSweeper
from scriptpool.core.job_records import JobRecords, text
from scriptpool.core.keys import LEASES_KEY, job_key
from scriptpool.errors import Unavailable
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import events_pb2, jobs_pb2
from tests.conftest import WORKER_COMMAND, stop_process, wait_for

from .helpers import next_event, outcome, result_of, subscribe

HOLD_QUEUE = "scriptpool-hold-test"
LEASE = 4.0
"""Seconds of the lease in these tests: sweeps every second, a gap is over 2 s, the hold is 4 s."""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of the test's own: it is paused, and no other coordinator sweeps its leases."""
    server = PrivateRedis(tmp_path / "redis", die_with_parent=True).start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _running_job(client: Redis, lease_expiry: float) -> str:
    job_id = str(uuid.uuid4())
    client.hset(job_key(job_id), mapping={"status": "running", "worker": "gone"})
    client.zadd(LEASES_KEY, {job_id: lease_expiry})
    return job_id


def _status(client: Redis, job_id: str) -> str:
    return text(client.hget(job_key(job_id), "status") or b"")


def test_a_lapsed_lease_is_expired_only_after_a_lease_interval_of_observed_redis(redis: PrivateRedis) -> None:
    client = Redis.from_url(redis.url)
    clock = Clock()
    records = JobRecords(client)
    sweeper = LeaseSweeper(records, 60, Queue(HOLD_QUEUE, connection=client), lease_seconds=8, clock=clock)
    assert (sweeper.interval, sweeper.gap_seconds) == (2, 4)
    try:
        dead = _running_job(client, time.time() - 100)
        # From the sweeper's start: 8 s of replies 2 s apart before anything expires.
        for _ in range(4):
            assert sweeper.sweep_once() == 0 and sweeper.holding
            assert _status(client, dead) == "running"
            clock.now += 2
        assert sweeper.sweep_once() == 1 and not sweeper.holding
        assert _status(client, dead) == "finished"

        # A gap (Redis unreachable, or the coordinator paused): the hold starts again.
        renewed, dead = _running_job(client, time.time() - 100), _running_job(client, time.time() - 100)
        clock.now += 2 + sweeper.gap_seconds
        assert sweeper.sweep_once() == 0 and sweeper.holding
        assert records.heartbeat(renewed, time.time()) is False  # its worker is back: the lease is current
        clock.now += 4
        assert sweeper.sweep_once() == 0
        assert {_status(client, renewed), _status(client, dead)} == {"running"}
        clock.now += 4
        assert sweeper.sweep_once() == 1
        assert (_status(client, renewed), _status(client, dead)) == ("running", "finished")
        assert client.zscore(LEASES_KEY, renewed) is not None
    finally:
        records.close()
        client.close()


def test_a_lease_renewed_after_the_sweepers_read_is_not_expired(redis: PrivateRedis) -> None:
    client = Redis.from_url(redis.url)
    records = JobRecords(client)
    try:
        job_id = _running_job(client, time.time() + 60)  # renewed after a sweep read it as lapsed
        assert not records.finish(job_id, b"", time.time(), 60, lease_lapsed_by=time.time() - 1)
        assert _status(client, job_id) == "running" and client.zscore(LEASES_KEY, job_id) is not None
        assert records.finish(job_id, b"", time.time(), 60, lease_lapsed_by=time.time() + 61)
        assert _status(client, job_id) == "finished"
    finally:
        records.close()
        client.close()


WAITS_FOR_GO = """
local go = Event.subscribe(INPUT.go)
pcall(Event.emit, INPUT.ready, {})  -- Redis may stop while the call ends (the event is out by then)
repeat local reachable, released = pcall(Event.receive, go, 1000) until reachable and released
return 42
"""
"""Runs until the test says go; a call that fails while Redis is away is tried again (calls do:
the coordinator's Redis reads time out)."""


@dataclass
class PausedStack:
    redis: PrivateRedis
    coordinator: RunningCoordinator
    worker: subprocess.Popen[bytes]
    client: ScriptpoolClient
    admin: Redis

    def start_job(self) -> tuple[jobs_pb2.Job, str]:
        """A running job of WAITS_FOR_GO (handshake: it said so) and the event name that releases it."""
        tag = uuid.uuid4().hex
        ready, go = f"hold.ready.{tag}", f"hold.go.{tag}"
        subscription = subscribe(self.client, ready)
        limits = {"wall_time_ms": 120_000, "max_global_calls": 1_000_000}
        job = self.client.submit(Language.LUA, WAITS_FOR_GO, inputs={"ready": ready, "go": go}, limits=limits)
        assert next_event(self.client, subscription) is not None, "the job did not start"
        return job, go

    def pause_redis_beyond_a_lease(self, while_paused: object = None) -> None:
        """SIGSTOP Redis for longer than the lease (every lease lapses), calling `while_paused` first."""
        assert self.redis.process is not None
        os.kill(self.redis.process.pid, signal.SIGSTOP)
        try:
            if callable(while_paused):
                while_paused()
            time.sleep(LEASE + 2)
        finally:
            os.kill(self.redis.process.pid, signal.SIGCONT)

    def sweeps(self) -> int:
        """Sweeps done so far: each reads RQ's intermediate queue once, and nothing else here does."""
        stats = self.admin.info("commandstats").get("cmdstat_lrange", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    def wait_sweeps(self, count: int) -> None:
        first = self.sweeps()
        assert wait_for(lambda: self.sweeps() >= first + count, timeout=30), "the sweeper stopped sweeping"

    def emit(self, name: str) -> None:
        for _ in range(20):
            try:
                self.client.events.emit(events_pb2.EmitEventRequest(name=name))
                return
            except Unavailable:
                time.sleep(0.2)
        raise AssertionError("the coordinator never answered after Redis came back")


@pytest.fixture
def paused(redis: PrivateRedis, tmp_path: Path) -> Iterator[PausedStack]:
    settings = Settings(redis_url=redis.url, listen="127.0.0.1:0", queue=HOLD_QUEUE, lease_seconds=LEASE)
    coordinator = start_coordinator(settings)
    address = f"127.0.0.1:{coordinator.port}"
    env = {**os.environ, "REDIS_URL": redis.url, "SCRIPTPOOL_COORDINATOR": address, "SCRIPTPOOL_QUEUE": HOLD_QUEUE,
           "SCRIPTPOOL_LEASE_SECONDS": str(LEASE)}  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    admin = Redis.from_url(redis.url)
    key = coordinator.auth.create_api_key("hold")
    try:
        with ScriptpoolClient(address, key) as client:
            yield PausedStack(redis, coordinator, worker, client, admin)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
        stop_process(worker)
        coordinator.stop(grace=0)
        admin.close()


def test_a_running_job_outlives_a_redis_pause_longer_than_its_lease(paused: PausedStack) -> None:
    job, go = paused.start_job()
    worker = paused.worker
    paused.pause_redis_beyond_a_lease(while_paused=lambda: os.kill(worker.pid, signal.SIGSTOP))
    # Before the fix, either of these sweeps finished the job as worker_lost: its lease had lapsed.
    paused.wait_sweeps(2)
    assert paused.client.get_job(job.id).status == jobs_pb2.JOB_STATUS_RUNNING
    os.kill(worker.pid, signal.SIGCONT)  # the worker renews its lease within the hold
    paused.emit(go)
    done = paused.client.wait(job.id, timeout=60)
    assert outcome(done) is Outcome.OK, str(done.result)
    assert result_of(done) == 42
    assert worker.poll() is None


def test_a_dead_workers_job_is_still_finished_after_the_hold(paused: PausedStack) -> None:
    job, _ = paused.start_job()
    worker = paused.worker

    def kill_worker() -> None:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its sandbox child, while Redis is away
        worker.wait()

    paused.pause_redis_beyond_a_lease(while_paused=kill_worker)
    paused.wait_sweeps(2)
    assert paused.client.get_job(job.id).status == jobs_pb2.JOB_STATUS_RUNNING  # held
    done = paused.client.wait(job.id, timeout=60)
    assert outcome(done) is Outcome.WORKER_LOST
    assert paused.coordinator.sweeper.holding is False
