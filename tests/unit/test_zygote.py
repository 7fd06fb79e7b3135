"""The zygote: children come from it, their endings are reported through it, and losing it never
loses or hangs a job (real processes, real jailed children)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import scratch_base, scratch_dir_of
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
from scriptpool.sandbox.zygote import CHILD, EXITED, SPAWN, Message, languages_mask
from scriptpool.sandbox.zygote._protocol import languages_from_mask
from scriptpool.v1 import sandbox_pb2
from scriptpool.workers.supervision import zygote as zygote_module
from scriptpool.workers.supervision.children import LocalForks
from scriptpool.workers.supervision.supervisor import ChildRun, Reaper, SparePool, supervise
from scriptpool.workers.supervision.zygote import ZygoteChild, ZygoteSource
from tests.unit.scratch_trees import plant_pathological_tree

SPIN = "while true do end"


class NoHost:
    def call(self, op: str, args: list[object]) -> object:
        return None


def _spec(source: str, language: Language = Language.LUA, **limits: int) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=language.to_proto(), source=source)
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, limits.get(name, getattr(DEFAULT_LIMITS, name)))
    return spec


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(next(line for line in handle if line.startswith("PPid:")).split()[1])


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _ppid(int(entry)) == pid:
                    found.append(int(entry))
            except (OSError, StopIteration):
                continue
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return any(line.startswith("State:") and "Z" in line for line in handle)
    except FileNotFoundError:
        return True


@pytest.fixture
def pool() -> Iterator[SparePool]:
    pool = SparePool(ZygoteSource())
    yield pool
    pool.close()


def _zygote_pid(pool: SparePool) -> int:
    assert isinstance(pool.source, ZygoteSource) and pool.source.zygote is not None
    return pool.source.zygote.pid


def _run(pool: SparePool, spec: sandbox_pb2.ChildJob, **kwargs: object) -> ChildRun:
    return supervise(pool.take(), spec, NoHost(), on_handed_over=pool.refill, **kwargs)  # type: ignore[arg-type]


def test_messages_round_trip_and_masks_name_languages() -> None:
    message = Message(EXITED, pid=123, value=9, utime_us=5, stime_us=6, maxrss_kb=7)
    assert Message.unpack(message.pack()) == message
    assert languages_from_mask(languages_mask((Language.PYTHON, Language.LUA))) == (Language.LUA, Language.PYTHON)
    with pytest.raises(ValueError):
        Message.unpack(b"JUNK" + Message(SPAWN).pack()[4:])
    with pytest.raises(ValueError):
        Message.unpack(Message(CHILD).pack()[:-1])


def test_children_come_from_the_zygote_and_run_jobs(pool: SparePool) -> None:
    pool.refill()
    child = pool.take()
    zygote = _zygote_pid(pool)
    assert isinstance(child.handle, ZygoteChild)
    assert _ppid(child.pid) == zygote != os.getpid()
    run = supervise(child, _spec("return 40 + 2"), NoHost(), on_handed_over=pool.refill)  # type: ignore[arg-type]
    assert run.outcome is Outcome.OK and run.result == 42
    js = _run(pool, _spec("[1, 2].map(x => x * 3)", Language.JAVASCRIPT))
    assert js.outcome is Outcome.OK and js.result == [3, 6]
    py = _run(pool, _spec("sum(range(5))", Language.PYTHON))
    assert py.outcome is Outcome.OK and py.result == 10
    assert _zygote_pid(pool) == zygote  # one zygote served them all


def test_the_zygote_has_no_worker_secrets(pool: SparePool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:secret@example:6379/0")
    pool.refill()
    pool.take().discard()
    with open(f"/proc/{_zygote_pid(pool)}/environ", "rb") as handle:
        environ = handle.read()
    # started with a cut-down environment, emptied once warm: its children inherit nothing to wipe
    assert b"secret" not in environ and environ.strip(b"\x00") == b""


def _signal_after_cpu(pid: int, seconds: float, signum: int) -> None:
    """Send `signum` to `pid` once it has used `seconds` of CPU (read from /proc: a handshake on the
    child's own work, not on the time that passed, so a loaded machine cannot make it early)."""
    ticks = os.sysconf("SC_CLK_TCK")
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return
        if (int(fields[11]) + int(fields[12])) / ticks >= seconds:
            os.kill(pid, signum)
            return
        time.sleep(0.01)


def test_deaths_are_classified_from_the_status_and_rusage_the_zygote_reports(pool: SparePool) -> None:
    """No result: the outcome comes from the wait status and CPU time sent by the zygote."""
    pool.refill()
    child = pool.take()
    handle = child.handle
    threading.Thread(target=_signal_after_cpu, args=(child.pid, 0.35, signal.SIGXCPU), daemon=True).start()
    run = supervise(child, _spec(SPIN, cpu_time_ms=60_000, wall_time_ms=60_000), NoHost())  # type: ignore[arg-type]
    assert run.outcome is Outcome.CPU_TIME_EXCEEDED
    assert run.cpu_time_ms >= 300 and run.peak_memory_bytes > 0  # measured by the kernel, sent by the zygote
    assert isinstance(handle, ZygoteChild) and handle.pidfd == -1  # released

    killed = _run(pool, _spec(SPIN, cpu_time_ms=1000, wall_time_ms=60_000))
    assert killed.outcome is Outcome.CPU_TIME_EXCEEDED  # RLIMIT_CPU in the child, status via the zygote


def test_wall_time_and_cancel_kill_through_the_pidfd(pool: SparePool) -> None:
    wall = _run(pool, _spec(SPIN, cpu_time_ms=60_000, wall_time_ms=400))
    assert wall.outcome is Outcome.WALL_TIME_EXCEEDED
    ticks = iter([False, True])
    cancelled = _run(pool, _spec(SPIN, cpu_time_ms=60_000, wall_time_ms=60_000), on_tick=lambda: next(ticks, True))
    assert cancelled.outcome is Outcome.CANCELLED
    assert _run(pool, _spec("return 1")).outcome is Outcome.OK


def test_memory_limit_still_holds(pool: SparePool) -> None:
    run = _run(pool, _spec("local t = {} for i = 1, 1e8 do t[i] = i end", memory_bytes=16 * 2**20))
    assert run.outcome is Outcome.MEMORY_EXCEEDED


def test_a_zygote_killed_mid_job_ends_the_job_and_is_replaced(pool: SparePool) -> None:
    pool.refill()
    child = pool.take()
    first = _zygote_pid(pool)
    threading.Timer(0.5, lambda: os.kill(first, signal.SIGKILL)).start()
    run = supervise(child, _spec(SPIN, cpu_time_ms=60_000, wall_time_ms=60_000), NoHost())  # type: ignore[arg-type]
    assert run.outcome is Outcome.INTERNAL_ERROR  # a categorised ending, not a hang
    assert _gone(child.pid)
    after = _run(pool, _spec("return 7"))
    assert after.outcome is Outcome.OK and after.result == 7
    assert _zygote_pid(pool) != first
    assert isinstance(pool.source, ZygoteSource) and pool.source.restarts == 1


def test_a_zygote_killed_while_the_spare_waits_costs_no_job(pool: SparePool) -> None:
    assert _run(pool, _spec("return 1")).outcome is Outcome.OK  # leaves a spare requested
    first = _zygote_pid(pool)
    os.kill(first, signal.SIGKILL)
    give_up = time.monotonic() + 10
    while not _gone(first) and time.monotonic() < give_up:
        time.sleep(0.01)
    run = _run(pool, _spec("return 2"))
    assert run.outcome is Outcome.OK and run.result == 2
    assert _zygote_pid(pool) != first


def test_a_zygote_that_keeps_failing_is_replaced_by_worker_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self) -> None:
            raise OSError("cannot start")

    monkeypatch.setattr(zygote_module, "ZygoteProcess", Broken)
    monkeypatch.setattr(zygote_module, "prewarm", lambda: [])
    source = ZygoteSource()
    pool = SparePool(source)
    try:
        run = _run(pool, _spec("return 3"))
        assert run.outcome is Outcome.OK and run.result == 3
        assert isinstance(source.fallback, LocalForks)
    finally:
        pool.close()


def test_nothing_is_left_running_after_close() -> None:
    pool = SparePool(ZygoteSource())
    reaper = Reaper()
    assert _run(pool, _spec("return 1"), reaper=reaper).outcome is Outcome.OK
    zygote = _zygote_pid(pool)
    pool.refill()
    children = _children_of(zygote)
    assert children  # the spare, and maybe the finished child still exiting
    reaper.close()
    pool.close()
    assert _gone(zygote)
    assert all(_gone(pid) for pid in children)


class PlantingHost:
    """Answers every global call with nil; on the first, plants a pathological tree (3000 levels, an
    unreadable directory, symlinks out) in the calling child's scratch directory, which exists then."""

    def __init__(self, scratch: Path, outside: Path) -> None:
        self.scratch = scratch
        self.outside = outside
        self.kept: list[Path] = []

    def call(self, op: str, args: list[object]) -> object:
        if not self.kept:
            self.kept = plant_pathological_tree(self.scratch, self.outside)
        return None


def _pid_above_pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as handle:
        return int(handle.read()) + 1


def test_a_pathological_scratch_tree_never_stops_the_zygote(pool: SparePool, tmp_path: Path) -> None:
    """Before: shutil.rmtree's RecursionError in the zygote's reap loop killed it, and every restart."""
    pool.refill()
    child = pool.take()
    zygote = _zygote_pid(pool)
    host = PlantingHost(Path(scratch_dir_of(child.pid)), tmp_path / "outside")
    spec = _spec("State.get('global', 'k') " + SPIN, wall_time_ms=1000)
    run = supervise(child, spec, host, on_handed_over=pool.refill)  # type: ignore[arg-type]
    assert run.outcome is Outcome.WALL_TIME_EXCEEDED and host.kept  # killed: the zygote cleans up
    assert not os.path.lexists(scratch_dir_of(child.pid))  # removed before the zygote reported the exit
    assert all(path.read_text().startswith("keep me") for path in host.kept)  # no symlink followed
    for number in range(3):  # the same zygote keeps serving
        after = _run(pool, _spec(f"return {number}"))
        assert after.outcome is Outcome.OK and after.result == number
    assert _zygote_pid(pool) == zygote
    assert isinstance(pool.source, ZygoteSource) and pool.source.restarts == 0


def test_a_zygote_starts_and_serves_over_a_dead_childs_pathological_tree(tmp_path: Path) -> None:
    """The start-up sweep meets a tree left by a child that died with its zygote."""
    left = Path(scratch_base()) / f"job-{_pid_above_pid_max()}"
    left.mkdir(mode=0o700)
    kept = plant_pathological_tree(left, tmp_path / "outside")
    pool = SparePool(ZygoteSource())
    try:
        run = _run(pool, _spec("return 5"))
        assert run.outcome is Outcome.OK and run.result == 5
        assert isinstance(pool.source, ZygoteSource) and pool.source.restarts == 0
        assert not os.path.lexists(left)  # swept at start-up, before the first child
        assert all(path.read_text().startswith("keep me") for path in kept)
    finally:
        pool.close()
