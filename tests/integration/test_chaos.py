"""Chaos under load: while a `scriptpool up` stack works through a few thousand jobs, SIGKILL a
worker, the coordinator, Redis (it comes back from its append-only file) and `up` itself (started
again on the same state directory), and SIGSTOP Redis for longer than one lease. Afterwards every
job the coordinator acknowledged has exactly one final outcome (ok with its right result, or
worker_lost for the few that were running when their worker died), nothing acknowledged is gone,
RQ's queue and registries hold nothing stranded, no process of the killed stack is left, and the
pool serves again without a person."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.core.defaults import DEFAULT_QUEUE
from scriptpool.core.keys import LEASES_KEY
from scriptpool.errors import ScriptpoolError
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from scriptpool.values import from_value
from tests.conftest import wait_for
from tests.integration.up_process import (
    children_of,
    free_port,
    processes_of,
    processes_with_marker,
    start_up,
    stop_up,
    up_env,
)

T = TypeVar("T")
WORKERS = 2
LEASE_SECONDS = 3.0
JOBS_PER_WAVE = 500
SOURCE = "local x = 0 for n = 1, 300000 do x = x + n end return INPUT.n * 10"
# At most the jobs running when a worker, Redis or `up` was killed end worker_lost: one per worker
# per kill (the coordinator's death and Redis's pause cost none, but leave room for one each).
MAX_WORKER_LOST = WORKERS * 5


class Pool:
    """One `up` stack on a state directory and port, with a client and a Redis connection."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_dir = tmp_path / "state"
        self.address = f"127.0.0.1:{free_port()}"
        self.log = tmp_path / "up.log"
        self.env = {**up_env(self.state_dir), "SCRIPTPOOL_LEASE_SECONDS": str(LEASE_SECONDS)}
        self.up: subprocess.Popen[str] | None = None
        self.client: ScriptpoolClient | None = None

    def start(self) -> None:
        self.up = start_up(self.state_dir, self.address, self.log, workers=WORKERS, env=self.env)
        key = (self.state_dir / "api-key").read_text().strip()
        self.client = ScriptpoolClient(self.address, key, timeout=30)

    def redis(self) -> Redis:
        return Redis.from_url(f"unix://{self.state_dir / 'redis' / 'redis.sock'}", socket_timeout=10)

    def child(self, kind: str) -> int:
        assert self.up is not None
        found = list(processes_of(self.up.pid, kind))  # a worker is a child of up's pool
        assert found, f"no {kind} under up: {children_of(self.up.pid)}"
        return found[0]

    def retrying(self, call: Callable[[], T], within: float = 90.0) -> T:
        """`call` again while the stack comes back (UNAVAILABLE and the like), for `within` seconds."""
        give_up = time.monotonic() + within
        while True:
            try:
                return call()
            except ScriptpoolError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.2)

    def submit_wave(self, first: int) -> dict[str, int]:
        """JOBS_PER_WAVE jobs in one SubmitJobs call; their ids -> their INPUT.n."""
        assert self.client is not None
        client = self.client
        requests = [job_request(Language.LUA, SOURCE, inputs={"n": n}) for n in range(first, first + JOBS_PER_WAVE)]

        def submit() -> dict[str, int]:
            answers = list(client.submit_many(requests))
            assert len(answers) == len(requests)
            return {answer.job.id: first + answer.index for answer in answers}

        return self.retrying(submit)

    def wait_until_working(self) -> None:
        """Until the workers have started on the wave (some of it done, some still queued)."""
        with self.redis() as redis:
            queue = Queue(DEFAULT_QUEUE, connection=redis)
            assert wait_for(lambda: 0 < queue.count < JOBS_PER_WAVE - 10, timeout=60, interval=0.01)


def _replaced(pool: Pool, kind: str, old: int) -> bool:
    assert pool.up is not None
    return any(pid != old for pid in processes_of(pool.up.pid, kind))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_acknowledged_job_has_one_outcome_through_kills_and_pauses(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    pool.start()
    acknowledged: dict[str, int] = {}
    try:
        assert pool.client is not None
        session = pool.client.create_session(name="acknowledged-before-chaos")

        for kind in ("worker", "coordinator", "redis"):
            acknowledged |= pool.submit_wave(len(acknowledged))
            pool.wait_until_working()
            victim = pool.child(kind)
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda kind=kind, victim=victim: _replaced(pool, kind, victim), timeout=60)

        acknowledged |= pool.submit_wave(len(acknowledged))
        pool.wait_until_working()
        redis_pid = pool.child("redis")
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            time.sleep(LEASE_SECONDS * 2)  # the fault itself: Redis frozen for two leases
        finally:
            os.kill(redis_pid, signal.SIGCONT)

        acknowledged |= pool.submit_wave(len(acknowledged))
        pool.wait_until_working()
        assert pool.up is not None
        pool.up.kill()
        pool.up.wait()
        assert pool.up.stdout is not None
        pool.up.stdout.close()
        # Nothing the killed stack started outlives it: Redis, coordinator, workers, sandboxes.
        assert wait_for(lambda: processes_with_marker(str(pool.state_dir)) == [], timeout=60), [
            Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_with_marker(str(pool.state_dir))
        ]
        pool.client.close()
        pool.start()  # the same state directory: Redis from its append-only file
        assert pool.client is not None
        client = pool.client
        wait_until_serving(pool.address, timeout=30)

        # Every acknowledged job ends, exactly once, with an outcome it may have.
        unfinished = set(acknowledged)
        outcomes: dict[str, jobs_pb2.Job] = {}

        def settle() -> bool:
            for job_id in sorted(unfinished)[:200]:
                job = pool.retrying(lambda job_id=job_id: client.get_job(job_id))  # type: ignore[misc]
                if job.status == jobs_pb2.JOB_STATUS_FINISHED:
                    outcomes[job_id] = job
                    unfinished.discard(job_id)
            return not unfinished

        assert wait_for(settle, timeout=300, interval=0.5), f"{len(unfinished)} jobs never finished"
        by_outcome: dict[Outcome, int] = {}
        for job_id, job in outcomes.items():
            ended = Outcome.from_proto(job.result.outcome)
            by_outcome[ended] = by_outcome.get(ended, 0) + 1
            if ended is Outcome.OK:
                assert from_value(job.result.result) == acknowledged[job_id] * 10, job_id
        assert set(by_outcome) <= {Outcome.OK, Outcome.WORKER_LOST}, by_outcome
        assert by_outcome.get(Outcome.WORKER_LOST, 0) <= MAX_WORKER_LOST, by_outcome
        assert len(acknowledged) == 5 * JOBS_PER_WAVE

        # Nothing stranded behind in RQ or in the leases; the data acknowledged before is there.
        with pool.redis() as redis:
            queue = Queue(DEFAULT_QUEUE, connection=redis)
            assert wait_for(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0, timeout=60)
            assert redis.llen(queue.intermediate_queue_key) == 0
            assert redis.zcard(LEASES_KEY) == 0
        assert client.get_session(session.id).name == "acknowledged-before-chaos"

        # The pool serves again, without a person.
        again = client.run(Language.LUA, "return 'served'", timeout=60)
        assert from_value(again.result.result) == "served"
    finally:
        if pool.client is not None:
            pool.client.close()
        if pool.up is not None and pool.up.poll() is None:
            stop_up(pool.up)
    assert wait_for(lambda: processes_with_marker(str(pool.state_dir)) == [], timeout=60)
