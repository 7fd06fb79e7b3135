"""`scriptpool worker --processes N` (issue 17 item 6) with real worker processes, a real coordinator
and a real Redis: N workers serve jobs, each with its own SCRIPTPOOL_WORKER_INDEX; a killed worker is
started again; the first SIGTERM drains (a running job finishes, exit 0); a second SIGTERM, or the
grace period running out, kills the workers (exit 1); `--burst` exits once the queue is empty; bad
flags are one line and exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.workers.pool import WORKER_INDEX_VARIABLE
from tests.conftest import CLI, Stack, wait_for
from tests.integration.helpers import outcome, result_of, run_lua, submit_held
from tests.integration.up_process import alive, children_of, descendants

START_SECONDS = 90  # a worker warms its engines and starts its zygote before it registers


@dataclass
class OwnQueue:
    """A coordinator of its own on a queue only the test's pool serves."""

    client: ScriptpoolClient
    name: str
    address: str
    redis_url: str


@pytest.fixture
def own_queue(stack: Stack) -> Iterator[OwnQueue]:
    name = f"scriptpool-pool-{uuid.uuid4().hex[:8]}"
    running: RunningCoordinator = start_coordinator(
        Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=name, max_wait_seconds=30)
    )
    address = f"127.0.0.1:{running.port}"
    try:
        with ScriptpoolClient(address, running.auth.create_api_key("pool")) as client:
            yield OwnQueue(client, name, address, stack.redis_url)
    finally:
        running.stop(grace=0)


class Pool:
    """A `scriptpool worker --processes N ...` process, its log, and a teardown that leaves nothing."""

    def __init__(self, queue: OwnQueue, log: Path, *flags: str) -> None:
        self.queue = queue
        self.log = log
        env = {
            **os.environ,
            "REDIS_URL": queue.redis_url,
            "SCRIPTPOOL_COORDINATOR": queue.address,
            "SCRIPTPOOL_QUEUE": queue.name,
        }
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [*CLI, "worker", *flags],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        self.seen: set[int] = set()

    def workers(self) -> dict[int, int]:
        """Live worker pid -> its SCRIPTPOOL_WORKER_INDEX."""
        found = {}
        for pid in children_of(self.process.pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for entry in environ:
                if entry.startswith(WORKER_INDEX_VARIABLE.encode() + b"="):
                    found[pid] = int(entry.split(b"=", 1)[1])
        self.seen |= descendants(self.process.pid)
        return found

    def registered(self) -> int:
        with Redis.from_url(self.queue.redis_url) as redis:
            return len(Worker.all(queue=Queue(self.queue.name, connection=redis)))

    def wait_ready(self, count: int) -> dict[int, int]:
        assert wait_for(lambda: self.registered() == count and len(self.workers()) == count, timeout=START_SECONDS), (
            self.log.read_text()
        )
        return self.workers()

    def exit_code(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        self.workers()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not any(alive(pid) for pid in self.seen), timeout=30)


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[list[Pool]]:
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.close()


def _start(pools: list[Pool], queue: OwnQueue, tmp_path: Path, *flags: str) -> Pool:
    pool = Pool(queue, tmp_path / f"pool{len(pools)}.log", *flags)
    pools.append(pool)
    return pool


@pytest.mark.slow
def test_n_workers_serve_jobs_each_with_its_own_index(own_queue: OwnQueue, pools: list[Pool], tmp_path: Path) -> None:
    pool = _start(pools, own_queue, tmp_path, "--processes", "2")
    assert sorted(pool.wait_ready(2).values()) == [0, 1]
    first, second = submit_held(own_queue.client, 1), submit_held(own_queue.client, 2)
    first.wait_running()
    second.wait_running()  # both at once: two workers are serving
    running_on = {own_queue.client.get_job(held.job.id).worker for held in (first, second)}
    assert len(running_on) == 2
    first.release()
    second.release()
    assert result_of(own_queue.client.wait(first.job.id, timeout=60)) == 1
    assert result_of(own_queue.client.wait(second.job.id, timeout=60)) == 2


@pytest.mark.slow
def test_a_killed_worker_is_started_again_with_its_index(
    own_queue: OwnQueue, pools: list[Pool], tmp_path: Path
) -> None:
    pool = _start(pools, own_queue, tmp_path, "--processes", "2")
    before = pool.wait_ready(2)
    victim = next(pid for pid, index in before.items() if index == 1)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(
        lambda: any(pid not in before and index == 1 for pid, index in pool.workers().items()), timeout=START_SECONDS
    ), pool.log.read_text()
    assert pool.process.poll() is None
    assert "worker 1 (pid" in pool.log.read_text() and "starting it again" in pool.log.read_text()
    assert result_of(run_lua(own_queue.client, "return 6 * 7")) == 42
    for _ in range(4):  # every worker serves, the new one too
        assert result_of(run_lua(own_queue.client, "return 1")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_drains_a_running_job_and_exits_0(
    first: signal.Signals, own_queue: OwnQueue, pools: list[Pool], tmp_path: Path
) -> None:
    pool = _start(pools, own_queue, tmp_path, "--processes", "2", "--grace", "120")
    pool.wait_ready(2)
    held = submit_held(own_queue.client, "drained")
    held.wait_running()
    pool.process.send_signal(first)
    assert wait_for(lambda: len(pool.workers()) == 1, timeout=60), pool.log.read_text()  # the idle one stopped
    assert pool.process.poll() is None  # ... and the pool waits for the busy one
    held.release()
    assert pool.exit_code() == 0, pool.log.read_text()
    assert result_of(own_queue.client.wait(held.job.id, timeout=30)) == "drained"
    assert not pool.workers()


@pytest.mark.slow
def test_second_sigterm_kills_the_workers_and_exits_1(own_queue: OwnQueue, pools: list[Pool], tmp_path: Path) -> None:
    pool = _start(pools, own_queue, tmp_path, "--processes", "2", "--grace", "120")
    pool.wait_ready(2)
    held = submit_held(own_queue.client)
    held.wait_running()
    started = descendants(pool.process.pid)
    pool.process.send_signal(signal.SIGTERM)
    assert wait_for(lambda: len(pool.workers()) == 1, timeout=60), pool.log.read_text()
    pool.process.send_signal(signal.SIGTERM)
    assert pool.exit_code() == 1, pool.log.read_text()
    assert wait_for(lambda: not any(alive(pid) for pid in started), timeout=30)
    assert "second signal" in pool.log.read_text()


@pytest.mark.slow
def test_grace_period_over_kills_the_workers_and_exits_1(
    own_queue: OwnQueue, pools: list[Pool], tmp_path: Path
) -> None:
    pool = _start(pools, own_queue, tmp_path, "--processes", "1", "--grace", "1")
    pool.wait_ready(1)
    held = submit_held(own_queue.client)
    held.wait_running()  # never released: only the grace period ends it
    pool.process.send_signal(signal.SIGTERM)
    assert pool.exit_code() == 1, pool.log.read_text()
    assert "grace period (1s) over" in pool.log.read_text()


@pytest.mark.slow
def test_burst_pool_exits_0_once_the_queue_is_empty(own_queue: OwnQueue, pools: list[Pool], tmp_path: Path) -> None:
    jobs = [own_queue.client.submit(Language.LUA, f"return {n}") for n in range(5)]
    pool = _start(pools, own_queue, tmp_path, "--processes", "2", "--burst")
    assert pool.exit_code(timeout=START_SECONDS) == 0, pool.log.read_text()
    for n, job in enumerate(jobs):
        done = own_queue.client.wait(job.id, timeout=5)
        assert outcome(done) is Outcome.OK and result_of(done) == n
    with Redis.from_url(own_queue.redis_url) as redis:
        assert Queue(own_queue.name, connection=redis).count == 0


@pytest.mark.slow
def test_pool_on_several_queues_serves_each(own_queue: OwnQueue, pools: list[Pool], tmp_path: Path) -> None:
    """`--queues` names the queues; the coordinator's queue among them is served."""
    pool = _start(
        pools, own_queue, tmp_path, "--processes", "1", "--queues", f"other-{own_queue.name},{own_queue.name}"
    )
    pool.wait_ready(1)
    with Redis.from_url(own_queue.redis_url) as redis:
        (worker,) = Worker.all(queue=Queue(own_queue.name, connection=redis))
        assert worker.queue_names() == [f"other-{own_queue.name}", own_queue.name]
    assert result_of(run_lua(own_queue.client, "return 'served'")) == "served"


BAD_FLAGS = [
    ["--processes", "0"],
    ["--processes", "-2"],
    ["--processes", "two"],
    ["--processes", "100000"],
    ["--processes", "2", "--grace", "-1"],
    ["--processes", "2", "--grace", "nan"],
    ["--processes", "2", "--grace", "inf"],
    ["--processes", "2", "--grace", "100000"],
    ["--processes", "2", "--queues", ","],
    ["--processes", "2", "--queues", "a,a"],
    ["--processes", "2", "--name", "w"],
    ["--processes", "2", "--check"],
    ["--grace", "5"],
    ["--processes", "2", "--bogus"],
    ["--bogus", "--processes", "2"],
]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=" ".join)
def test_bad_pool_flags_are_one_line_and_exit_2(flags: list[str], stack: Stack) -> None:
    env = {**os.environ, "REDIS_URL": stack.redis_url}
    done = subprocess.run([*CLI, "worker", *flags], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: INVALID_ARGUMENT: "), done.stderr
