"""The OS jail under a real job, through the real stack: one named test per ambient capability.

Scripts cannot make system calls (Lua has no io/os), so the per-call attacks (execve, fork, sockets,
writes outside the scratch directory...) are in tests/unit/test_jail.py, in forked children. Here a
real job spins inside a real worker's sandbox child, the test inspects that process from outside
(/proc), cancels the job, and checks that the worker then runs a normal job correctly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from coordinator.client import ScriptpoolClient
from sandbox.jail import DEFAULT_SCRATCH_ROOT
from sandbox.languages import Language
from sandbox.outcomes import Outcome
from tests.conftest import Stack, wait_for
from tests.integration.helpers import assert_worker_healthy, outcome

SPIN = "while true do end"
SPIN_LIMITS = {"cpu_time_ms": 60_000, "wall_time_ms": 90_000}


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


def _jailed_children(stack: Stack) -> list[tuple[int, int]]:
    """(worker pid, child pid) of every sandbox child that has been jailed (seccomp mode 2) and is
    running (a spinning job; a child kept for its principal's next job sleeps); the child's parent
    is the worker's zygote, or the worker itself when it forks its own children."""
    jailed = []
    for worker in stack.workers:
        for pid in _descendants(worker.pid):
            try:
                status = _status(pid)
                # children of finished jobs are reaped later; skip those already exiting (zombies)
                if status.get("Seccomp") == "2" and status.get("State", "").startswith("R"):
                    jailed.append((worker.pid, pid))
            except OSError:
                continue
    return jailed


def _parent(pid: int) -> int:
    return int(_status(pid)["PPid"])


@contextmanager
def _spinning_job(stack: Stack, client: ScriptpoolClient) -> Iterator[tuple[int, int]]:
    """Run a spinning Lua job; yield (worker pid, sandbox child pid) while it runs; cancel it after."""
    job = client.submit(Language.LUA, SPIN, limits=SPIN_LIMITS)
    found: list[tuple[int, int]] = []
    try:

        def jailed() -> bool:
            found.extend(_jailed_children(stack))
            return bool(found)

        assert wait_for(jailed, timeout=30)
        yield found[0]
    finally:
        client.cancel(job.id)
        finished = client.wait(job.id, timeout=60)
    assert outcome(finished) is Outcome.CANCELLED


def test_job_process_has_a_seccomp_filter_and_no_new_privs(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (_, child):
        status = _status(child)
        assert status["Seccomp"] == "2"
        assert status["Seccomp_filters"] == "1"
        assert status["NoNewPrivs"] == "1"
    assert_worker_healthy(client)


def test_job_process_holds_no_capabilities(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (_, child):
        status = _status(child)
        assert (status["CapEff"], status["CapPrm"], status["CapInh"], status["CapAmb"]) == ("0" * 16,) * 4
    assert_worker_healthy(client)


def test_job_cannot_read_the_worker_environment(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (worker, child):
        with open(f"/proc/{worker}/environ", "rb") as handle:
            assert b"REDIS_URL=" in handle.read()  # the worker has an environment to steal
        for process in (child, _parent(child)):  # the job and the process it was forked from
            with open(f"/proc/{process}/environ", "rb") as handle:
                leftover = handle.read()
            assert leftover.strip(b"\0") == b""  # emptied, and the inherited block zeroed
    assert_worker_healthy(client)


def test_job_is_in_a_fresh_network_namespace(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (worker, child):
        assert os.stat(f"/proc/{child}/ns/net").st_ino != os.stat(f"/proc/{worker}/ns/net").st_ino
        with open(f"/proc/{child}/net/dev") as handle:
            interfaces = [line.split(":")[0].strip() for line in handle.readlines()[2:]]
        assert interfaces == ["lo"]
    assert_worker_healthy(client)


def test_job_holds_only_stdio_and_the_worker_socket(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (_, child):
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
        beyond_stdio = [fd for fd in fds if fd > 2]
        assert len(beyond_stdio) == 1
        assert stat.S_ISSOCK(os.stat(f"/proc/{child}/fd/{beyond_stdio[0]}").st_mode)
    assert_worker_healthy(client)


def test_job_runs_in_its_own_empty_scratch_directory_removed_afterwards(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (worker, child):
        worker_base = os.path.join(DEFAULT_SCRATCH_ROOT, f"worker-{worker}")  # this worker's alone
        scratch = os.path.join(worker_base, f"job-{child}")
        assert os.readlink(f"/proc/{child}/cwd") == scratch
        assert os.listdir(scratch) == []
        for private in (DEFAULT_SCRATCH_ROOT, worker_base, scratch):
            info = os.lstat(private)
            assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            assert stat.S_IMODE(info.st_mode) == 0o700
    assert_worker_healthy(client)  # a later spare child removes the dead child's directory
    assert_worker_healthy(client)
    assert wait_for(lambda: not os.path.exists(scratch), timeout=30)


def test_job_rlimits_hold_in_the_running_process(stack: Stack, client: ScriptpoolClient) -> None:
    with _spinning_job(stack, client) as (_, child):
        with open(f"/proc/{child}/limits") as handle:
            limits = {line[:26].strip(): line[26:].split() for line in handle.readlines()[1:]}
        assert limits["Max processes"][:2] == ["0", "0"]
        assert limits["Max core file size"][:2] == ["0", "0"]
        assert limits["Max open files"][:2] == ["32", "32"]
    assert_worker_healthy(client)
