"""Fair scheduling (issue 18 item 4): RQ's queue is kept in round-robin order across principals, so
a principal with nothing queued is not stuck behind another's backlog (coordinator/stores/fair_queue.py).

Each test runs its own coordinator on a queue of its own, so only its jobs are on it; the order is
read from RQ's own API (`Queue.get_job_ids`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from tests.conftest import start_worker, stop_process

from .helpers import outcome

BACKLOG = 10_000
BATCH = 1000


class Fleet:
    """A coordinator on a queue no worker serves (yet), and a client per principal."""

    def __init__(self, redis_url: str, *, fair: bool = True) -> None:
        self.queue_name = f"fair-{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        self.coordinator: RunningCoordinator = start_coordinator(
            Settings(redis_url=redis_url, listen="127.0.0.1:0", queue=self.queue_name, fair_queue=fair)
        )
        self.address = f"127.0.0.1:{self.coordinator.port}"
        self.clients: dict[str, ScriptpoolClient] = {}
        self.redis = Redis.from_url(redis_url)

    def client(self, principal: str) -> ScriptpoolClient:
        if principal not in self.clients:
            self.clients[principal] = ScriptpoolClient(self.address, self.coordinator.auth.create_api_key(principal))
        return self.clients[principal]

    def submit(self, principal: str, count: int, source: str = "return 1") -> list[str]:
        ids: list[str] = []
        while len(ids) < count:
            n = min(BATCH, count - len(ids))
            answers = self.client(principal).submit_many([job_request(Language.LUA, source) for _ in range(n)])
            ids.extend(answer.job.id for answer in sorted(answers, key=lambda a: a.index))
        return ids

    def queued_ids(self) -> list[str]:
        return [str(job_id) for job_id in Queue(self.queue_name, connection=self.redis).get_job_ids()]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.coordinator.stop(grace=0)
        self.redis.close()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[PrivateRedis]:
    """A Redis of this module's own: its 10,000-job backlog would otherwise slow every later test's
    sweeper, which walks the job records 1000 keys a sweep."""
    with PrivateRedis(die_with_parent=True) as server:
        yield server


@pytest.fixture
def fleet(own_redis: PrivateRedis) -> Iterator[Fleet]:
    running = Fleet(own_redis.url)
    try:
        yield running
    finally:
        running.close()


def test_a_principal_with_nothing_queued_starts_within_two_rounds_of_a_10000_job_backlog(fleet: Fleet) -> None:
    backlog = fleet.submit("tenant-a", BACKLOG)
    (b_job,) = fleet.submit("tenant-b", 1)
    (c_job,) = fleet.submit("tenant-c", 1)
    queued = fleet.queued_ids()
    assert len(queued) == BACKLOG + 2  # everything is on RQ's queue, nothing held elsewhere
    # The bound (docs/adr/0022): behind at most the jobs of two rounds, one per principal with work.
    principals_with_work = 3
    assert queued.index(b_job) <= 2 * principals_with_work - 1
    assert queued.index(c_job) <= 2 * principals_with_work - 1
    assert queued.index(b_job) < queued.index(c_job)  # B asked first
    assert [job for job in queued if job in set(backlog)] == backlog  # A's own order is kept


def test_two_backlogs_interleave_round_by_round(fleet: Fleet) -> None:
    a_jobs = fleet.submit("tenant-a", 5)
    b_jobs = fleet.submit("tenant-b", 5)
    owner = {**dict.fromkeys(a_jobs, "a"), **dict.fromkeys(b_jobs, "b")}
    order = "".join(owner[job] for job in fleet.queued_ids())
    # A's first job is at the head (round 1); B's jobs take rounds 2.. beside A's.
    assert order == "aababababb"


def test_a_drained_queue_starts_the_rounds_again(fleet: Fleet) -> None:
    fleet.submit("tenant-a", 3)
    Queue(fleet.queue_name, connection=fleet.redis).empty()  # type: ignore[no-untyped-call]
    a_jobs = fleet.submit("tenant-a", 3)
    (b_job,) = fleet.submit("tenant-b", 1)
    assert fleet.queued_ids() == [a_jobs[0], a_jobs[1], b_job, a_jobs[2]]


def test_a_cancelled_pivot_does_not_lose_the_next_job(fleet: Fleet) -> None:
    a_jobs = fleet.submit("tenant-a", 4)
    (b_first,) = fleet.submit("tenant-b", 1)  # after A's round-2 job
    fleet.client("tenant-b").cancel(b_first)  # the last job of round 2 is gone
    (c_job,) = fleet.submit("tenant-c", 1)
    queued = fleet.queued_ids()
    assert b_first not in queued and c_job in queued and set(a_jobs) <= set(queued)
    assert queued.index(c_job) <= 2


def test_a_job_put_back_at_the_head_does_not_turn_the_rounds_back(fleet: Fleet) -> None:
    """A lost worker's retry, a stranded job or RQ's requeue puts a job back at the head with the
    round of its first placing: the round being served must not go back to it, or a newcomer would
    find no round to join and go to the tail."""
    a_jobs = fleet.submit("tenant-a", 10)  # rounds 1..10
    queue_key = Queue(fleet.queue_name, connection=fleet.redis).key
    taken = [fleet.redis.lpop(queue_key) for _ in range(5)]  # workers took A's rounds 1..5
    (x_job,) = fleet.submit("tenant-x", 1)  # round 7: the head is A's round 6
    fleet.redis.lpush(queue_key, a_jobs[2])  # A's round-3 job back at the head (e.g. its worker was lost)
    (b_job,) = fleet.submit("tenant-b", 1)
    queued = fleet.queued_ids()
    assert taken[2] == a_jobs[2].encode() and len(queued) == 8
    # behind the put-back job, A's round-6 and round-7 jobs and X's: not at the tail
    assert queued.index(b_job) == queued.index(x_job) + 1 == 4


def test_without_fair_queueing_the_order_is_rqs_fifo(own_redis: PrivateRedis) -> None:
    """The layer's own check: with it off, B's job waits behind A's whole backlog."""
    plain = Fleet(own_redis.url, fair=False)
    try:
        a_jobs = plain.submit("tenant-a", 50)
        (b_job,) = plain.submit("tenant-b", 1)
        assert plain.queued_ids() == [*a_jobs, b_job]
    finally:
        plain.close()


@pytest.mark.slow
def test_a_worker_runs_the_newcomers_job_before_the_backlog(fleet: Fleet, tmp_path: Path) -> None:
    backlog = fleet.submit("tenant-a", 200)
    (b_job,) = fleet.submit("tenant-b", 1)
    worker = start_worker(
        fleet.redis_url, fleet.address, tmp_path / "worker.log", {"SCRIPTPOOL_QUEUE": fleet.queue_name}
    )
    try:
        done = fleet.client("tenant-b").wait(b_job, timeout=120)
        assert outcome(done) is Outcome.OK
        a = fleet.client("tenant-a")
        records = [a.get_job(job_id) for job_id in backlog]
        started_before_b = [job.id for job in records if 0 < job.started_at < done.started_at]
        assert len(started_before_b) <= 2, started_before_b  # A's round-1 and round-2 jobs at most
    finally:
        stop_process(worker)
