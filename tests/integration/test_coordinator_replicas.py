"""Two coordinators on different ports, sharing one Redis, are one service (issue 19 item 5): either
serves the sessions, artifacts, state, events and jobs the other wrote; a client may switch between
them mid-job; a cancel on one ends the job's credential on the other (whose cache held it); and
killing one (SIGKILL) leaves the other serving: its waiters, its sweeper and new jobs.

Each coordinator is a real `scriptpool coordinator` process; the worker's global calls go to B.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import artifacts_pb2, events_pb2, jobs_pb2, sessions_pb2, sessions_pb2_grpc
from scriptpool.values import from_value
from tests.conftest import CLI, stop_process
from tests.integration.helpers import next_event, outcome, result_of, submit_held, subscribe
from tests.integration.up_process import free_port

LEASE_SECONDS = "2"


@dataclass
class Replicas:
    redis_url: str
    a: str
    b: str
    processes: dict[str, subprocess.Popen[bytes]]
    key: str
    queue: str
    env: dict[str, str]
    logs: Path

    def client(self, address: str) -> ScriptpoolClient:
        return ScriptpoolClient(address, self.key)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "SCRIPTPOOL_COORDINATOR": self.b, "SCRIPTPOOL_WORKER_NAME": f"{name}-{uuid.uuid4().hex[:6]}"}
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                die_with_parent([*CLI, "worker"]), env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )
        self.processes[name] = proc
        return proc


@pytest.fixture
def replicas(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Replicas]:
    queue = f"replicas-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_")},
        "REDIS_URL": redis_server.url,
        "SCRIPTPOOL_QUEUE": queue,
        "SCRIPTPOOL_LEASE_SECONDS": LEASE_SECONDS,
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("a", "b")}
    try:
        for name, address in addresses.items():
            with open(tmp_path / f"coordinator-{name}.log", "ab") as log:
                processes[name] = subprocess.Popen(
                    die_with_parent([*CLI, "coordinator", "--listen", address]),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
            wait_until_serving(address, process=processes[name])
        redis = Redis.from_url(redis_server.url)
        key = Authenticator(redis).create_api_key(f"replicas-{uuid.uuid4().hex[:6]}")
        redis.close()
        pair = Replicas(redis_server.url, addresses["a"], addresses["b"], processes, key, queue, env, tmp_path)
        pair.start_worker("worker")
        yield pair
    finally:
        for proc in processes.values():
            stop_process(proc)


def test_either_replica_serves_what_the_other_wrote(replicas: Replicas) -> None:
    with replicas.client(replicas.a) as a, replicas.client(replicas.b) as b:
        session = a.create_session("shared", tags=["x"], metadata={"owner": "a"})
        assert b.get_session(session.id).name == "shared"
        assert session.id in [s.id for s in b.list_sessions().sessions]
        header = artifacts_pb2.StoreArtifactChunk(session_id=session.id, type="text")
        ref = b.store_artifact(header, [b"written through b"])
        assert b"".join(a.read_artifact_content(session.id, ref.id)) == b"written through b"
        job = a.run(
            Language.LUA,
            'State.set("session:current", "k", "from a job"); return State.get("session:current", "k")',
            session_id=session.id,
            timeout=60,
        )
        assert result_of(job) == "from a job"
        assert b.get_job(job.id).result == job.result


def test_a_client_switching_replicas_mid_job_sees_the_same_job(replicas: Replicas) -> None:
    with replicas.client(replicas.a) as a, replicas.client(replicas.b) as b:
        held = submit_held(a, {"answer": 42})  # submitted on A; its ready event reaches A's subscriber
        held.wait_running()
        assert b.get_job(held.job.id).status == jobs_pb2.JOB_STATUS_RUNNING
        b.events.emit(events_pb2.EmitEventRequest(name=held.go))  # released through B
        done_on_a = a.wait(held.job.id, timeout=60)
        assert result_of(done_on_a) == {"answer": 42}
        assert b.wait(held.job.id, timeout=5).result == done_on_a.result


def test_events_emitted_on_one_replica_reach_a_subscriber_on_the_other(replicas: Replicas) -> None:
    with replicas.client(replicas.a) as a, replicas.client(replicas.b) as b:
        topic = f"replica.{uuid.uuid4().hex}"
        subscription = subscribe(b, topic)
        a.events.emit(events_pb2.EmitEventRequest(name=topic))
        event = next_event(b, subscription)
        assert event is not None and event.name == topic


def _session_get(address: str, token: str, session_id: str) -> grpc.RpcError | sessions_pb2.Session:
    with grpc.insecure_channel(address) as channel:
        try:
            return sessions_pb2_grpc.SessionServiceStub(channel).Get(
                sessions_pb2.SessionRef(session_id=session_id),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
        except grpc.RpcError as exc:
            return exc


def test_a_cancel_on_one_replica_ends_the_credential_cached_by_the_other(replicas: Replicas) -> None:
    redis = Redis.from_url(replicas.redis_url)
    with replicas.client(replicas.a) as a:
        held = submit_held(a, 1)
        held.wait_running()
        credential = redis.hget(f"sp:job:{held.job.id}", "credential")
        assert isinstance(credential, bytes)
        token, session_id = credential.decode(), held.job.session_id
        for _ in range(3):  # used on B, so B has verified and cached it
            assert isinstance(_session_get(replicas.b, token, session_id), sessions_pb2.Session)
        a.cancel(held.job.id)
        assert outcome(a.wait(held.job.id, timeout=30)) is Outcome.CANCELLED
    redis.close()
    # The cancel's job-finished message travels Redis -> B's listener; allow it a moment, never more.
    refused_within = time.monotonic() + 1.0
    answer = _session_get(replicas.b, token, session_id)
    while not isinstance(answer, grpc.RpcError) and time.monotonic() < refused_within:
        time.sleep(0.01)
        answer = _session_get(replicas.b, token, session_id)
    assert isinstance(answer, grpc.RpcError) and answer.code() is grpc.StatusCode.UNAUTHENTICATED


def test_killing_one_replica_leaves_the_other_serving(replicas: Replicas) -> None:
    with replicas.client(replicas.a) as a, replicas.client(replicas.b) as b:
        held = submit_held(a, "after a died")
        held.wait_running()
        waited: list[jobs_pb2.Job] = []
        waiter = threading.Thread(target=lambda: waited.append(b.wait(held.job.id, timeout=60)))
        waiter.start()  # a waiter on B, for a job submitted on A

        os.killpg(replicas.processes["a"].pid, signal.SIGKILL)
        assert replicas.processes["a"].wait() == -signal.SIGKILL  # A is gone

        b.events.emit(events_pb2.EmitEventRequest(name=held.go))
        waiter.join(timeout=90)
        assert waited and result_of(waited[0]) == "after a died"

        # B's sweeper finishes a job whose worker died (A's sweeper is gone with A).
        lost = submit_held(b, "never")
        lost.wait_running()
        worker = replicas.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert outcome(b.wait(lost.job.id, timeout=60)) is Outcome.WORKER_LOST

        # And B keeps taking new jobs, for a new worker.
        replicas.start_worker("worker-2")
        job = b.run(Language.LUA, "return 'still serving'", timeout=60)
        assert result_of(job) == "still serving" and from_value(job.result.result) == "still serving"


def test_two_live_sweepers_finish_a_lost_job_once(replicas: Replicas) -> None:
    """Both coordinators sweep: a job whose worker died is finished by one of them, once."""
    with replicas.client(replicas.b) as b:
        lost = submit_held(b, "never")
        lost.wait_running()
        worker = replicas.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        done = b.wait(lost.job.id, timeout=60)
        assert outcome(done) is Outcome.WORKER_LOST
        timeline = b.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=done.session_id))
        finished = [e.description for e in timeline.entries if e.description.startswith(f"job {lost.job.id} finished")]
        assert finished == [f"job {lost.job.id} finished: worker_lost"]
