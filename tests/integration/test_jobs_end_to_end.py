"""One script job end to end through every real layer: gRPC submit -> RQ -> worker process ->
jailed sandbox child -> global calls back over gRPC -> result."""

from __future__ import annotations

import time
import uuid

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.core.job_records import LEGACY_RQ_FUNCTIONS
from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import MAX_LIMITS
from scriptpool.v1 import jobs_pb2
from scriptpool.values import to_value_map
from tests.conftest import REPO, TEST_QUEUE, Stack, wait_for

from .helpers import (
    HELD_LUA,
    HeldJob,
    assert_worker_healthy,
    next_event,
    outcome,
    result_of,
    run_lua,
    submit_held,
    subscribe,
)


def test_quickstart_example_creates_and_lists_a_session(client: ScriptpoolClient) -> None:
    source = (REPO / "examples" / "quickstart.lua").read_text()
    job = run_lua(client, source)
    result = result_of(job)
    assert isinstance(result, dict)
    assert result["name"] == "quickstart"
    assert result["metadata"] == {"project": "scriptpool", "answer": 42}
    assert result["listed"] == 1
    assert f"created session {result['session_id']!s}" in job.result.output
    assert "has tag demo: true" in job.result.output
    # the session the script created is real and belongs to the client's principal
    session = client.get_session(str(result["session_id"]))
    assert session.name == "quickstart" and list(session.tags) == ["demo"]
    assert job.status == jobs_pb2.JOB_STATUS_FINISHED
    assert job.result.usage.wall_time_ms > 0 and job.result.usage.global_calls == 3


def test_job_runs_in_the_session_it_was_submitted_with(client: ScriptpoolClient) -> None:
    session = client.create_session("mine")
    job = run_lua(client, "return Session.getCurrent()", session_id=session.id)
    assert result_of(job) == session.id
    assert job.session_id == session.id


def test_job_without_session_gets_a_new_one(client: ScriptpoolClient) -> None:
    job = run_lua(client, "return Session.get(Session.getCurrent()).name")
    assert result_of(job) == "lua job"


def test_print_output_and_return_values_come_back(client: ScriptpoolClient) -> None:
    job = run_lua(client, 'print("a", 1, true) print("b") return {n = 1.5, list = {1, 2}, s = "x", b = false}')
    assert job.result.output == "a\t1\ttrue\nb\n"
    assert result_of(job) == {"n": 1.5, "list": [1, 2], "s": "x", "b": False}


def test_infinite_loop_is_stopped_at_its_cpu_limit(client: ScriptpoolClient) -> None:
    job = run_lua(client, "while true do end", limits={"cpu_time_ms": 500})
    assert outcome(job) is Outcome.CPU_TIME_EXCEEDED
    assert "500 ms" in job.result.message
    assert job.result.usage.cpu_time_ms >= 400
    assert_worker_healthy(client)


def test_cpu_spin_inside_a_c_function_is_stopped_by_the_kernel(client: ScriptpoolClient) -> None:
    # A pattern-matching bomb runs inside one C call, where the engine's hook never fires:
    # RLIMIT_CPU in the child (set from outside the guest) ends it.
    source = 'return string.find(string.rep("a", 40000), ".-.-.-.-.-.-.-.-b")'
    job = run_lua(client, source, limits={"cpu_time_ms": 1000, "wall_time_ms": 20000})
    assert outcome(job) is Outcome.CPU_TIME_EXCEEDED
    assert_worker_healthy(client)


def test_wall_time_limit_kills_the_child_from_outside(client: ScriptpoolClient) -> None:
    job = run_lua(client, "while true do end", limits={"cpu_time_ms": 10000, "wall_time_ms": 400})
    assert outcome(job) is Outcome.WALL_TIME_EXCEEDED
    assert 400 <= job.result.usage.wall_time_ms < 5000
    assert_worker_healthy(client)


def test_unbounded_allocation_is_stopped_at_its_memory_limit(client: ScriptpoolClient) -> None:
    source = "local t = {} local i = 0 while true do i = i + 1 t[i] = string.rep('x', 1000) .. i end"
    job = run_lua(client, source, limits={"memory_bytes": 16 * 1024 * 1024})
    assert outcome(job) is Outcome.MEMORY_EXCEEDED
    assert str(16 * 1024 * 1024) in job.result.message
    assert_worker_healthy(client)


def test_output_flood_keeps_output_up_to_the_limit(client: ScriptpoolClient) -> None:
    job = run_lua(client, 'while true do print("0123456789") end', limits={"output_bytes": 1000})
    assert outcome(job) is Outcome.OUTPUT_EXCEEDED
    assert job.result.output_truncated
    assert len(job.result.output.encode()) == 1000
    assert job.result.output.startswith("0123456789\n0123456789\n")
    assert_worker_healthy(client)


def test_global_call_flood_is_stopped_at_the_call_limit(client: ScriptpoolClient) -> None:
    job = run_lua(client, "while true do Session.getCurrent() end", limits={"max_global_calls": 25})
    assert outcome(job) is Outcome.CALL_LIMIT_EXCEEDED
    assert job.result.usage.global_calls == 25  # stopped exactly at the limit
    assert_worker_healthy(client)


def test_syntax_error_is_a_script_error_with_its_line(client: ScriptpoolClient) -> None:
    job = run_lua(client, "local a = 1\nlocal b = 2\nlocal c = = 3\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.line == 3
    assert "syntax error" in job.result.error.message
    assert "/" not in job.result.message  # no host paths
    assert_worker_healthy(client)


def test_runtime_error_shows_the_scripts_message_line_and_traceback(client: ScriptpoolClient) -> None:
    job = run_lua(client, "local function f()\n  error('boom')\nend\nf()\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.message == "boom"
    assert job.result.error.line == 2
    assert "script:2: in local 'f'" in job.result.error.traceback
    assert "Traceback" not in job.result.message and ".py" not in job.result.error.traceback


def test_global_call_errors_raise_a_table_with_code_and_message(client: ScriptpoolClient) -> None:
    source = """
    local ok, err = pcall(Session.get, "not-a-uuid")
    local ok2, err2 = pcall(Session.get, "7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f")
    return {ok, err.code, err.message, tostring(err2), err2.code}
    """
    result = result_of(run_lua(client, source))
    assert result == [
        False,
        "INVALID_ARGUMENT",
        "invalid session id 'not-a-uuid': expected a UUIDv4 string",
        "NOT_FOUND: session 7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f not found",
        "NOT_FOUND",
    ]


def test_an_operation_this_version_lacks_answers_unimplemented_naming_it() -> None:
    """Every operation of the catalog has a handler now; one a newer engine might send does not."""
    import grpc

    from scriptpool.errors import Unimplemented
    from scriptpool.workers.bridge.call_stream import CoordinatorStubs
    from scriptpool.workers.bridge.host import CoordinatorBridge

    with grpc.insecure_channel("127.0.0.1:9") as channel:  # never dialled: refused before any RPC
        bridge = CoordinatorBridge(CoordinatorStubs(channel), "spj_unused", "", time.monotonic() + 5)
        with pytest.raises(Unimplemented, match="Hook.fireAll is not available in this version of scriptpool"):
            bridge.call("Hook.fireAll", [])


def test_returning_a_function_is_a_script_error(client: ScriptpoolClient) -> None:
    job = run_lua(client, "return print")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert "cannot be passed or returned" in job.result.message


def test_cancel_a_running_job(client: ScriptpoolClient) -> None:
    started = f"cancel.started.{uuid.uuid4().hex}"
    sub = subscribe(client, started)
    source = "Event.emit(INPUT.started, {}) while true do end"
    limits = {"cpu_time_ms": 20000, "wall_time_ms": 30000}
    job = client.submit(Language.LUA, source, limits=limits, inputs={"started": started})
    event = next_event(client, sub)  # the job is running: it said so
    assert event is not None and event.job_id == job.id
    client.cancel(job.id)
    done = client.wait(job.id, timeout=10)
    assert outcome(done) is Outcome.CANCELLED
    assert done.result.usage.global_calls == 1  # it ran (and was stopped mid-spin), not cancelled in the queue
    assert_worker_healthy(client)


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"language": 0, "source": "return 1"}, "language"),
        ({"language": 99, "source": "return 1"}, "language"),
        ({"language": 1, "source": "   \n"}, "source"),
        ({"language": 1, "source": "x" * (1024 * 1024 + 1)}, "source"),
        ({"language": 1, "source": "return 1", "limits": {"cpu_time_ms": MAX_LIMITS.cpu_time_ms + 1}}, "cpu_time_ms"),
        (
            {"language": 1, "source": "return 1", "limits": {"memory_bytes": MAX_LIMITS.memory_bytes * 2}},
            "memory_bytes",
        ),
    ],
)
def test_bad_submissions_are_invalid_argument_and_enqueue_nothing(
    client: ScriptpoolClient, stack: Stack, redis_client: Redis, request_kwargs: dict[str, object], field: str
) -> None:
    queued_before = redis_client.llen(f"rq:queue:{TEST_QUEUE}")
    jobs_before = len(list(redis_client.scan_iter("sp:job:*", count=1000)))
    request = jobs_pb2.SubmitJobRequest(**request_kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as caught:
        client._call(client._jobs.SubmitJob, request)
    assert field in caught.value.message
    assert redis_client.llen(f"rq:queue:{TEST_QUEUE}") == queued_before
    assert len(list(redis_client.scan_iter("sp:job:*", count=1000))) == jobs_before


def test_unknown_job_is_not_found(client: ScriptpoolClient) -> None:
    with pytest.raises(NotFound):
        client.get_job("7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f")


def test_jobs_are_real_rq_jobs(client: ScriptpoolClient, redis_client: Redis) -> None:
    from rq.job import Job as RQJob

    job = run_lua(client, "return 7")
    rq_job = RQJob.fetch(job.id, connection=redis_client)
    assert rq_job.func_name == "scriptpool.workers.rq_entry.execute_job"
    assert rq_job.args == (job.id,)
    # our result is published first; RQ marks its own job finished right after the function returns
    assert wait_for(lambda: rq_job.get_status(refresh=True) == "finished")
    assert rq_job.return_value() == {"job_id": job.id, "outcome": "ok", "message": ""}


def test_a_job_queued_under_the_old_function_name_still_runs(
    client: ScriptpoolClient, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the one `scriptpool` import name (ADR 0008) RQ job hashes named
    `workers.rq_entry.execute_job`. After an upgrade in place such a job still runs, and its hash is
    left as it was written (the stack's workers run outside the repository, where no top-level
    `workers` package can be found)."""
    from rq.job import Job as RQJob

    from scriptpool.coordinator.stores import jobs as job_store

    (old_name,) = LEGACY_RQ_FUNCTIONS
    monkeypatch.setattr(job_store, "RQ_FUNCTION", old_name)  # this coordinator enqueues as the old one did
    job = run_lua(client, "return 6 * 7", timeout=30)
    assert result_of(job) == 42
    rq_job = RQJob.fetch(job.id, connection=redis_client)
    assert wait_for(lambda: rq_job.get_status(refresh=True) == "finished")
    assert RQJob.fetch(job.id, connection=redis_client).func_name == old_name
    assert rq_job.return_value() == {"job_id": job.id, "outcome": "ok", "message": ""}


def test_a_cancel_racing_a_worker_claim_wins(redis_client: Redis) -> None:
    """request_cancel on a queued job marks it, so a worker claiming it before the coordinator has
    finished it as cancelled refuses to start it."""
    import time
    import uuid

    from scriptpool.core.job_records import JobRecords, JobState
    from scriptpool.core.keys import job_key

    records = JobRecords(redis_client)
    job_id = str(uuid.uuid4())
    redis_client.hset(job_key(job_id), mapping={"status": "queued", "spec": b"", "credential": "x"})
    try:
        assert records.request_cancel(job_id) is JobState.QUEUED
        assert records.start(job_id, "racing-worker", time.time()) is None
        assert redis_client.hget(job_key(job_id), "status") == b"queued"
    finally:
        records.close()
        redis_client.delete(job_key(job_id))


def test_wait_job_returns_unfinished_at_its_timeout_then_finished(client: ScriptpoolClient) -> None:
    held = submit_held(client, "late")  # cannot finish before the test releases it
    early = client._call(client._jobs.WaitJob, jobs_pb2.WaitJobRequest(job_id=held.job.id, timeout_seconds=0.3))
    assert not early.finished and early.job.status in (jobs_pb2.JOB_STATUS_QUEUED, jobs_pb2.JOB_STATUS_RUNNING)
    held.wait_running()
    held.release()
    late = client._call(client._jobs.WaitJob, jobs_pb2.WaitJobRequest(job_id=held.job.id, timeout_seconds=30))
    assert late.finished and result_of(late.job) == "late"


def test_cancel_of_a_queued_job_survives_rqs_cancel_racing_a_worker(
    client: ScriptpoolClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's own cancel can fail while a worker dequeues the job at that moment ("Execution ... not
    found in Redis", seen under load). Our record decides: the caller gets the cancelled job, not
    INTERNAL, and the worker refuses to run it."""
    from rq.job import Job as RQJob

    spinners = [
        client.submit(Language.LUA, "while true do end", limits={"wall_time_ms": 60_000}) for _ in stack.workers
    ]
    running = jobs_pb2.JOB_STATUS_RUNNING
    assert wait_for(lambda: all(client.get_job(s.id).status == running for s in spinners), timeout=30)
    queued = client.submit(Language.LUA, "return 'must not run'")

    def racing_cancel(self: RQJob, *args: object, **kwargs: object) -> None:
        raise ValueError(f"Execution {self.id} not found in Redis")

    monkeypatch.setattr(RQJob, "cancel", racing_cancel)
    try:
        cancelled = client.cancel(queued.id)
    finally:
        for spinner in spinners:
            client.cancel(spinner.id)
    assert outcome(cancelled) is Outcome.CANCELLED
    monkeypatch.undo()
    assert outcome(client.wait(queued.id, timeout=30)) is Outcome.CANCELLED
    assert_worker_healthy(client)


def test_submit_with_wait_answers_with_the_finished_job_in_one_call(client: ScriptpoolClient) -> None:
    request = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 6 * 7", wait_seconds=30)
    response = client._call(client._jobs.SubmitJob, request)
    assert response.finished and response.job.status == jobs_pb2.JOB_STATUS_FINISHED
    assert result_of(response.job) == 42
    assert result_of(client.get_job(response.job.id)) == 42  # the same job, recorded as usual


def test_submit_with_a_short_wait_answers_unfinished_and_the_job_runs_on(client: ScriptpoolClient) -> None:
    tag = uuid.uuid4().hex
    ready, go = f"held.ready.{tag}", f"held.go.{tag}"
    ready_sub = subscribe(client, ready)
    request = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source=HELD_LUA, wait_seconds=0.2)
    request.inputs.CopyFrom(to_value_map({"ready": ready, "go": go, "result": "done"}))
    response = client._call(client._jobs.SubmitJob, request)  # the job cannot finish before `go`
    assert not response.finished
    assert response.job.status in (jobs_pb2.JOB_STATUS_QUEUED, jobs_pb2.JOB_STATUS_RUNNING)
    HeldJob(client, response.job, ready_sub, go).wait_running()
    HeldJob(client, response.job, ready_sub, go).release()
    assert result_of(client.wait(response.job.id, timeout=30)) == "done"


def test_submit_without_wait_answers_queued(client: ScriptpoolClient) -> None:
    request = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1")
    response = client._call(client._jobs.SubmitJob, request)
    assert not response.finished and response.job.status == jobs_pb2.JOB_STATUS_QUEUED
    client.wait(response.job.id, timeout=30)


def test_a_negative_wait_is_refused_and_nothing_is_queued(client: ScriptpoolClient, redis_client: Redis) -> None:
    from scriptpool.core.keys import PREFIX

    before = len(list(redis_client.scan_iter(f"{PREFIX}job:*", count=1000)))
    request = jobs_pb2.SubmitJobRequest(language=Language.LUA.to_proto(), source="return 1", wait_seconds=-1)
    with pytest.raises(InvalidArgument, match="wait_seconds"):
        client._call(client._jobs.SubmitJob, request)
    after = len(list(redis_client.scan_iter(f"{PREFIX}job:*", count=1000)))
    assert after <= before  # (finished jobs of other tests may expire meanwhile, never a new one)
