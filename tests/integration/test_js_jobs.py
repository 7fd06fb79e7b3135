"""JavaScript jobs end to end through every real layer: gRPC submit -> RQ -> worker process ->
jailed sandbox child running QuickJS in wasm -> global calls back over gRPC -> result."""

from __future__ import annotations

from scriptpool.client import ScriptpoolClient
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from tests.conftest import REPO

from .helpers import assert_worker_healthy, outcome, result_of, run_js


def test_quickstart_example_creates_gets_and_lists_a_session(client: ScriptpoolClient) -> None:
    source = (REPO / "examples" / "quickstart.js").read_text()
    job = run_js(client, source)
    result = result_of(job)
    assert isinstance(result, dict)
    assert result["name"] == "quickstart"
    assert result["metadata"] == {"project": "scriptpool", "answer": 42}
    assert result["listed"] == 1
    assert f"created session {result['session_id']!s}\n" in job.result.output
    assert "state: active, has tag demo: true" in job.result.output
    session = client.get_session(str(result["session_id"]))
    assert session.name == "quickstart" and list(session.tags) == ["demo"]
    assert job.status == jobs_pb2.JOB_STATUS_FINISHED
    assert job.result.usage.global_calls == 3


def test_job_runs_in_the_session_it_was_submitted_with(client: ScriptpoolClient) -> None:
    session = client.create_session("mine-js")
    job = run_js(client, "Session.getCurrent()", session_id=session.id)
    assert result_of(job) == session.id


def test_output_and_typed_results_come_back(client: ScriptpoolClient) -> None:
    job = run_js(client, "console.log('a', 1, true); print('b');\n({n: 1.5, list: [1, 2], s: 'x', b: false, u: null})")
    assert job.result.output == "a 1 true\nb\n"
    assert result_of(job) == {"n": 1.5, "list": [1, 2], "s": "x", "b": False, "u": None}


def test_cpu_spin_is_stopped_at_its_cpu_limit(client: ScriptpoolClient) -> None:
    job = run_js(client, "while (true) { try { for (;;) {} } catch (e) {} }", limits={"cpu_time_ms": 500})
    assert outcome(job) is Outcome.CPU_TIME_EXCEEDED
    assert "500 ms" in job.result.message
    assert_worker_healthy(client)


def test_memory_bomb_is_stopped_at_its_memory_limit(client: ScriptpoolClient) -> None:
    source = "const a = []; while (true) a.push('x'.repeat(1000) + a.length)"
    job = run_js(client, source, limits={"memory_bytes": 16 * 1024 * 1024})
    assert outcome(job) is Outcome.MEMORY_EXCEEDED
    assert str(16 * 1024 * 1024) in job.result.message
    assert_worker_healthy(client)


def test_syntax_error_is_a_script_error_with_its_line(client: ScriptpoolClient) -> None:
    job = run_js(client, "const a = 1;\nconst b = 2;\nconst c = = 3;\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.line == 3
    assert job.result.error.message.startswith("SyntaxError: ")
    assert "/" not in job.result.message  # no host paths
    assert_worker_healthy(client)


def test_runtime_error_shows_the_scripts_message_and_line(client: ScriptpoolClient) -> None:
    job = run_js(client, "function f() {\n  throw new RangeError('boom');\n}\nf();\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.message == "RangeError: boom"
    assert job.result.error.line == 2
    assert "at f (script:2:" in job.result.error.traceback
    assert ".py" not in job.result.error.traceback and "Traceback" not in job.result.message
    assert_worker_healthy(client)


def test_output_flood_keeps_output_up_to_the_limit(client: ScriptpoolClient) -> None:
    job = run_js(client, "for (;;) console.log('0123456789')", limits={"output_bytes": 1000})
    assert outcome(job) is Outcome.OUTPUT_EXCEEDED
    assert job.result.output_truncated
    assert len(job.result.output.encode()) == 1000
    assert job.result.output.startswith("0123456789\n0123456789\n")
    assert_worker_healthy(client)


def test_global_call_errors_are_errors_with_code(client: ScriptpoolClient) -> None:
    source = """
    const caught = [];
    for (const id of ["not-a-uuid", "7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f"]) {
      try { Session.get(id) } catch (e) { caught.push([e instanceof Error, e.code, e.message]) }
    }
    caught
    """
    assert result_of(run_js(client, source)) == [
        [True, "INVALID_ARGUMENT", "INVALID_ARGUMENT: invalid session id 'not-a-uuid': expected a UUIDv4 string"],
        [True, "NOT_FOUND", "NOT_FOUND: session 7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f not found"],
    ]
    assert_worker_healthy(client)


def test_returning_a_function_is_a_script_error(client: ScriptpoolClient) -> None:
    job = run_js(client, "console.log")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert "cannot be passed or returned" in job.result.message
    assert_worker_healthy(client)
