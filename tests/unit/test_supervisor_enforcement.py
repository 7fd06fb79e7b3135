"""The worker's own enforcement, reached by a child that ignores its limits (tests/unit/fake_child.py).

A real sandbox child stops itself at its output and call limits and its engine checks CPU time, so
these checks in the supervisor are the second line that only a compromised child would reach. Each
test here hands a job to a fake child that does exactly that, and asserts the worker ends the job
with the right outcome, keeps only what the limit allows, and kills and reaps the child. Removing
any one of these checks makes its test fail (tests/mutations.py).
"""

from __future__ import annotations

import os
import socket
import time

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
from scriptpool.v1 import sandbox_pb2
from scriptpool.values import PlainValue
from scriptpool.workers.supervision.children import ForkedChild, SandboxChild
from scriptpool.workers.supervision.supervisor import ChildRun, supervise
from tests.unit.fake_child import CHUNK, READY, spawn_fake_child


class CountingHost:
    """Answers every global call with None and counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append(op)
        return None


def _job(**limits: int) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=Language.LUA.to_proto(), source="-- the fake child ignores it")
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, limits.get(name, getattr(DEFAULT_LIMITS, name)))
    return spec


def _run_fake(mode: str, host: CountingHost, **limits: int) -> tuple[ChildRun, int]:
    ours, theirs = socket.socketpair()
    pid = spawn_fake_child(mode, theirs.fileno())
    theirs.close()
    child = SandboxChild(pid=pid, sock=ours, forked_at=time.monotonic(), process=ForkedChild(pid))
    return supervise(child, _job(**limits), host), pid


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_child_printing_past_its_output_limit_is_killed_and_its_output_cut_at_the_limit() -> None:
    limit = 4096
    run, pid = _run_fake("output", CountingHost(), output_bytes=limit, wall_time_ms=60_000)
    assert run.outcome is Outcome.OUTPUT_EXCEEDED, run.message
    assert run.message == f"the script printed more than {limit} bytes"
    assert run.output_truncated
    assert run.output_bytes == limit
    kept = "".join(run.output)
    assert kept == (READY + CHUNK * limit)[:limit]  # what came first, exactly up to the limit
    assert _reaped(pid)


def test_a_child_calling_past_its_call_limit_is_killed_before_the_extra_call_reaches_the_host() -> None:
    host = CountingHost()
    run, pid = _run_fake("calls", host, max_global_calls=5, wall_time_ms=60_000)
    assert run.outcome is Outcome.CALL_LIMIT_EXCEEDED, run.message
    assert run.message == "the script made more than 5 global calls"
    assert host.calls == ["State.get"] * 5  # the sixth was never made
    assert _reaped(pid)


def test_a_child_sleeping_past_its_wall_deadline_is_killed() -> None:
    run, pid = _run_fake("sleep", CountingHost(), wall_time_ms=3_000)
    assert run.outcome is Outcome.WALL_TIME_EXCEEDED, run.message
    assert run.message == "the script ran longer than 3000 ms"
    assert "".join(run.output) == READY  # it had the job: killed mid-job, not before it started
    assert _reaped(pid)


def test_a_child_spinning_past_its_cpu_budget_is_killed_by_the_worker_cpu_watch() -> None:
    # The fake child has no RLIMIT_CPU and no engine check: only the worker's CpuWatch stops it.
    run, pid = _run_fake("spin", CountingHost(), cpu_time_ms=200, wall_time_ms=120_000)
    assert run.outcome is Outcome.CPU_TIME_EXCEEDED, run.message
    assert run.message == "the script used more than 200 ms of CPU time"
    assert "".join(run.output) == READY
    assert _reaped(pid)
