"""The supervisor's reaper: children that delivered a result are reaped later, never left behind."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
from scriptpool.v1 import sandbox_pb2
from scriptpool.workers.supervision.supervisor import Reaper, SandboxChild, fork_child, supervise


class NoHost:
    def call(self, op: str, args: list[object]) -> object:
        return None


def _spec(source: str) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=Language.LUA.to_proto(), source=source)
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, getattr(DEFAULT_LIMITS, name))
    return spec


_SLEEPERS: list[subprocess.Popen[bytes]] = []


def _sleeper() -> int:
    """A child process of ours that would run for a minute (spawned, not forked from pytest)."""
    proc = subprocess.Popen(["sleep", "60"])
    _SLEEPERS.append(proc)
    return proc.pid


def teardown_function() -> None:
    for proc in _SLEEPERS:  # reaped by the Reaper under test: tell Popen so it does not warn
        proc.returncode = proc.returncode if proc.returncode is not None else -9
    _SLEEPERS.clear()


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def test_result_is_recorded_before_the_child_is_reaped_and_the_child_is_reaped_after() -> None:
    reaper = Reaper()
    child = fork_child()
    exited = os.pidfd_open(child.pid)
    spin = "local t = os.clock() while os.clock() - t < 0.06 do end return 40 + 2"  # 60 ms of CPU
    try:
        run = supervise(child, _spec(spin), NoHost(), reaper=reaper)  # type: ignore[arg-type]
        assert run.outcome is Outcome.OK and run.result == 42
        assert run.cpu_time_ms >= 50 and run.peak_memory_bytes > 0  # the child's own rusage
        assert len(reaper) == 1
        assert select.select([exited], [], [], 30)[0] == [exited]  # the child has exited (not yet reaped)
    finally:
        os.close(exited)
    reaper.collect()
    assert len(reaper) == 0
    assert not _alive(child.pid)


def test_a_child_that_lingers_after_its_result_is_killed() -> None:
    pid = _sleeper()  # a "child" that never exits
    a, b = socket.socketpair()
    a.close()
    b.close()
    reaper = Reaper(grace_seconds=0.2)
    reaper.adopt(SandboxChild(pid=pid, sock=a, forked_at=time.monotonic()))
    reaper.collect()
    assert len(reaper) == 1 and _alive(pid)
    time.sleep(0.3)
    reaper.collect()
    assert len(reaper) == 0
    assert not _alive(pid)


def test_close_kills_and_reaps_everything_pending() -> None:
    pid = _sleeper()
    reaper = Reaper(grace_seconds=60)
    a, _ = socket.socketpair()
    reaper.adopt(SandboxChild(pid=pid, sock=a, forked_at=time.monotonic()))
    reaper.close()
    a.close()
    _.close()
    assert len(reaper) == 0 and not _alive(pid)


class _RecordingSource:
    """A ChildSource that records what each spare was asked to warm (no processes)."""

    def __init__(self) -> None:
        self.requests: list[tuple[Language, ...]] = []

    def request(self, languages: tuple[Language, ...]) -> None:
        self.requests.append(languages)

    def take(self, languages: tuple[Language, ...]) -> SandboxChild:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def test_spares_warm_the_engines_of_the_recent_jobs_only() -> None:
    from scriptpool.workers.supervision.supervisor import SparePool

    source = _RecordingSource()
    pool = SparePool(source, recent_jobs=3)
    pool.refill()
    assert list(source.requests[-1]) == [Language.LUA, Language.PYTHON]  # nothing seen yet: the cheap defaults
    pool.expect(Language.LUA)
    pool.refill()
    assert list(source.requests[-1]) == [Language.LUA]  # a Lua-only worker stops warming Python
    pool.expect(Language.JAVASCRIPT)
    pool.refill()
    assert set(source.requests[-1]) == {Language.LUA, Language.JAVASCRIPT}
    for _ in range(3):
        pool.expect(Language.PYTHON)
    pool.refill()
    assert list(source.requests[-1]) == [Language.PYTHON]  # JS and Lua fell out of the window


def test_a_waiting_spare_is_already_locked_down_and_the_job_adds_its_limits_and_seccomp() -> None:
    """Job-independent layers are applied while the spare waits (off the job's critical path);
    rlimits and seccomp, which depend on or must follow the job, come with the job."""
    child = fork_child((Language.LUA,))
    reaper = Reaper()
    try:
        give_up = time.monotonic() + 10
        status: dict[str, str] = {}
        while time.monotonic() < give_up:
            with open(f"/proc/{child.pid}/status") as handle:
                status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
            if status.get("NoNewPrivs", "").strip() == "1" and status.get("CapEff", "").strip() == "0" * 16:
                break
            time.sleep(0.01)
        assert status["NoNewPrivs"].strip() == "1" and status["CapEff"].strip() == "0" * 16
        assert status["Seccomp"].strip() == "0"  # not before the job
        run = supervise(child, _spec("return 1"), NoHost(), reaper=reaper)  # type: ignore[arg-type]
        assert run.outcome is Outcome.OK and run.result == 1
    finally:
        reaper.close()
