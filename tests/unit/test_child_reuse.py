"""Child reuse with real forked, jailed children: which jobs share a process, and what they never share.

A child may run later Lua/JavaScript jobs of the same principal with the same limits, each in a
fresh engine instance (workers/supervision/child_reuse.py). These tests attack that boundary: another principal,
other limits, Python, a job that hit a limit, the job count, leftovers between jobs (globals, scratch
files), and each job's CPU budget in a process that keeps running.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import _scratch, cpu_limit_seconds, scratch_dir_of
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS, SCRATCH_BOUNDS, JobLimits
from scriptpool.v1 import sandbox_pb2
from scriptpool.workers.supervision.child_reuse import CpuWatch, ReuseKey, move_cpu_limit, process_cpu_seconds
from scriptpool.workers.supervision.children import SandboxChild
from scriptpool.workers.supervision.supervisor import ChildRun, Reaper, SparePool
from tests.unit.engine_helpers import AnsweringHost


def _spec(language: Language, source: str, **limits: int) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=language.to_proto(), source=source)
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, limits.get(name, getattr(DEFAULT_LIMITS, name)))
    return spec


class Worker:
    """The reuse part of a worker (`JobExecutor._run`), with children forked by this process."""

    def __init__(self, jobs_per_child: int = 64) -> None:
        self.reaper = Reaper()
        self.pool = SparePool(jobs_per_child=jobs_per_child, reaper=self.reaper)
        self.jobs_per_child = jobs_per_child
        self.host = AnsweringHost()

    def run(self, spec: sandbox_pb2.ChildJob, principal: str = "alice") -> tuple[ChildRun, int]:
        from scriptpool.workers.supervision.supervisor import supervise

        key = ReuseKey.for_job(principal, spec, self.jobs_per_child)
        child, jobs_after = self.pool.take_for(key, spec.limits)
        run = supervise(
            child,
            spec,
            self.host,
            reaper=self.reaper,
            jobs_after=jobs_after,
            keep_child=lambda kept, outcome: self.pool.keep(kept, key, jobs_after, outcome),
        )
        return run, child.pid

    def close(self) -> None:
        self.pool.retire_kept()
        self.reaper.close()
        self.pool.close()


@pytest.fixture
def worker() -> Iterator[Worker]:
    made = Worker()
    yield made
    made.close()


def _lua(source: str, **limits: int) -> sandbox_pb2.ChildJob:
    return _spec(Language.LUA, source, **limits)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def test_same_principal_and_limits_reuse_the_process_with_a_fresh_interpreter(worker: Worker) -> None:
    first, pid1 = worker.run(_lua("leak = 'from job 1'; return 1"))
    second, pid2 = worker.run(_lua("return leak == nil and 'fresh' or leak"))
    assert (first.outcome, second.outcome) == (Outcome.OK, Outcome.OK)
    assert pid1 == pid2
    assert second.result == "fresh"


def test_javascript_reuses_the_process_with_a_fresh_instance(worker: Worker) -> None:
    first, pid1 = worker.run(_spec(Language.JAVASCRIPT, "globalThis.leak = 'job 1'; 1"))
    second, pid2 = worker.run(_spec(Language.JAVASCRIPT, "typeof leak"))
    assert (first.outcome, second.outcome) == (Outcome.OK, Outcome.OK), (first.message, second.message)
    assert pid1 == pid2
    assert second.result == "undefined"


def test_another_principal_never_gets_the_process_and_the_kept_one_exits(worker: Worker) -> None:
    _, alices = worker.run(_lua("return 1"), principal="alice")
    run, mallorys = worker.run(_lua("return 2"), principal="mallory")
    assert run.outcome is Outcome.OK and run.result == 2
    assert mallorys != alices
    worker.reaper.close()
    assert _gone(alices)


def test_other_limits_or_another_language_get_another_process(worker: Worker) -> None:
    _, first = worker.run(_lua("return 1"))
    _, more_memory = worker.run(_lua("return 1", memory_bytes=DEFAULT_LIMITS.memory_bytes * 2))
    _, javascript = worker.run(_spec(Language.JAVASCRIPT, "1", memory_bytes=DEFAULT_LIMITS.memory_bytes * 2))
    assert len({first, more_memory, javascript}) == 3


def test_python_jobs_never_share_a_process(worker: Worker) -> None:
    assert ReuseKey.for_job("alice", _spec(Language.PYTHON, "1"), 64) is None
    _, first = worker.run(_spec(Language.PYTHON, "result = 1"))
    _, second = worker.run(_spec(Language.PYTHON, "result = 2"))
    assert first != second


def test_a_python_job_between_two_lua_jobs_leaves_the_kept_process_for_the_second(worker: Worker) -> None:
    _, first = worker.run(_lua("return 1"))
    python_run, python_pid = worker.run(_spec(Language.PYTHON, "result = 2"))
    third_run, third = worker.run(_lua("return leftover == nil"))
    assert python_run.outcome is Outcome.OK and python_pid != first
    assert third_run.outcome is Outcome.OK and third_run.result is True and third == first


def test_a_job_that_hit_a_limit_retires_its_process(worker: Worker) -> None:
    _, before = worker.run(_lua("return 1", cpu_time_ms=300))
    spun, spinner = worker.run(_lua("while true do end", cpu_time_ms=300))
    after_run, after = worker.run(_lua("return 3", cpu_time_ms=300))
    assert spinner == before  # same key: the kept child ran the spin...
    assert spun.outcome is Outcome.CPU_TIME_EXCEEDED
    assert after_run.outcome is Outcome.OK and after != spinner  # ...and was not kept after it


def test_a_script_error_keeps_the_process_but_not_the_error(worker: Worker) -> None:
    failed, pid1 = worker.run(_lua("error('boom')"))
    ok, pid2 = worker.run(_lua("return 'clean'"))
    assert failed.outcome is Outcome.SCRIPT_ERROR
    assert ok.outcome is Outcome.OK and ok.result == "clean" and pid1 == pid2


def test_a_process_runs_at_most_jobs_per_child_jobs() -> None:
    worker = Worker(jobs_per_child=3)
    try:
        pids = [worker.run(_lua(f"return {n}"))[1] for n in range(7)]
    finally:
        worker.close()
    assert pids[0:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3
    assert len({pids[0], pids[3], pids[6]}) == 3


def test_single_use_when_jobs_per_child_is_one() -> None:
    worker = Worker(jobs_per_child=1)
    try:
        pids = [worker.run(_lua("return 1"))[1] for _ in range(3)]
    finally:
        worker.close()
    assert len(set(pids)) == 3


DEEPEST = "/".join(["d"] * (SCRATCH_BOUNDS.max_depth - 1) + ["bottom.txt"])
SAVE_BOTH = f"Artifact.saveToFile('', 'a1', 'left/behind.txt'); return Artifact.saveToFile('', 'a1', '{DEEPEST}')"
LOOK_FOR_BOTH = f"""
local _, shallow = pcall(Artifact.storeFile, '', 'left/behind.txt')
local _, deep = pcall(Artifact.storeFile, '', '{DEEPEST}')
return {{tostring(shallow), tostring(deep)}}
"""


def test_scratch_files_of_a_job_are_gone_for_the_next_job_in_the_process(worker: Worker) -> None:
    saved, pid1 = worker.run(_lua(SAVE_BOTH))
    assert saved.outcome is Outcome.OK and saved.result == DEEPEST, saved.message
    assert os.listdir(scratch_dir_of(pid1)) == []  # emptied before the result came back
    looked, pid2 = worker.run(_lua(LOOK_FOR_BOTH))
    assert pid1 == pid2
    assert looked.outcome is Outcome.OK and isinstance(looked.result, list)
    assert all("NOT_FOUND" in str(found) for found in looked.result), looked.result


def test_a_process_whose_scratch_is_not_empty_after_a_job_is_not_reused(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker checks the kept child's scratch itself: a child whose cleanup left (or, here,
    lied about) files is retired, and the next job of the principal runs in a fresh process."""
    monkeypatch.setattr(_scratch, "empty", lambda path: True)  # inherited by the children forked below
    saved, pid1 = worker.run(_lua(SAVE_BOTH))
    assert saved.outcome is Outcome.OK and sorted(os.listdir(scratch_dir_of(pid1))) == ["d", "left"]
    looked, pid2 = worker.run(_lua(LOOK_FOR_BOTH))
    assert pid2 != pid1
    assert looked.outcome is Outcome.OK and isinstance(looked.result, list)
    assert all("NOT_FOUND" in str(found) for found in looked.result), looked.result


def _ignores(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as handle:
        mask = next(int(line.split()[1], 16) for line in handle if line.startswith("SigIgn:"))
    return bool(mask >> (signum - 1) & 1)


def test_a_file_past_the_size_limit_is_a_clear_error_and_the_process_lives_on(worker: Worker) -> None:
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # the child ignores it whatever it inherits
    try:
        big, pid1 = worker.run(
            _lua(
                "local ok, err = pcall(Artifact.saveToFile, '', 'a1', 'big.txt'); return tostring(err)",
                artifact_bytes=4,
            )
        )
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    assert big.outcome is Outcome.OK, big.message
    assert "RESOURCE_EXHAUSTED" in str(big.result) and "artifact_bytes" in str(big.result)
    assert "Errno" not in str(big.result)
    assert _ignores(pid1, signal.SIGXFSZ)  # a write past RLIMIT_FSIZE fails with EFBIG, never kills it
    fits, _ = worker.run(_lua("return Artifact.saveToFile('', 'a1', 'fits.txt')", artifact_bytes=6))
    assert fits.outcome is Outcome.OK and fits.result == "fits.txt"


def test_each_job_in_a_reused_process_gets_its_own_cpu_budget_and_usage(worker: Worker) -> None:
    busy = "local x = 0; for i = 1, 3e7 do x = x + i end; return x"
    runs = [worker.run(_lua(busy, cpu_time_ms=1000)) for _ in range(3)]
    assert len({pid for _, pid in runs}) == 1
    assert all(run.outcome is Outcome.OK for run, _ in runs)
    spun, pid = worker.run(_lua("while true do end", cpu_time_ms=1000))
    assert pid == runs[0][1]
    assert spun.outcome is Outcome.CPU_TIME_EXCEEDED  # a full budget, after three jobs' worth of CPU
    earlier = sum(run.cpu_time_ms for run, _ in runs)
    assert earlier >= 200  # the process had used real CPU before the spin...
    assert 1000 <= spun.cpu_time_ms < 1000 + earlier  # ...which neither shortened nor counted against it


def _child_at(pid: int) -> SandboxChild:
    """A SandboxChild record for a process the test manages itself (its socket is never used)."""
    ours, theirs = socket.socketpair()
    ours.close()
    theirs.close()
    return SandboxChild(pid=pid, sock=ours, forked_at=time.monotonic())


def test_the_soft_cpu_limit_moves_on_for_each_job_and_the_hard_limit_covers_them_all(worker: Worker) -> None:
    limits = JobLimits(cpu_time_ms=1500)
    spec = _lua("return 1", cpu_time_ms=limits.cpu_time_ms)
    _, pid = worker.run(spec)
    soft_after_first, hard = resource.prlimit(pid, resource.RLIMIT_CPU)
    assert soft_after_first == cpu_limit_seconds(limits)
    assert hard == cpu_limit_seconds(limits) * worker.jobs_per_child + 1
    child = _child_at(pid)
    assert move_cpu_limit(child, spec.limits)
    used = process_cpu_seconds(pid)
    assert used is not None
    assert resource.prlimit(pid, resource.RLIMIT_CPU) == (math.ceil(used) + cpu_limit_seconds(limits), hard)
    # the reading it moved the limit from is where the job's CPU watch starts, and only that job's
    assert child.cpu_seconds_at_handover is not None and child.cpu_seconds_at_handover <= used
    handed_over = child.cpu_seconds_at_handover
    assert CpuWatch(child, spec.limits).start == handed_over
    assert child.cpu_seconds_at_handover is None
    assert CpuWatch(child, spec.limits).start == process_cpu_seconds(pid)


def test_no_room_under_the_hard_limit_means_no_reuse(worker: Worker) -> None:
    spec = _lua("return 1", cpu_time_ms=1000)
    _, pid = worker.run(spec)
    resource.prlimit(pid, resource.RLIMIT_CPU, (2, 2))  # as if its earlier jobs had used it up
    run, next_pid = worker.run(spec)
    assert run.outcome is Outcome.OK and next_pid != pid


def test_cpu_watch_sees_a_process_past_its_budget_even_if_it_ignores_sigxcpu() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the spinning child
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CPU, (1, 30))
        while True:
            pass
    try:
        spec = _lua("", cpu_time_ms=100)
        watch = CpuWatch(_child_at(pid), spec.limits)
        give_up = time.monotonic() + 30
        while not watch.exceeded() and time.monotonic() < give_up:
            time.sleep(0.05)
        assert watch.exceeded()
        used = watch.used_seconds()
        assert used is not None and used > cpu_limit_seconds(JobLimits(cpu_time_ms=100))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_child_given_a_job_with_other_limits_refuses_it(worker: Worker) -> None:
    from scriptpool.sandbox import framing
    from scriptpool.workers.supervision.supervisor import supervise

    spec = _lua("return 1")
    key = ReuseKey.for_job("alice", spec, 64)
    child, jobs_after = worker.pool.take_for(key, spec.limits)
    first = supervise(
        child, spec, worker.host, reaper=worker.reaper, jobs_after=jobs_after, keep_child=lambda c, o: True
    )
    assert first.outcome is Outcome.OK and jobs_after > 0
    other = _lua("return 2", memory_bytes=DEFAULT_LIMITS.memory_bytes // 2)
    frame = sandbox_pb2.WorkerFrame(job=other, jobs_after=1)
    child.sock.setblocking(True)
    framing.send(child.sock, frame)  # the worker never does this; the child must not trust it
    with pytest.raises(EOFError):
        framing.recv(child.sock, sandbox_pb2.ChildFrame)
    exited = child.handle.wait(5)
    assert exited is not None and os.WIFEXITED(exited.status) and os.WEXITSTATUS(exited.status) == 2
    child.sock.close()


def _resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_each_job_frees_its_runtime_so_a_reused_process_does_not_grow(worker: Worker) -> None:
    big = "local t = {} for i = 1, 400000 do t[i] = tostring(i) .. 'xxxxxxxxxxxxxxxxxxxxxxxx' end return #t"
    first, pid = worker.run(_lua(big))
    second, same = worker.run(_lua(big))  # the allocator's own arenas settle over the first jobs
    assert first.outcome is second.outcome is Outcome.OK and same == pid
    settled = _resident_mib(pid)
    for _ in range(4):  # each allocates ~45 MiB: kept runtimes would add ~180 MiB over these four
        run, same = worker.run(_lua(big))
        assert run.outcome is Outcome.OK and same == pid
    assert _resident_mib(pid) - settled < 30  # allocator noise measured up to ~21 MiB


def test_a_process_that_grew_too_much_is_retired(worker: Worker) -> None:
    _, pid = worker.run(_lua("return 1"))
    child = worker.pool._kept.child if worker.pool._kept is not None else None
    assert child is not None and child.pid == pid and child.resident_after_first_job > 0
    child.resident_after_first_job -= 200 * 2**20  # as if it had grown by 200 MiB since
    _, next_pid = worker.run(_lua("return 2"))
    _, third = worker.run(_lua("return 3"))
    assert next_pid == pid  # it still ran the job it was kept for...
    assert third != pid  # ...but was not kept after it
