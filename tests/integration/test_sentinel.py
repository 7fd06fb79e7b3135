"""Redis Sentinel (issue 19 item 3): a coordinator, a worker and the CLI on a `redis+sentinel://` URL
follow the primary through a failover, and `SCRIPTPOOL_ACK_REPLICAS` makes acknowledgements wait for
replicas.

Everything is real: a primary, a replica and three sentinels (`tests/integration/sentinels.py`), the
coordinator's gRPC server, a worker process, the `scriptpool apikey` command. The primary is SIGKILLed
while a thread keeps submitting jobs; every job whose submission was answered must end exactly once
(`ok`, or `worker_lost` if its worker's lease lapsed), and submissions made after the failover must
run, with nothing restarted by hand.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.durability import NO_REPLICA_ACK, ReplicaAck
from scriptpool.core.keys import FINISHED_CHANNEL
from scriptpool.core.lean_redis import LeanConnection, LeanPool, master_at, read, transaction
from scriptpool.core.redis_connect import connect
from scriptpool.core.redis_urls import open_client
from scriptpool.errors import InvalidArgument, ScriptpoolError, Unavailable
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from tests.conftest import CLI, TEST_QUEUE, WORKER_COMMAND, stop_process, wait_for

from .helpers import HeldJob, next_event, outcome, result_of, subscribe
from .sentinels import HOST, SentinelGroup, free_port

DOUBLE = "local t = 0 for i = 1, 20000 do t = t + 1 end return INPUT.n * 2"
"""A job that takes a moment (so some are running when the primary dies) and checks its input."""
LEASE_SECONDS = 5.0
"""Short leases (and stranded-job delay), so a job lost with its start ends soon."""


HELD_THROUGH_OUTAGES = """
local go = Event.subscribe(INPUT.go)
Event.emit(INPUT.ready, {})
repeat local reachable, released = pcall(Event.receive, go, 3000) until reachable and released
return INPUT.result
"""
"""`HELD_LUA`, except that a call failing while Redis fails over is tried again."""


def submit_held_through_outages(client: ScriptpoolClient) -> HeldJob:
    tag = uuid.uuid4().hex
    ready, go = f"held.ready.{tag}", f"held.go.{tag}"
    subscription = subscribe(client, ready)
    inputs = {"ready": ready, "go": go, "result": "released"}
    job = client.submit(Language.LUA, HELD_THROUGH_OUTAGES, inputs=inputs, limits={"wall_time_ms": 180_000})
    held = HeldJob(client, job, subscription, go)
    held.wait_running()
    return held


class SentinelStack:
    """A Sentinel group, an in-process coordinator and worker processes, all on the group's URL."""

    def __init__(self, tmp_path: Path, ack: ReplicaAck = NO_REPLICA_ACK, workers: int = 1) -> None:
        self.group = SentinelGroup(tmp_path / "redis").start()
        self.coordinator: RunningCoordinator | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        try:
            settings = Settings(
                redis_url=self.group.url,
                listen="127.0.0.1:0",
                queue=TEST_QUEUE,
                max_wait_seconds=30,
                ack_replicas=ack,
                lease_seconds=LEASE_SECONDS,
                stranded_after_seconds=LEASE_SECONDS,
            )
            self.coordinator = start_coordinator(settings)
            self.address = f"127.0.0.1:{self.coordinator.port}"
            self.worker_logs = [tmp_path / f"worker{i}.log" for i in range(workers)]
            env = {
                **os.environ,
                "REDIS_URL": self.group.url,
                "SCRIPTPOOL_COORDINATOR": self.address,
                "SCRIPTPOOL_QUEUE": TEST_QUEUE,
                "SCRIPTPOOL_ACK_REPLICAS": str(ack.replicas),
                "SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS": str(ack.timeout_ms),
                "SCRIPTPOOL_LEASE_SECONDS": str(LEASE_SECONDS),
            }
            for path in self.worker_logs:
                with open(path, "wb") as log:
                    self.workers.append(subprocess.Popen(
                        WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        process_group=0, cwd=tmp_path,
                    ))  # fmt: skip
            self.key = self.api_key_from_cli("sentinel-test")
        except BaseException:
            self.stop()
            raise

    def api_key_from_cli(self, principal: str) -> str:
        """`scriptpool apikey create` on the Sentinel URL (the CLI builds its connection the same way)."""
        done = subprocess.run(
            [*CLI, "apikey", "create", principal],
            env={**os.environ, "REDIS_URL": self.group.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, reconnect_seconds: float = 60.0) -> ScriptpoolClient:
        return ScriptpoolClient(self.address, self.key, reconnect_seconds=reconnect_seconds)

    def worker_log_tails(self) -> str:
        return "\n".join(path.read_text()[-3000:] for path in self.worker_logs)

    def stop(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        if self.coordinator is not None:
            self.coordinator.stop(grace=1)
        self.group.stop()


@pytest.fixture
def sentinel_stack(tmp_path: Path) -> Iterator[SentinelStack]:
    stack = SentinelStack(tmp_path, workers=2)  # one holds a job across the failover, one runs the rest
    yield stack
    stack.stop()


class Submitter(threading.Thread):
    """Submits jobs one after another until stopped; keeps the ids of the answered submissions."""

    def __init__(self, client: ScriptpoolClient) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = client
        self.accepted: list[tuple[str, int]] = []
        self.errors: list[ScriptpoolError] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                job = self.client.submit(Language.LUA, DOUBLE, inputs={"n": n})
            except ScriptpoolError as exc:  # the SDK already sent it again for 60 s
                self.errors.append(exc)
                continue
            self.accepted.append((job.id, n))

    def count(self) -> int:
        return len(self.accepted)


@pytest.mark.timeout(300)
def test_jobs_flow_through_a_failover_and_each_ends_once(sentinel_stack: SentinelStack) -> None:
    stack = sentinel_stack
    with stack.client() as client:
        first = client.run(Language.LUA, DOUBLE, inputs={"n": 21}, timeout=60)
        assert result_of(first) == 42

        # A job blocked in a global call (Event.receive: XREAD BLOCK at the coordinator) across the
        # failover, and a client subscription made before it.
        held = submit_held_through_outages(client)
        after = subscribe(client, "sentinel.after.*")

        submitter = Submitter(client)
        submitter.start()
        try:
            assert wait_for(lambda: submitter.count() >= 30, timeout=60), "jobs were not flowing before the kill"
            old = stack.group.kill_primary()
            killed_at = submitter.count()
            new = stack.group.wait_for_failover(old)
            assert new != old
            # The coordinator's job-finished listener subscribed again, on the new primary.
            assert wait_for(lambda: stack.group.ask_node(new, "PUBSUB", "NUMSUB", FINISHED_CHANNEL)[1] >= 1, 30)
            held.release()  # the held job's wait went on through the failover
            assert result_of(client.wait(held.job.id, timeout=60)) == "released"
            # New submissions succeed once the coordinator and the worker found the new primary.
            assert wait_for(lambda: submitter.count() >= killed_at + 30, timeout=120), (
                f"submissions stopped after the failover; errors: {submitter.errors[-3:]}\n" + stack.worker_log_tails()
            )
        finally:
            submitter.stopping.set()
            submitter.join(timeout=90)
        assert not submitter.is_alive()
        assert submitter.errors == []

        ids = [job_id for job_id, _ in submitter.accepted]
        assert len(set(ids)) == len(ids), "a submission was answered with another's job"
        outcomes: dict[str, Outcome] = {}
        for job_id, n in submitter.accepted:
            try:
                job = client.wait(job_id, timeout=60)  # NOT_FOUND here would be an acknowledged job lost
            except ScriptpoolError as exc:
                raise AssertionError(f"job {n} ({job_id}): {exc}\n{stack.worker_log_tails()}") from exc
            outcomes[job_id] = outcome(job)
            if outcomes[job_id] is Outcome.OK:
                assert result_of(job) == n * 2
            else:
                assert outcomes[job_id] is Outcome.WORKER_LOST, (job_id, outcomes[job_id], job.result.message)
        # Exactly one final outcome: read again, every job still says what it said.
        for job_id, seen in outcomes.items():
            assert outcome(client.get_job(job_id)) is seen
        after_failover = [job_id for job_id, _ in submitter.accepted[killed_at + 1 :]]
        assert after_failover and all(outcomes[job_id] is Outcome.OK for job_id in after_failover[-20:])
        assert result_of(client.run(Language.LUA, DOUBLE, inputs={"n": 5}, timeout=60)) == 10
        client.run(Language.LUA, 'Event.emit("sentinel.after.1", {n = 1}) return 1', timeout=60)
        event = next_event(client, after)
        assert event is not None and event.name == "sentinel.after.1"
        assert all(worker.poll() is None for worker in stack.workers), stack.worker_log_tails()


def test_bad_sentinel_urls_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for url in (
        "redis+sentinel://127.0.0.1:26379",  # no service
        "redis+sentinel://127.0.0.1:99999/mymaster",  # port out of range
        "redis+sentinel://127.0.0.1:26379/mymaster/zero",  # db not a number
        "redis+sentinel://:secret@127.0.0.1:26379/mymaster?sentinel_pasword=x",  # unknown parameter
    ):
        done = subprocess.run(
            [*CLI, "apikey", "create", "p"],
            env={**os.environ, "REDIS_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (url, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "bad Redis URL" in lines[0], (url, done.stderr)
        assert "secret" not in done.stderr


def test_ack_replicas_waits_for_the_replica_and_fails_clearly_without_it(tmp_path: Path) -> None:
    stack = SentinelStack(tmp_path, ReplicaAck(replicas=1, timeout_ms=500))
    try:
        with stack.client(reconnect_seconds=0) as client:
            # With the replica up, submissions are acknowledged and results recorded (both WAIT 1).
            job = client.run(Language.LUA, DOUBLE, inputs={"n": 4}, timeout=60)
            assert result_of(job) == 8
            replica = next(port for port in stack.group.nodes if port != stack.group.primary_port())
            stack.group.stop_node(replica)
            # Replication is asynchronous: without the replica the primary still takes the write,
            # but the submission is not acknowledged as safe.
            with pytest.raises(Unavailable) as refused:
                client.submit(Language.LUA, DOUBLE, inputs={"n": 5})
            message = str(refused.value)
            assert "only 0 of the 1 replicas SCRIPTPOOL_ACK_REPLICAS asks for" in message, message
            assert "may be lost" in message
            # That job is on the primary all the same, and runs; its result is recorded there and the
            # worker says the replicas did not confirm it (and goes on).
            shortfall = "job ends not confirmed by enough replicas: the end of job"
            assert wait_for(lambda: shortfall in stack.worker_logs[0].read_text(), timeout=60), stack.worker_log_tails()
            # The replica back: acknowledged again.
            stack.group.start_node(replica_of=stack.group.primary_port(), port=replica)
            assert result_of(client.run(Language.LUA, DOUBLE, inputs={"n": 6}, timeout=60)) == 12
            assert wait_for(lambda: "job ends not confirmed by enough replicas: over" in stack.worker_log_tails(), 30)
    finally:
        stack.stop()


def test_ack_replicas_needs_a_lean_connection() -> None:
    """A TLS URL cannot carry the WAIT on the write's own connection: refused at start."""
    redis = open_client("rediss://127.0.0.1:1/0")
    try:
        with pytest.raises(InvalidArgument, match="SCRIPTPOOL_ACK_REPLICAS needs a redis://, unix:// or redis"):
            LeanPool(redis, ReplicaAck(replicas=1))
    finally:
        redis.close()


def test_the_data_nodes_password_and_the_sentinels_password_go_where_the_url_says(tmp_path: Path) -> None:
    with SentinelGroup(tmp_path, password="datapw", sentinel_password="sentpw") as group:
        redis = connect(group.url)
        lean = LeanPool(redis)
        try:
            assert transaction(lean, [("SET", "k", "v")]) == [b"OK"]
            assert read(lean, "GET", "k") == b"v" and redis.get("k") == b"v"
        finally:
            lean.close()
            redis.close()
        hosts = group.url.split("@", 1)[1].split("?", 1)[0]
        for url, says in (
            (f"redis+sentinel://{hosts}?sentinel_password=sentpw", "refused the connection"),  # no data password
            (f"redis+sentinel://:datapw@{hosts}", "Redis Sentinel at"),  # no sentinel password
            (f"redis+sentinel://:wrong@{hosts}?sentinel_password=sentpw", "refused the connection"),
        ):
            done = subprocess.run(
                [*CLI, "apikey", "create", "p"],
                env={**os.environ, "REDIS_URL": url},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2, (url, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and says in lines[0], (url, done.stderr)
            assert "datapw" not in done.stderr and "sentpw" not in done.stderr and "wrong" not in done.stderr


def test_sentinels_out_of_reach_are_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"redis+sentinel://:datapw@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster"
    done = subprocess.run(
        [*CLI, "apikey", "create", "p"],
        env={**os.environ, "REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no primary from the sentinels" in lines[0], done.stderr
    assert lines[0].count("Connection refused") == 2 and "datapw" not in lines[0], done.stderr


def test_a_demoted_primary_is_left_for_the_new_one(tmp_path: Path) -> None:
    """`SENTINEL FAILOVER` demotes a live primary: the lean connections find the new primary, and
    a lean connection to the demoted node is refused by ROLE, and its writes by READONLY."""
    with SentinelGroup(tmp_path) as group:
        redis = connect(group.url)
        lean = LeanPool(redis)
        try:
            assert transaction(lean, [("SET", "k", "1")]) == [b"OK"]
            old = group.primary_port()
            assert old is not None
            group.ask_sentinel(next(iter(group.sentinels)), "SENTINEL", "FAILOVER", group.service)
            new = group.wait_for_failover(old)
            assert wait_for(lambda: group.ask_node(old, "ROLE")[0] == b"slave", timeout=30)

            def written() -> bool:
                try:
                    transaction(lean, [("SET", "k", "2")])
                    return True
                except RedisConnectionError:  # (the sentinels closed clients of the demoted node)
                    return False

            assert wait_for(written, timeout=30)
            assert group.ask_node(new, "GET", "k") == b"2" and redis.get("k") == b"2"
            node = {"host": HOST, "port": old}
            with pytest.raises(RedisConnectionError, match="is a slave"):
                master_at((HOST, old), {})
            replica = LeanConnection(node, unix=False)
            try:
                with pytest.raises(RedisConnectionError, match="no longer the primary"):
                    replica.call("SET", "k", "3")
            finally:
                replica.close()
        finally:
            lean.close()
            redis.close()
