"""The lean RQ worker (`workers/rq_compat/lean_rq.py`) leaves exactly the state RQ's own `SimpleWorker` leaves:
job statuses and fields, registries, results, worker counts, as RQ's API reads them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.command import send_shutdown_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.suspension import is_suspended, resume
from rq.worker import BaseWorker, Worker

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.outcomes import Outcome
from scriptpool.workers.rq_compat.lean_rq import LeanSimpleWorker
from tests.conftest import CLI, TEST_QUEUE, Stack, stop_process, wait_for

from .helpers import outcome, result_of, run_lua

JOBS = "tests.integration.lean_rq_jobs"


@pytest.fixture
def rq_redis(redis_server: PrivateRedis) -> Iterator[Redis]:
    """A database of its own (`rq:suspended` is per database), emptied before and after; the signal
    handlers RQ's `work()` installs in this process are put back."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    client = Redis.from_url(redis_server.url, db=7)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _run(worker_class: type[SimpleWorker], redis: Redis, queue: Queue, name: str) -> SimpleWorker:
    worker = worker_class([queue], connection=redis, name=name)
    worker.work(burst=True, logging_level="WARNING")
    return worker


def _worker(redis: Redis, name: str) -> BaseWorker:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=redis)
    assert worker is not None
    return worker


def test_a_finished_job_is_finished_in_rq_with_its_result(rq_redis: Redis) -> None:
    queue = Queue("lean-ok", connection=rq_redis)
    job = queue.enqueue(f"{JOBS}.value", {"answer": 42}, result_ttl=600)
    _run(LeanSimpleWorker, rq_redis, queue, "lean-ok-worker")

    fetched = Job.fetch(job.id, connection=rq_redis)
    assert fetched.get_status() == JobStatus.FINISHED
    assert fetched.return_value() == {"answer": 42}
    result = fetched.latest_result()
    assert result is not None and result.type == result.Type.SUCCESSFUL
    assert result.worker_name == "lean-ok-worker"
    assert fetched.worker_name == "lean-ok-worker"
    assert fetched.started_at is not None and fetched.ended_at is not None and fetched.last_heartbeat is not None
    assert fetched.ended_at >= fetched.started_at
    assert 0 < rq_redis.ttl(fetched.key) <= 600
    assert job.id in FinishedJobRegistry("lean-ok", connection=rq_redis).get_job_ids()
    assert StartedJobRegistry("lean-ok", connection=rq_redis).get_job_ids() == []
    assert rq_redis.llen(queue.intermediate_queue_key) == 0
    assert queue.count == 0
    worker = _worker(rq_redis, "lean-ok-worker")
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 0)
    assert worker.total_working_time > 0


def test_while_a_job_runs_rq_sees_it_started_on_a_busy_worker(rq_redis: Redis) -> None:
    queue = Queue("lean-busy", connection=rq_redis)
    job = queue.enqueue(f"{JOBS}.observe", job_timeout=100)
    _run(LeanSimpleWorker, rq_redis, queue, "lean-busy-worker")

    seen = Job.fetch(job.id, connection=rq_redis).return_value()
    assert seen is not None
    assert seen["status"] == JobStatus.STARTED
    assert seen["started_registry"] == [job.id]
    assert seen["worker_state"] == "busy"
    assert seen["worker_current_job"] == job.id
    assert seen["job_ttl"] == -1  # persisted while it runs
    after = _worker(rq_redis, "lean-busy-worker")
    assert after.get_state() == "idle"  # the last state written before its death was recorded
    assert after.get_current_job_id() is None


class _StopRequestedAfterTheFinishingTransaction(LeanSimpleWorker):
    """A warm-shutdown signal arriving right after the finishing transaction, deterministically."""

    def handle_job_success(self, *args: Any, **kwargs: Any) -> None:
        super().handle_job_success(*args, **kwargs)
        self.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]


def test_a_warm_shutdown_just_after_a_job_finished_keeps_it_finished_and_stops(rq_redis: Redis) -> None:
    queue = Queue("lean-stop", connection=rq_redis)
    first = queue.enqueue(f"{JOBS}.value", 1)
    second = queue.enqueue(f"{JOBS}.value", 2)
    _run(_StopRequestedAfterTheFinishingTransaction, rq_redis, queue, "lean-stop-worker")

    assert Job.fetch(first.id, connection=rq_redis).get_status() == JobStatus.FINISHED
    assert first.id not in FailedJobRegistry("lean-stop", connection=rq_redis).get_job_ids()
    assert Job.fetch(second.id, connection=rq_redis).get_status() == JobStatus.QUEUED  # stopped after one
    worker = _worker(rq_redis, "lean-stop-worker")
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 0)


def test_a_failing_job_lands_in_rqs_failed_registry(rq_redis: Redis) -> None:
    queue = Queue("lean-fail", connection=rq_redis)
    failing = queue.enqueue(f"{JOBS}.fail", "boom")
    ok = queue.enqueue(f"{JOBS}.value", 1)
    _run(LeanSimpleWorker, rq_redis, queue, "lean-fail-worker")

    fetched = Job.fetch(failing.id, connection=rq_redis)
    assert fetched.get_status() == JobStatus.FAILED
    result = fetched.latest_result()
    assert result is not None and result.type == result.Type.FAILED
    assert result.exc_string is not None and "ValueError: boom" in result.exc_string
    assert failing.id in FailedJobRegistry("lean-fail", connection=rq_redis).get_job_ids()
    assert failing.id not in FinishedJobRegistry("lean-fail", connection=rq_redis).get_job_ids()
    assert StartedJobRegistry("lean-fail", connection=rq_redis).get_job_ids() == []
    # the worker goes on after a failure, and its next job finishes normally
    assert Job.fetch(ok.id, connection=rq_redis).get_status() == JobStatus.FINISHED
    worker = _worker(rq_redis, "lean-fail-worker")
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 1)


def test_a_live_worker_that_rq_stopped_listing_lists_itself_again_after_its_job(rq_redis: Redis) -> None:
    """The coordinator's sweeper unlists the worker of a job whose lease lapsed; one that was only
    paused is listed again by its next finishing transaction, its counts kept."""
    queue = Queue("lean-relist", connection=rq_redis)
    first = queue.enqueue(f"{JOBS}.value", 1)
    unlisted = queue.enqueue(f"{JOBS}.taken_for_dead")
    last = queue.enqueue(f"{JOBS}.observe")
    _run(LeanSimpleWorker, rq_redis, queue, "lean-relist-worker")

    for job in (first, unlisted, last):
        assert Job.fetch(job.id, connection=rq_redis).get_status() == JobStatus.FINISHED
    assert Job.fetch(unlisted.id, connection=rq_redis).return_value() is False  # RQ's list dropped it
    seen = Job.fetch(last.id, connection=rq_redis).return_value()
    assert seen is not None and seen["listed"] and seen["worker_state"] == "busy"  # listed again
    worker = _worker(rq_redis, "lean-relist-worker")
    assert worker.successful_job_count == 3


def test_a_dependent_job_is_enqueued_and_run_when_its_parent_finishes(rq_redis: Redis) -> None:
    queue = Queue("lean-deps", connection=rq_redis)
    parent = queue.enqueue(f"{JOBS}.value", "parent")
    child = queue.enqueue(f"{JOBS}.value", "child", depends_on=parent)
    assert child.get_status() == JobStatus.DEFERRED
    _run(LeanSimpleWorker, rq_redis, queue, "lean-deps-worker")

    assert Job.fetch(child.id, connection=rq_redis).get_status() == JobStatus.FINISHED
    assert Job.fetch(child.id, connection=rq_redis).return_value() == "child"


def test_rq_suspend_during_a_job_stops_the_worker_before_the_next_one(rq_redis: Redis) -> None:
    queue = Queue("lean-suspend", connection=rq_redis)
    first = queue.enqueue(f"{JOBS}.suspend_workers")
    second = queue.enqueue(f"{JOBS}.value", 2)
    try:
        _run(LeanSimpleWorker, rq_redis, queue, "lean-suspend-worker")  # burst + suspended: it exits
        assert is_suspended(rq_redis)
        assert Job.fetch(first.id, connection=rq_redis).get_status() == JobStatus.FINISHED
        assert Job.fetch(second.id, connection=rq_redis).get_status() == JobStatus.QUEUED
    finally:
        resume(rq_redis)
    _run(LeanSimpleWorker, rq_redis, queue, "lean-suspend-worker-2")
    assert Job.fetch(second.id, connection=rq_redis).get_status() == JobStatus.FINISHED


def _snapshot(redis: Any, jobs: list[Job]) -> dict[str, Any]:
    """Every key with its type, whether it expires, and (hashes) its field names and stable values;
    job ids replaced by the job's place in `jobs`, other ids and the worker's name by placeholders,
    so two runs compare."""
    names = {job.id.encode(): f"<job{i}>".encode() for i, job in enumerate(jobs)}
    uuid_like = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")

    def norm(raw: Any) -> str:
        text = uuid_like.sub(lambda m: names.get(m.group(0), b"<id>"), raw)
        return re.sub(r"(rq-|lean-)worker", "<worker>", text.decode(errors="replace"))

    stable = {b"status", b"origin", b"worker_name", b"state", b"successful_job_count", b"failed_job_count"}
    out: dict[str, Any] = {}
    for key in sorted(redis.keys("*")):
        kind = redis.type(key).decode()
        entry: dict[str, Any] = {"type": kind, "expires": redis.ttl(key) > 0}
        if kind == "hash":
            fields = redis.hgetall(key)
            entry["fields"] = sorted(f.decode() for f in fields)
            entry["values"] = {f.decode(): norm(v) for f, v in sorted(fields.items()) if f in stable}
        elif kind == "zset":
            entry["members"] = sorted(norm(m) for m in redis.zrange(key, 0, -1))
        elif kind in ("set", "list"):
            members = redis.smembers(key) if kind == "set" else redis.lrange(key, 0, -1)
            entry["members"] = sorted(norm(m) for m in members)
        elif kind == "stream":
            entry["entries"] = [sorted(f.decode() for f in fields) for _, fields in redis.xrange(key)]
        out[norm(key)] = entry
    return out


def test_it_leaves_exactly_the_keys_rqs_simple_worker_leaves(redis_server: PrivateRedis, rq_redis: Redis) -> None:
    snapshots = []
    for db, worker_class in ((8, SimpleWorker), (7, LeanSimpleWorker)):
        redis = Redis.from_url(redis_server.url, db=db)
        redis.flushdb()
        try:
            queue = Queue("compare", connection=redis)
            parent = queue.enqueue(f"{JOBS}.value", "a", result_ttl=600)
            jobs = [
                parent,
                queue.enqueue(f"{JOBS}.value", "b", depends_on=parent),
                queue.enqueue(f"{JOBS}.fail", "c"),
                queue.enqueue(f"{JOBS}.value", "d", result_ttl=0),
            ]
            prefix = "rq-worker" if worker_class is SimpleWorker else "lean-worker"
            _run(worker_class, redis, queue, prefix)
            snapshots.append(_snapshot(redis, jobs))
        finally:
            redis.flushdb()
            redis.close()
    rq_state, lean_state = snapshots
    assert any(entry.get("values", {}).get("status") == "finished" for entry in lean_state.values())
    assert lean_state == rq_state


def test_a_standalone_heartbeat_after_a_shorter_job_ttl_is_still_sent(rq_redis: Redis) -> None:
    queue = Queue("lean-heartbeat", connection=rq_redis)
    worker = LeanSimpleWorker([queue], connection=rq_redis, name="lean-heartbeat-worker")
    worker.register_birth()  # type: ignore[no-untyped-call]
    try:
        job = Job.fetch(queue.enqueue(f"{JOBS}.value", 1, job_timeout=30).id, connection=rq_redis)
        worker.prepare_execution(job)  # the start transaction gives the worker key the job's TTL
        assert rq_redis.ttl(worker.key) <= 30 + 60
        assert rq_redis.hget(worker.key, "state") == b"busy"
        assert Job.fetch(job.id, connection=rq_redis).get_status() == JobStatus.STARTED
        worker.heartbeat()  # idle again: the longer idle TTL must reach Redis
        assert rq_redis.ttl(worker.key) > worker.worker_ttl
        worker.set_state("idle")
        assert rq_redis.hget(worker.key, "state") == b"idle"
    finally:
        worker.teardown()  # its death, and its lean connection closed


def test_scriptpool_jobs_end_in_rq_as_they_ended_in_scriptpool(client: ScriptpoolClient, redis_client: Redis) -> None:
    ok = run_lua(client, "return 1")
    script_error = run_lua(client, "error('nope')")
    # ok: finished in RQ, with scriptpool's small return value as its result
    rq_ok = Job.fetch(ok.id, connection=redis_client)
    assert wait_for(lambda: rq_ok.get_status(refresh=True) == JobStatus.FINISHED)
    assert ok.id in FinishedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()
    assert ok.id not in StartedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()
    reported = Job.fetch(ok.id, connection=redis_client).return_value()
    assert reported is not None and reported["outcome"] == "ok"
    # not ok: failed in RQ (FailedJobRegistry, a failure result naming the outcome and message), not retried
    rq_failed = Job.fetch(script_error.id, connection=redis_client)
    assert wait_for(lambda: rq_failed.get_status(refresh=True) == JobStatus.FAILED)
    assert script_error.id in FailedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()
    assert script_error.id not in FinishedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()
    assert script_error.id not in StartedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()
    failure = rq_failed.latest_result()
    assert failure is not None and failure.type == failure.Type.FAILED
    assert failure.exc_string is not None and failure.exc_string.startswith("JobNotOk: script_error: ")
    assert "nope" in failure.exc_string and "Traceback" not in failure.exc_string
    assert rq_failed.retries_left is None and script_error.id not in Queue(TEST_QUEUE, connection=redis_client).job_ids
    worker = _worker(redis_client, str(rq_failed.worker_name))
    assert worker.failed_job_count >= 1
    assert worker.get_state() in ("idle", "busy")
    # scriptpool's own record and result are what they always were
    again = client.wait(script_error.id, timeout=10)
    assert outcome(again) is Outcome.SCRIPT_ERROR and again.result.message == script_error.result.message


def test_the_worker_stops_on_rqs_shutdown_command(stack: Stack, redis_client: Redis, tmp_path: Path) -> None:
    name = f"lean-shutdown-{os.getpid()}"
    env = {**os.environ, "REDIS_URL": stack.redis_url, "SCRIPTPOOL_COORDINATOR": stack.address,
           "SCRIPTPOOL_QUEUE": "scriptpool-lean-shutdown", "SCRIPTPOOL_WORKER_NAME": name}  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([*CLI, "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    try:
        # `idle` is written once RQ's work loop runs, after it has subscribed to its command channel
        # and installed its signal handlers (the command is delivered as a SIGINT).
        key = Worker.redis_worker_namespace_prefix + name
        assert wait_for(lambda: redis_client.hget(key, "state") == b"idle", timeout=60)
        send_shutdown_command(redis_client, name)
        assert worker.wait(timeout=30) == 0
        assert all(w.name != name for w in Worker.all(connection=redis_client))
        assert redis_client.hexists(key, "death")
    finally:
        stop_process(worker)


def test_the_lean_dequeue_blocks_for_a_job_times_out_and_skips_ids_without_a_job(rq_redis: Redis) -> None:
    """`workers/rq_compat/lean_dequeue.py`: an empty queue waits (BLMOVE) until a job arrives, a wait with
    nothing gives RQ's DequeueTimeout, an id whose hash is gone is skipped, and each dequeued id sits
    in RQ's intermediate queue as RQ's own dequeue leaves it."""
    import threading
    import time

    from rq.exceptions import DequeueTimeout

    from scriptpool.core.rq_internals import IntermediateQueue

    queue = Queue("lean-dequeue", connection=rq_redis)
    worker = LeanSimpleWorker([queue], connection=rq_redis, name="lean-dequeue-worker")
    intermediate = IntermediateQueue.get_intermediate_queue_key(queue.key)
    try:
        assert worker.queue_class.dequeue_any([queue], None, connection=rq_redis) is None  # burst, empty
        with pytest.raises(DequeueTimeout):
            worker.queue_class.dequeue_any([queue], 1, connection=rq_redis)

        rq_redis.rpush(queue.key, "no-such-job")  # an id whose job hash expired
        later = threading.Timer(0.3, lambda: queue.enqueue(f"{JOBS}.value", 7, job_id="arrives-later"))
        later.start()
        started = time.monotonic()
        found = worker.queue_class.dequeue_any([queue], 5, connection=rq_redis)
        later.join()
        assert found is not None
        job, from_queue = found
        assert (job.id, job.args, from_queue.name) == ("arrives-later", (7,), "lean-dequeue")
        assert time.monotonic() - started >= 0.25  # it waited for the job, past the stale id
        assert rq_redis.lrange(intermediate, 0, -1) == [b"no-such-job", b"arrives-later"]

        queue.enqueue(f"{JOBS}.value", 8, job_id="already-there")  # the one-round-trip path
        found = worker.queue_class.dequeue_any([queue], 5, connection=rq_redis)
        assert found is not None and found[0].id == "already-there" and found[0].args == (8,)
        assert rq_redis.llen(queue.key) == 0
    finally:
        worker.teardown()


class _RecordingExecutor:
    """Stands in for `JobExecutor` to watch what `ScriptpoolWorker` hands it, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.pending: set[str] = set()
        self.queue_waits: dict[str, float | None] = {}  # (the worker notes each job's wait in the queue here)

    def claim_command(self, job_id: str) -> tuple[str, ...]:
        return ("ECHO", f"claimed {job_id}")

    def claim_answered(self, job_id: str, reply: Any) -> None:
        self.calls.append(("claim_answered", reply))

    def execute(self, job_id: str) -> dict[str, Any]:
        self.calls.append(("execute", job_id))
        self.pending.add(job_id)
        if job_id == "job-not-ok":
            return {"job_id": job_id, "outcome": "cpu_time_exceeded", "message": "over 5 ms of CPU"}
        return {"job_id": job_id, "outcome": "ok"}

    def finish_commands(self, job_id: str) -> list[tuple[str, ...]]:
        self.calls.append(("finish_commands", job_id))
        self.pending.discard(job_id)
        return [("ECHO", f"finished {job_id}")]

    def finish_pending(self, job_id: str) -> None:
        self.calls.append(("finish_pending", job_id, job_id in self.pending))
        self.pending.discard(job_id)


def test_the_claim_and_finish_travel_in_rqs_transactions_or_the_finish_is_sent_on_its_own(rq_redis: Redis) -> None:
    """`ScriptpoolWorker`: the claim's reply comes from the start transaction; the finish goes in the
    finishing transaction, whether RQ finishes the job or fails it (an outcome not `ok`, or RQ
    failing it after it ran): no round trip of its own."""
    from rq import Callback

    from scriptpool.core.job_records import RQ_FUNCTION
    from scriptpool.workers import rq_entry
    from scriptpool.workers.execution import JobExecutor
    from scriptpool.workers.worker import ScriptpoolWorker

    recorder = _RecordingExecutor()
    queue = Queue("lean-fold", connection=rq_redis)
    ok = queue.enqueue(RQ_FUNCTION, "job-ok")
    refused = queue.enqueue(RQ_FUNCTION, "job-refused", on_success=Callback(f"{JOBS}.refuse_success"))
    not_ok = queue.enqueue(RQ_FUNCTION, "job-not-ok")
    rq_entry.install_executor(recorder)  # type: ignore[arg-type]
    try:
        worker = ScriptpoolWorker([queue], connection=rq_redis, name="lean-fold", executor=cast(JobExecutor, recorder))
        worker.work(burst=True, logging_level="WARNING")
    finally:
        rq_entry.install_executor(None)
    assert recorder.calls == [
        ("claim_answered", b"claimed job-ok"),
        ("execute", "job-ok"),
        ("finish_commands", "job-ok"),
        ("finish_pending", "job-ok", False),  # nothing left: the transaction carried it
        ("claim_answered", b"claimed job-refused"),
        ("execute", "job-refused"),
        ("finish_commands", "job-refused"),  # RQ's failure path carries it too
        ("finish_pending", "job-refused", False),
        ("claim_answered", b"claimed job-not-ok"),
        ("execute", "job-not-ok"),
        ("finish_commands", "job-not-ok"),
        ("finish_pending", "job-not-ok", False),
    ]
    assert Job.fetch(ok.id, connection=rq_redis).get_status() == JobStatus.FINISHED
    assert Job.fetch(refused.id, connection=rq_redis).get_status() == JobStatus.FAILED
    failed = Job.fetch(not_ok.id, connection=rq_redis)
    assert failed.get_status() == JobStatus.FAILED
    result = failed.latest_result()
    assert result is not None and result.exc_string == "JobNotOk: cpu_time_exceeded: over 5 ms of CPU"
    worker_state = _worker(rq_redis, "lean-fold")
    assert (worker_state.successful_job_count, worker_state.failed_job_count) == (1, 2)


def test_a_job_is_finished_in_rq_by_the_time_its_client_hears_it_finished(
    client: ScriptpoolClient, redis_client: Redis
) -> None:
    """The job record's finish and RQ's finishing writes are one transaction: no window in which
    the job is finished for scriptpool but still started for `rq info`."""
    for n in range(8):
        job = run_lua(client, f"return {n}")
        assert Job.fetch(job.id, connection=redis_client).get_status(refresh=True) == JobStatus.FINISHED
        assert job.id in FinishedJobRegistry(TEST_QUEUE, connection=redis_client).get_job_ids()


def test_a_plain_rq_simple_worker_runs_a_scriptpool_job_claiming_and_finishing_it_itself(
    redis_server: PrivateRedis, rq_redis: Redis
) -> None:
    """RQ's own `SimpleWorker` (no `ScriptpoolWorker` hooks) pointed at a scriptpool queue: the
    executor claims and finishes the job record itself, and the client gets the result. (`rq_redis`
    puts back the signal handlers RQ's `work()` installs.)"""
    from scriptpool.coordinator.server import start_coordinator
    from scriptpool.coordinator.settings import Settings
    from scriptpool.languages import Language
    from scriptpool.workers import rq_entry
    from scriptpool.workers.execution import JobExecutor
    from scriptpool.workers.settings import WorkerSettings

    queue_name = "scriptpool-plain-rq"
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=queue_name, max_wait_seconds=30)
    running = start_coordinator(settings)
    address = f"127.0.0.1:{running.port}"
    executor = JobExecutor(WorkerSettings(redis_url=redis_server.url, coordinator=address, queue=queue_name))
    rq_entry.install_executor(executor)
    redis = Redis.from_url(redis_server.url, protocol=2)
    try:
        with ScriptpoolClient(address, running.auth.create_api_key("plain-rq")) as client:
            queued = client.submit(Language.LUA, "return 6 * 7")
            SimpleWorker([Queue(queue_name, connection=redis)], connection=redis).work(burst=True)
            done = client.wait(queued.id, timeout=30)
        assert result_of(done) == 42
        assert Job.fetch(queued.id, connection=redis).get_status() == JobStatus.FINISHED
    finally:
        rq_entry.install_executor(None)
        executor.close()
        redis.close()
        running.stop(grace=1)
