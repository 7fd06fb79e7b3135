"""Restricted Python jobs end to end through every real layer: gRPC submit -> RQ -> worker process ->
jailed sandbox child running RestrictedPython -> global calls back over gRPC -> result."""

from __future__ import annotations

from typing import Any

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from tests.conftest import REPO

from .helpers import assert_worker_healthy, outcome, result_of

MIB = 1024 * 1024


def run_py(client: ScriptpoolClient, source: str, timeout: float = 60, **kwargs: Any) -> jobs_pb2.Job:
    return client.run(Language.PYTHON, source, timeout=timeout, **kwargs)


def assert_python_healthy(client: ScriptpoolClient) -> None:
    """Both a Lua job and a Python job still run correctly after whatever the test did."""
    assert_worker_healthy(client)
    assert result_of(run_py(client, "t = [i * i for i in range(100)]\nt[12] + len(t)")) == 244


def test_quickstart_example_creates_gets_and_lists_a_session(client: ScriptpoolClient) -> None:
    source = (REPO / "examples" / "quickstart.py").read_text()
    job = run_py(client, source)
    result = result_of(job)
    assert isinstance(result, dict)
    assert result["name"] == "quickstart"
    assert result["metadata"] == {"project": "scriptpool", "answer": 42}
    assert result["listed"] == 1
    assert f"created session {result['session_id']!s}\n" in job.result.output
    assert "state: active, has tag demo: True" in job.result.output
    session = client.get_session(str(result["session_id"]))
    assert session.name == "quickstart" and list(session.tags) == ["demo"]
    assert job.status == jobs_pb2.JOB_STATUS_FINISHED
    assert job.result.usage.global_calls == 3


def test_job_runs_in_the_session_it_was_submitted_with(client: ScriptpoolClient) -> None:
    session = client.create_session("mine-py")
    job = run_py(client, "Session.get_current()", session_id=session.id)
    assert result_of(job) == session.id


def test_output_and_typed_results_come_back(client: ScriptpoolClient) -> None:
    job = run_py(client, "print('a', 1, True)\nprint('b')\n{'n': 1.5, 'list': [1, 2], 's': 'x', 'b': False, 'u': None}")
    assert job.result.output == "a 1 True\nb\n"
    assert result_of(job) == {"n": 1.5, "list": [1, 2], "s": "x", "b": False, "u": None}


def test_session_methods_change_the_real_session(client: ScriptpoolClient) -> None:
    session = client.create_session("methods-py", tags=["one"])
    source = f"s = Session.get({session.id!r})\ns.add_tag('two')\ns.suspend()\n"
    source += "[s.has_tag('two'), Session.get(s.id).state]"
    assert result_of(run_py(client, source)) == [True, "suspended"]
    assert set(client.get_session(session.id).tags) == {"one", "two"}


def test_cpu_spin_is_stopped_at_its_cpu_limit_even_under_a_bare_except(client: ScriptpoolClient) -> None:
    source = "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass"
    job = run_py(client, source, limits={"cpu_time_ms": 500})
    assert outcome(job) is Outcome.CPU_TIME_EXCEEDED
    assert "500 ms" in job.result.message
    assert job.result.usage.cpu_time_ms >= 400
    assert_python_healthy(client)


def test_cpu_spin_inside_one_c_call_is_stopped_by_the_kernel(client: ScriptpoolClient) -> None:
    # The tracer never runs inside sum(); RLIMIT_CPU, set on the child from outside the guest, ends it.
    job = run_py(client, "sum(range(10 ** 13))", limits={"cpu_time_ms": 1000, "wall_time_ms": 20000})
    assert outcome(job) is Outcome.CPU_TIME_EXCEEDED
    assert_python_healthy(client)


def test_growing_memory_is_stopped_at_its_memory_limit(client: ScriptpoolClient) -> None:
    source = "x = []\nwhile True:\n    x.append('x' * 1000 + str(len(x)))"
    job = run_py(client, source, limits={"memory_bytes": 16 * MIB})
    assert outcome(job) is Outcome.MEMORY_EXCEEDED
    assert str(16 * MIB) in job.result.message
    assert_python_healthy(client)


def test_one_huge_allocation_is_stopped_by_the_address_space_limit(client: ScriptpoolClient) -> None:
    # 1 TiB cannot be mapped under RLIMIT_AS; the MemoryError is the memory limit even when caught.
    source = "try:\n    x = b'x' * (1 << 40)\nexcept MemoryError:\n    pass\n'survived'"
    job = run_py(client, source, limits={"memory_bytes": 16 * MIB})
    assert outcome(job) is Outcome.MEMORY_EXCEEDED
    assert_python_healthy(client)


def test_syntax_error_is_a_script_error_with_its_line(client: ScriptpoolClient) -> None:
    job = run_py(client, "a = 1\nb = 2\nc = = 3\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.line == 3
    assert job.result.error.message.startswith("syntax error")
    assert "/" not in job.result.message
    assert_python_healthy(client)


def test_runtime_error_shows_the_scripts_message_line_and_traceback(client: ScriptpoolClient) -> None:
    job = run_py(client, "def f():\n    raise ValueError('boom')\n\nf()\n")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.message == "ValueError: boom"
    assert job.result.error.line == 2
    assert "  line 2, in f\n    raise ValueError('boom')" in job.result.error.traceback
    assert ".py" not in job.result.error.traceback and "/" not in job.result.error.traceback
    assert "Traceback" not in job.result.message
    assert_python_healthy(client)


def test_restricted_code_is_refused_with_its_line(client: ScriptpoolClient) -> None:
    job = run_py(client, "x = 1\n().__class__.__base__.__subclasses__()")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.line == 2
    assert "not allowed in the sandbox" in job.result.error.message
    job = run_py(client, "import os\nos.system('id')")  # `os` is the files stand-in: no system, no environ
    assert outcome(job) is Outcome.SCRIPT_ERROR and job.result.error.line == 2
    assert "module 'os' has no attribute 'system'" in job.result.error.message
    job = run_py(client, "import subprocess")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert "module 'subprocess' is not available in the sandbox" in job.result.error.message


def test_output_flood_keeps_output_up_to_the_limit(client: ScriptpoolClient) -> None:
    job = run_py(client, "while True:\n    print('0123456789')", limits={"output_bytes": 1000})
    assert outcome(job) is Outcome.OUTPUT_EXCEEDED
    assert job.result.output_truncated
    assert len(job.result.output.encode()) == 1000
    assert job.result.output.startswith("0123456789\n0123456789\n")
    assert_python_healthy(client)


def test_global_call_flood_is_stopped_at_the_call_limit(client: ScriptpoolClient) -> None:
    source = "while True:\n    try:\n        Session.getCurrent()\n    except:\n        pass"
    job = run_py(client, source, limits={"max_global_calls": 25})
    assert outcome(job) is Outcome.CALL_LIMIT_EXCEEDED
    assert job.result.usage.global_calls == 25  # stopped exactly at the limit
    assert_python_healthy(client)


def test_global_call_errors_raise_scriptpool_error_with_code(client: ScriptpoolClient) -> None:
    source = """
out = []
for sid in ["not-a-uuid", "7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f"]:
    try:
        Session.get(sid)
    except ScriptpoolError as e:
        out.append([e.code, e.message, str(e)])
try:
    Session.get("7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f")
except NotFound:
    out.append("caught as NotFound")
out
"""
    assert result_of(run_py(client, source)) == [
        [
            "INVALID_ARGUMENT",
            "invalid session id 'not-a-uuid': expected a UUIDv4 string",
            "INVALID_ARGUMENT: invalid session id 'not-a-uuid': expected a UUIDv4 string",
        ],
        [
            "NOT_FOUND",
            "session 7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f not found",
            "NOT_FOUND: session 7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f not found",
        ],
        "caught as NotFound",
    ]


def test_an_uncaught_call_error_is_a_script_error_with_code_and_line(client: ScriptpoolClient) -> None:
    job = run_py(client, "x = 1\nSession.get('not-a-uuid')")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert job.result.error.message.startswith("INVALID_ARGUMENT: invalid session id")
    assert job.result.error.line == 2


def test_returning_a_function_is_a_script_error(client: ScriptpoolClient) -> None:
    job = run_py(client, "len")
    assert outcome(job) is Outcome.SCRIPT_ERROR
    assert "cannot be passed or returned" in job.result.message
