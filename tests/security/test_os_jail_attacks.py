"""The OS jail under a real job, through the real stack: one named test per ambient capability.

Scripts cannot make system calls (their files go through sandbox/scratch_files.py), so the per-call
attacks (execve, fork, sockets, writes outside the scratch directory...) are in
tests/unit/test_jail.py, in forked children. Here a real job blocks in a global call inside a real
worker's sandbox child once it has told the test it is ready; the test inspects that process from
outside (/proc), releases the job (which must then end normally), and checks that the worker then
runs a normal job correctly.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import DEFAULT_SCRATCH_ROOT, cpu_limit_seconds
from scriptpool.sandbox.jail._apply import ADDRESS_SPACE_MARGIN, MAX_OPEN_FILES
from scriptpool.sandbox.limits import DEFAULT_LIMITS, JobLimits
from scriptpool.v1 import events_pb2
from scriptpool.workers.settings import WorkerSettings
from tests.conftest import Stack, wait_for
from tests.integration.helpers import assert_worker_healthy, next_event, outcome, result_of, subscribe

# The job writes a marker file into its scratch directory (the child's cwd: how the test finds
# its process), tells the test it is ready, and blocks in a global call until the test lets it go.
BLOCKED_JOB = """
local marker = Artifact.store('', {content = 'here', type = 'data', metadata = {name = 'marker'}})
Artifact.saveToFile('', marker, INPUT.MARKER)
local go = Event.subscribe(INPUT.GO)
Event.emit(INPUT.READY, {})
local released
repeat released = Event.receive(go, 3000) until released ~= nil
return released.name == INPUT.GO
"""
BLOCKED_LIMITS = {"cpu_time_ms": 7_300, "wall_time_ms": 90_000, "artifact_bytes": 3_000_001, "memory_bytes": 96 << 20}


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _child_holding(stack: Stack, marker: str) -> tuple[int, int]:
    """(worker pid, sandbox child pid) of the one child whose scratch directory holds `marker`; the
    child's parent is the worker's zygote, or the worker itself when it forks its own children."""
    found = []
    for worker in stack.workers:
        for pid in _descendants(worker.pid):
            try:
                if os.path.exists(f"/proc/{pid}/cwd/{marker}"):
                    found.append((worker.pid, pid))
            except OSError:
                continue
    assert len(found) == 1, found
    return found[0]


def _parent(pid: int) -> int:
    return int(_status(pid)["PPid"])


@contextmanager
def _blocked_job(
    stack: Stack, client: ScriptpoolClient, marker: str = "", cancel: bool = False
) -> Iterator[tuple[int, int]]:
    """Run a job that blocks in a global call; yield (worker pid, sandbox child pid) once the job says it
    is ready (a readiness handshake, no polling); then release it and check it ran to its end (or,
    with `cancel`, cancel it and check it was cancelled: its child is then killed, not kept)."""
    tag = uuid.uuid4().hex
    marker = marker or f"marker-{tag}"
    ready, go = f"jail.ready.{tag}", f"jail.go.{tag}"
    ready_sub = subscribe(client, ready)
    inputs = {"MARKER": marker, "READY": ready, "GO": go}
    job = client.submit(Language.LUA, BLOCKED_JOB, limits=BLOCKED_LIMITS, inputs=inputs)
    announced = next_event(client, ready_sub)
    if announced is None:
        ended = client.get_job(job.id).result
        raise AssertionError(f"the job did not say it was ready: {ended.message or 'still running'}")
    assert announced.job_id == job.id
    try:
        yield _child_holding(stack, marker)
    finally:
        if cancel:
            client.cancel(job.id)
        else:
            client.events.emit(events_pb2.EmitEventRequest(name=go))
        finished = client.wait(job.id, timeout=60)
    if cancel:
        assert outcome(finished) is Outcome.CANCELLED
    else:
        assert result_of(finished) is True  # the job ran to its end: it was inspected while it ran


def test_job_process_has_a_seccomp_filter_and_no_new_privs(stack: Stack, client: ScriptpoolClient) -> None:
    with _blocked_job(stack, client) as (_, child):
        status = _status(child)
        assert status["Seccomp"] == "2"
        assert status["Seccomp_filters"] == "1"
        assert status["NoNewPrivs"] == "1"
    assert_worker_healthy(client)


def test_job_process_holds_no_capabilities(stack: Stack, client: ScriptpoolClient) -> None:
    with _blocked_job(stack, client) as (_, child):
        status = _status(child)
        assert (status["CapEff"], status["CapPrm"], status["CapInh"], status["CapAmb"]) == ("0" * 16,) * 4
    assert_worker_healthy(client)


def test_job_cannot_read_the_worker_environment(stack: Stack, client: ScriptpoolClient) -> None:
    with _blocked_job(stack, client) as (worker, child):
        with open(f"/proc/{worker}/environ", "rb") as handle:
            assert b"REDIS_URL=" in handle.read()  # the worker has an environment to steal
        for process in (child, _parent(child)):  # the job and the process it was forked from
            with open(f"/proc/{process}/environ", "rb") as handle:
                leftover = handle.read()
            assert leftover.strip(b"\0") == b""  # emptied, and the inherited block zeroed
    assert_worker_healthy(client)


def test_job_is_in_a_fresh_network_namespace(stack: Stack, client: ScriptpoolClient) -> None:
    with _blocked_job(stack, client) as (worker, child):
        assert os.stat(f"/proc/{child}/ns/net").st_ino != os.stat(f"/proc/{worker}/ns/net").st_ino
        with open(f"/proc/{child}/net/dev") as handle:
            interfaces = [line.split(":")[0].strip() for line in handle.readlines()[2:]]
        assert interfaces == ["lo"]
    assert_worker_healthy(client)


def test_job_holds_only_stdio_and_the_worker_socket(stack: Stack, client: ScriptpoolClient) -> None:
    with _blocked_job(stack, client) as (_, child):
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
        beyond_stdio = [fd for fd in fds if fd > 2]
        assert len(beyond_stdio) == 1
        assert stat.S_ISSOCK(os.stat(f"/proc/{child}/fd/{beyond_stdio[0]}").st_mode)
    assert_worker_healthy(client)


def test_job_runs_in_its_own_empty_scratch_directory_removed_afterwards(stack: Stack, client: ScriptpoolClient) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    with _blocked_job(stack, client, marker, cancel=True) as (worker, child):
        worker_base = os.path.join(DEFAULT_SCRATCH_ROOT, f"worker-{worker}")  # this worker's alone
        scratch = os.path.join(worker_base, f"job-{child}")
        assert os.readlink(f"/proc/{child}/cwd") == scratch
        assert os.listdir(scratch) == [marker]  # created empty: only what the job wrote
        for private in (DEFAULT_SCRATCH_ROOT, worker_base, scratch):
            info = os.lstat(private)
            assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            assert stat.S_IMODE(info.st_mode) == 0o700
    assert_worker_healthy(client)  # a later spare child removes the dead child's directory
    assert_worker_healthy(client)
    assert wait_for(lambda: not os.path.exists(scratch), timeout=30)


def _limits_of(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits: name -> (soft, hard) as the kernel prints them."""
    with open(f"/proc/{pid}/limits") as handle:
        rows = {line[:26].strip(): line[26:].split() for line in handle.readlines()[1:]}
    return {name: (values[0], values[1]) for name, values in rows.items()}


def test_job_rlimits_equal_the_jobs_limits_in_the_running_process(stack: Stack, client: ScriptpoolClient) -> None:
    job_limits = JobLimits(**{**dataclasses.asdict(DEFAULT_LIMITS), **BLOCKED_LIMITS})
    with _blocked_job(stack, client) as (_, child):
        limits = _limits_of(child)
        peak_mapped = int(_status(child)["VmPeak"].split()[0]) * 1024
    cpu = cpu_limit_seconds(job_limits)
    jobs_in_process = WorkerSettings(redis_url="unused").jobs_per_child  # a Lua job's child may serve more
    assert limits["Max cpu time"] == (str(cpu), str(cpu * jobs_in_process + 1))
    assert limits["Max file size"] == (str(job_limits.artifact_bytes),) * 2
    assert limits["Max open files"] == (str(MAX_OPEN_FILES),) * 2
    assert limits["Max processes"] == ("0", "0")
    assert limits["Max core file size"] == ("0", "0")
    soft_as, hard_as = limits["Max address space"]
    assert soft_as == hard_as
    # what the process mapped when it was locked down + the job's memory + the fixed margin
    mapped_at_lock_down = int(soft_as) - job_limits.memory_bytes - ADDRESS_SPACE_MARGIN
    assert 0 < mapped_at_lock_down <= peak_mapped
    assert_worker_healthy(client)
