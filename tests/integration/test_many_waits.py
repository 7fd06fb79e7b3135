"""No call can starve the others: a thousand calls waiting at once on one coordinator leave every
other call its threads (issue 14). Before, each waiting call held one of the server's 128 threads:
300 waits made another client's GetJob take 23 s and a running job's first global call time out.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc
from tests.conftest import CLI, stop_process, wait_for

from .helpers import next_event, outcome, result_of, subscribe

PRINCIPALS = 4
WAITS_EACH = 250  # 1,000 in all, under the default per-principal budget (256) and the total (1024)
CALLS = 200

GLOBAL_CALLS_LUA = """
local go = Event.subscribe(INPUT.go)
Event.emit(INPUT.ready, {})
repeat local released = Event.receive(go, 3000) until released
local total = 0
for i = 1, INPUT.calls do
  State.set("n", i)
  total = total + State.get("n")
end
return total
"""
"""Says it is running, waits until released, then makes 2 x `calls` global calls."""


@pytest.fixture
def coordinator_and_worker(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[tuple[RunningCoordinator, str]]:
    """A coordinator with the default thread and wait budgets, and one worker, on a queue of their own."""
    queue = f"waits-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=queue, max_wait_seconds=600)
    coordinator = start_coordinator(settings)
    address = f"127.0.0.1:{coordinator.port}"
    env = {**os.environ, "REDIS_URL": redis_server.url, "SCRIPTPOOL_COORDINATOR": address, "SCRIPTPOOL_QUEUE": queue}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([*CLI, "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    try:
        yield coordinator, address
    finally:
        stop_process(worker)
        coordinator.stop(grace=0)


def test_a_thousand_waits_leave_other_calls_and_running_jobs_their_threads(
    coordinator_and_worker: tuple[RunningCoordinator, str],
) -> None:
    coordinator, address = coordinator_and_worker
    waiting = coordinator.waiting
    assert waiting is not None
    keys = {f"w{i}-{uuid.uuid4().hex[:8]}": "" for i in range(PRINCIPALS + 2)}
    for principal in keys:
        keys[principal] = coordinator.auth.create_api_key(principal)
    owner, *waiters, bystander = keys

    with ScriptpoolClient(address, keys[owner]) as owner_client:
        # The one worker runs a job of `owner` that makes global calls once released.
        tag = uuid.uuid4().hex
        ready = subscribe(owner_client, f"ready.{tag}")
        busy = owner_client.submit(
            Language.LUA, GLOBAL_CALLS_LUA, inputs={"ready": f"ready.{tag}", "go": f"go.{tag}", "calls": CALLS}
        )
        assert next_event(owner_client, ready) is not None, "the job did not start"

        # Each other principal queues a job (behind the busy one) and waits for it 250 times over.
        channels = [grpc.insecure_channel(address) for _ in waiters]
        try:
            futures: list[grpc.Future[jobs_pb2.WaitJobResponse]] = []
            queued: dict[str, str] = {}
            for principal, channel in zip(waiters, channels, strict=True):
                metadata = (("authorization", f"Bearer {keys[principal]}"),)
                jobs = jobs_pb2_grpc.JobServiceStub(channel)
                request = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 'done'")
                queued[principal] = job_id = jobs.SubmitJob(request, metadata=metadata, timeout=10).job.id
                wait = jobs_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=600)
                futures += [jobs.WaitJob.future(wait, metadata=metadata) for _ in range(WAITS_EACH)]
            # The handshake: the coordinator holds every one of them.
            assert wait_for(lambda: all(waiting.held_by(p) == WAITS_EACH for p in waiters), timeout=60), [
                waiting.held_by(p) for p in waiters
            ]
            assert not any(future.done() for future in futures)

            # A principal's budget has an edge: it fills up to 256, and the next wait is refused at once.
            first, channel = waiters[0], channels[0]
            metadata = (("authorization", f"Bearer {keys[first]}"),)
            jobs = jobs_pb2_grpc.JobServiceStub(channel)
            wait = jobs_pb2.WaitJobRequest(job_id=queued[first], timeout_seconds=600)
            room = waiting.per_principal - WAITS_EACH
            futures += [jobs.WaitJob.future(wait, metadata=metadata) for _ in range(room)]
            assert wait_for(lambda: waiting.held_by(first) == waiting.per_principal, timeout=30)
            with pytest.raises(grpc.RpcError) as refused:
                jobs.WaitJob(wait, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_waiting_calls_per_principal 256" in str(refused.value.details())

            # Another client's calls are answered (each well inside a 10 s deadline) ...
            with ScriptpoolClient(address, keys[bystander], timeout=10) as other:
                for _ in range(20):
                    mine = other.submit(Language.LUA, "return 1")
                    assert other.get_job(mine.id).id == mine.id
            # ... and the running job's 400 global calls are too: it finishes ok, inside its wall time.
            owner_client.events.emit(events_pb2.EmitEventRequest(name=f"go.{tag}"))
            done = owner_client.wait(busy.id, timeout=120)
            assert outcome(done) is Outcome.OK, done.result.message
            assert result_of(done) == CALLS * (CALLS + 1) // 2

            # Then the queued jobs run, and every one of the waits answers: finished, ok.
            answers = [future.result(timeout=120) for future in futures]
            assert all(answer.finished for answer in answers)
            assert {answer.job.id for answer in answers} == set(queued.values())
            assert all(outcome(answer.job) is Outcome.OK for answer in answers)
            assert wait_for(lambda: waiting.taken == 0)
        finally:
            for channel in channels:
                channel.close()
