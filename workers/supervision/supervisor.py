"""Fork sandbox children and supervise one job in one child, from outside the guest.

The worker keeps one spare child forked ahead of time (fork is off the job's critical path). A
child runs one job and exits, or, after a Lua/JavaScript job that ended normally, waits for the
next job of the same principal with the same limits (`workers/supervision/child_reuse.py`). The supervisor
enforces wall time, output bytes, the global-call count and (from /proc) each job's CPU itself and
kills the child when one is passed; CPU time and memory are also enforced by the kernel (rlimits
set in the child) with the engine's own checks as the fast first line. Whatever happens, the child
is reaped and its rusage read.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from scriptpool.errors import ScriptpoolError
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox import framing
from scriptpool.sandbox.host import GlobalHost
from scriptpool.sandbox.jail import scratch_is_empty
from scriptpool.sandbox.runner import DEFAULT_WARM_UP
from scriptpool.sandbox.script_clock import MAX_CLOCK_READS
from scriptpool.v1 import jobs_pb2, sandbox_pb2
from scriptpool.values import PlainValue, from_value, to_value
from scriptpool.workers.supervision.child_reuse import (
    REUSABLE_OUTCOMES,
    CpuWatch,
    KeptChild,
    ReuseKey,
    grew_too_much,
    move_cpu_limit,
)
from scriptpool.workers.supervision.children import (
    REAP_GRACE_SECONDS,
    ChildExit,
    ChildHandle,
    ChildSource,
    LocalForks,
    SandboxChild,
    fork_child,
)

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
_RESULT_OUTCOMES = frozenset(
    value for value in jobs_pb2.Outcome.values() if value != jobs_pb2.Outcome.Value("OUTCOME_UNSPECIFIED")
)
"""The outcomes a child's result may carry (a result without one is malformed)."""


@dataclass(slots=True)
class ChildRun:
    """How a job ended in its child, with what it printed and used."""

    outcome: Outcome
    message: str = ""
    result: PlainValue = None
    error: jobs_pb2.ScriptErrorInfo | None = None
    output: list[str] = field(default_factory=list)
    output_bytes: int = 0
    output_truncated: bool = False
    cpu_time_ms: int = 0
    wall_time_ms: int = 0
    peak_memory_bytes: int = 0
    global_calls: int = 0
    handed_over: bool = False
    """The child received the job. False: it was gone first, and nothing of the job ran."""
    clock_reads: list[float] = field(default_factory=list)
    """The clock values the script read (sandbox/script_clock.py), for a replay of the job."""

    def to_job_result(self) -> jobs_pb2.JobResult:
        result = jobs_pb2.JobResult(
            outcome=self.outcome.to_proto(),
            output="".join(self.output),
            output_truncated=self.output_truncated,
            message=self.message,
            usage=jobs_pb2.JobUsage(
                cpu_time_ms=self.cpu_time_ms,
                wall_time_ms=self.wall_time_ms,
                peak_memory_bytes=self.peak_memory_bytes,
                output_bytes=self.output_bytes,
                global_calls=self.global_calls,
            ),
        )
        if self.outcome is Outcome.OK:
            result.result.CopyFrom(to_value(self.result))
        result.clock_reads.extend(self.clock_reads)
        if self.error is not None:
            result.error.CopyFrom(self.error)
        return result


class _Supervision:
    """State of one supervised run; `run()` drives it to the end."""

    def __init__(
        self,
        child: SandboxChild,
        job: sandbox_pb2.ChildJob,
        host: GlobalHost,
        on_tick: Callable[[], bool],
        on_handed_over: Callable[[], None] = lambda: None,
        reaper: Reaper | None = None,
        jobs_after: int = 0,
        keep_child: Callable[[SandboxChild, Outcome], bool] | None = None,
    ) -> None:
        self.jobs_after = jobs_after
        self.keep_child = keep_child
        self.cpu: CpuWatch | None = None
        self.on_handed_over = on_handed_over
        self.reaper = reaper
        self.child = child
        self.job = job
        self.host = host
        self.on_tick = on_tick
        self.limits = job.limits
        self.run_info = ChildRun(outcome=Outcome.INTERNAL_ERROR)
        self.final: sandbox_pb2.ChildResult | None = None
        self.stopped_for: tuple[Outcome, str] | None = None
        self.deadline = time.monotonic() + self.limits.wall_time_ms / 1000.0  # (set again when it runs)

    def kill(self, outcome: Outcome, message: str) -> None:
        if self.stopped_for is None:
            self.stopped_for = (outcome, message)
        self.child.handle.kill()

    def handle_output(self, text: str) -> None:
        info = self.run_info
        data = text.encode("utf-8", "replace")
        room = self.limits.output_bytes - info.output_bytes
        if len(data) > room:  # the child should have stopped itself; the parent does not trust it
            info.output.append(data[: max(room, 0)].decode("utf-8", "ignore"))
            info.output_bytes = self.limits.output_bytes
            info.output_truncated = True
            self.kill(Outcome.OUTPUT_EXCEEDED, f"the script printed more than {self.limits.output_bytes} bytes")
            return
        info.output.append(text)
        info.output_bytes += len(data)

    def handle_call(self, call: sandbox_pb2.GlobalCall) -> None:
        info = self.run_info
        info.global_calls += 1
        if info.global_calls > self.limits.max_global_calls:
            self.kill(
                Outcome.CALL_LIMIT_EXCEEDED,
                f"the script made more than {self.limits.max_global_calls} global calls",
            )
            return
        frame = sandbox_pb2.WorkerFrame()
        frame.reply.call_id = call.call_id
        try:
            value = self.host.call(call.op, [from_value(a) for a in call.args])
            frame.reply.value.CopyFrom(to_value(value))
        except ScriptpoolError as exc:
            frame.reply.error.code = exc.code
            frame.reply.error.message = exc.message
        # A child reads its reply at once; one that does not (its socket full) holds this send no
        # longer than the job's wall time, never the worker for good.
        self.child.sock.settimeout(max(0.001, self.deadline - time.monotonic()))
        try:
            framing.send(self.child.sock, frame)
        except TimeoutError:
            self.kill(Outcome.WALL_TIME_EXCEEDED, f"the script ran longer than {self.limits.wall_time_ms} ms")
        except OSError:
            pass  # the child is gone; the loop sees EOF next
        finally:
            self.child.sock.setblocking(False)

    def run(self) -> ChildRun:
        started = time.monotonic()
        deadline = self.deadline = started + self.limits.wall_time_ms / 1000.0
        first = sandbox_pb2.WorkerFrame()
        first.job.CopyFrom(self.job)
        first.jobs_after = self.jobs_after
        self.cpu = CpuWatch(self.child, self.limits)
        self.child.sock.setblocking(True)  # a kept child's socket is still non-blocking from its last job
        try:
            framing.send(self.child.sock, first)
            self.run_info.handed_over = True
        except OSError:
            self.stopped_for = (Outcome.INTERNAL_ERROR, "the sandbox process was not ready for the job")
        self.child.sock.setblocking(False)
        self.on_handed_over()
        reader = framing.FrameReader(sandbox_pb2.ChildFrame)
        poller = select.poll()
        poller.register(self.child.sock, select.POLLIN | select.POLLHUP)
        next_tick = started + TICK_SECONDS
        try:
            self.loop(deadline, next_tick, reader, poller)
        except BaseException:  # a cold shutdown (SystemExit) mid-job: never leave the child behind
            _reap(self.child, kill_first=True)
            self.child.sock.close()
            raise
        self.run_info.wall_time_ms = int((time.monotonic() - started) * 1000)
        return self.finish()

    def loop(self, deadline: float, next_tick: float, reader: framing.FrameReader, poller: select.poll) -> None:
        while self.final is None and self.stopped_for is None and not reader.closed:
            now = time.monotonic()
            if now >= deadline:
                self.kill(Outcome.WALL_TIME_EXCEEDED, f"the script ran longer than {self.limits.wall_time_ms} ms")
                break
            if now >= next_tick:
                next_tick = now + TICK_SECONDS
                if self.on_tick():
                    self.kill(Outcome.CANCELLED, "the job was cancelled")
                    break
                if self.cpu is not None and self.cpu.exceeded():
                    self.kill(
                        Outcome.CPU_TIME_EXCEEDED, f"the script used more than {self.limits.cpu_time_ms} ms of CPU time"
                    )
                    break
            wait_ms = max(1, int((min(deadline, next_tick) - now) * 1000))
            if not poller.poll(wait_ms):
                continue
            try:
                frames = reader.feed_from(self.child.sock)
            except framing.FrameError:
                self.kill(Outcome.SANDBOX_VIOLATION, "the sandbox process sent a malformed message")
                break
            for frame in frames:
                self.dispatch(frame)

    def dispatch(self, frame: Message) -> None:
        assert isinstance(frame, sandbox_pb2.ChildFrame)
        kind = frame.WhichOneof("body")
        if self.stopped_for is not None or self.final is not None:
            return
        if kind == "output":
            self.handle_output(frame.output)
        elif kind == "call":
            self.handle_call(frame.call)
        elif kind == "result":
            if frame.result.outcome not in _RESULT_OUTCOMES:  # unset, or a value this build does not know
                self.kill(Outcome.SANDBOX_VIOLATION, "the sandbox process sent a result without a valid outcome")
            else:
                self.final = frame.result

    def finish(self) -> ChildRun:
        info = self.run_info
        if self.final is not None and self.stopped_for is None:
            delivered = Outcome.from_proto(self.final.outcome)
            kept = self.keep_child is not None and self.keep_child(self.child, delivered)
            if kept or self.reaper is not None:
                # The child sent its result and waits for its next job (kept), or is exiting: record
                # the job now, reap the child later (tearing down an address space takes a ms or two).
                if not kept and self.reaper is not None:
                    self.child.sock.close()
                    self.reaper.adopt(self.child)
                info.cpu_time_ms = self.final.cpu_time_ms
                info.peak_memory_bytes = self.final.peak_memory_bytes
                self.take_result(self.final)
                return info
        ended = _reap(self.child, kill_first=self.final is None and self.stopped_for is None)
        self.child.sock.close()
        started_ms = int(self.cpu.start * 1000) if self.cpu is not None and self.cpu.start is not None else 0
        info.cpu_time_ms = max(ended.cpu_time_ms - started_ms, 0) if ended else 0
        info.peak_memory_bytes = ended.peak_memory_bytes if ended else 0
        if self.stopped_for is not None:
            info.outcome, info.message = self.stopped_for
        elif self.final is not None:
            self.take_result(self.final)
        else:
            info.outcome, info.message = self.classify_death(ended)
        return info

    def take_result(self, final: sandbox_pb2.ChildResult) -> None:
        info = self.run_info
        info.outcome = Outcome.from_proto(final.outcome)
        info.message = final.message
        if info.outcome is Outcome.OK:
            info.result = from_value(final.result)
        if final.HasField("error"):
            info.error = jobs_pb2.ScriptErrorInfo()
            info.error.CopyFrom(final.error)
        if info.outcome is Outcome.OUTPUT_EXCEEDED:
            info.output_truncated = True
        info.clock_reads = list(final.clock_reads[:MAX_CLOCK_READS])  # the child is not trusted with the bound

    def classify_death(self, ended: ChildExit | None) -> tuple[Outcome, str]:
        info = self.run_info
        limits = self.limits
        if ended is None:
            return Outcome.INTERNAL_ERROR, "the sandbox process was lost (its exit status is unknown)"
        status = ended.status
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and info.cpu_time_ms >= limits.cpu_time_ms):
                return Outcome.CPU_TIME_EXCEEDED, f"the script used more than {limits.cpu_time_ms} ms of CPU time"
            if sig == signal.SIGSYS:
                return Outcome.SANDBOX_VIOLATION, "the script attempted a system call the sandbox forbids"
            return Outcome.INTERNAL_ERROR, f"the sandbox process was killed by signal {signal.Signals(sig).name}"
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        if code == 3:
            return Outcome.MEMORY_EXCEEDED, f"the script used more than {limits.memory_bytes} bytes of memory"
        return Outcome.INTERNAL_ERROR, f"the sandbox process exited ({code}) without a result"


def _reap(child: SandboxChild, kill_first: bool) -> ChildExit | None:
    """Wait for the child (killing it first, or if it lingers) and return how it ended."""
    handle = child.handle
    if kill_first:
        handle.kill()
    try:
        return handle.wait(REAP_GRACE_SECONDS)
    finally:
        handle.release()


def supervise(
    child: SandboxChild,
    job: sandbox_pb2.ChildJob,
    host: GlobalHost,
    on_tick: Callable[[], bool] = lambda: False,
    on_handed_over: Callable[[], None] = lambda: None,
    reaper: Reaper | None = None,
    jobs_after: int = 0,
    keep_child: Callable[[SandboxChild, Outcome], bool] | None = None,
) -> ChildRun:
    """Run `job` in `child` and return how it ended. `on_tick` returning True cancels the job;
    `on_handed_over` runs once the child has the job (the worker forks its next spare there, while
    the child runs on another core). With a `reaper`, a child that delivered its result is reaped
    later instead of before returning. `jobs_after` tells the child how many more jobs it may get;
    `keep_child(child, outcome)` returning True after a delivered result means the caller keeps
    the child for one of them (its socket stays open)."""
    return _Supervision(child, job, host, on_tick, on_handed_over, reaper, jobs_after, keep_child).run()


class Reaper:
    """Children that delivered their result and are exiting. `collect()` reaps those that have
    exited and SIGKILLs any that linger past the grace period; `close()` reaps all of them."""

    def __init__(self, grace_seconds: float = REAP_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self._pending: list[tuple[SandboxChild, float]] = []

    def adopt(self, child: SandboxChild) -> None:
        self._pending.append((child, time.monotonic() + self.grace_seconds))

    def collect(self) -> None:
        still: list[tuple[SandboxChild, float]] = []
        now = time.monotonic()
        for child, give_up in self._pending:
            handle = child.handle
            if handle.has_exited():
                handle.release()
                continue
            if now >= give_up:
                log.warning("sandbox child %d kept running after its result; killing it", child.pid)
                _reap(child, kill_first=True)
                continue
            still.append((child, give_up))
        self._pending = still

    def close(self) -> None:
        for child, _ in self._pending:
            _reap(child, kill_first=True)
        self._pending = []

    def __len__(self) -> int:
        return len(self._pending)


RECENT_JOBS = 16
"""How many of a worker's latest jobs decide which engines its spares warm up."""


class SparePool:
    """Keeps one child waiting, so a job never waits for fork(), and the child of the last job when
    it may run the next one (`workers/supervision/child_reuse.py`). The spares come from `source`: the worker's
    zygote, or (by default) forks of this process."""

    def __init__(
        self,
        source: ChildSource | None = None,
        recent_jobs: int = RECENT_JOBS,
        jobs_per_child: int = 1,
        reaper: Reaper | None = None,
    ) -> None:
        self.source: ChildSource = source if source is not None else LocalForks()
        self.jobs_per_child = jobs_per_child
        self.reaper = reaper
        self._recent: deque[Language] = deque(maxlen=recent_jobs)
        self._kept: KeptChild | None = None
        self.reused = False
        """Whether `take_for` last gave the kept child (True) or a fresh spare."""

    @property
    def warm_languages(self) -> tuple[Language, ...]:
        """The engines a spare warms up: those of the worker's recent jobs (the cheap defaults until
        it has seen any). Warming an engine costs 1-3.5 ms of CPU per child; a job for an engine
        that is not warm still runs, paying those copy-on-write faults itself."""
        if not self._recent:
            return DEFAULT_WARM_UP
        return tuple(language for language in Language if language in self._recent)

    def take(self) -> SandboxChild:
        """A fresh spare child (never used by a job)."""
        return self.source.take(self.warm_languages)

    def take_for(self, key: ReuseKey | None, limits: jobs_pb2.JobLimits) -> tuple[SandboxChild, int]:
        """The child for a job with this reuse key (None: single-use), and how many more jobs the
        child may be given after this one. The kept child if it fits, else a fresh spare."""
        kept, self._kept = self._kept, None
        if kept is not None and key is None and not kept.child.handle.has_exited():
            self._kept = kept  # a single-use job (Python) runs in the spare; the kept child waits on
        elif kept is not None:
            fits = kept.key == key and kept.jobs_left > 0
            if fits and not kept.child.handle.has_exited() and move_cpu_limit(kept.child, limits):
                self.reused = True
                return kept.child, kept.jobs_left - 1
            self._retire(kept.child)
        self.reused = False
        jobs_after = self.jobs_per_child - 1 if key is not None else 0
        return self.take(), jobs_after

    def keep(self, child: SandboxChild, key: ReuseKey | None, jobs_after: int, outcome: Outcome) -> bool:
        """After `child` delivered a job's result: keep it for the next job with the same key if it
        may serve more jobs and the job ended normally. False: the caller lets it exit."""
        if key is None or jobs_after <= 0 or outcome not in REUSABLE_OUTCOMES:
            return False
        if grew_too_much(child, key.memory_bytes):
            return False
        if not scratch_is_empty(child.pid):  # emptied by the child before its result, checked here
            return False
        self._kept = KeptChild(child, key, jobs_after)
        return True

    def _retire(self, child: SandboxChild) -> None:
        """Close a kept child's socket: it sees EOF and exits; reap it later (or now, without a reaper)."""
        if self.reaper is not None:
            child.sock.close()
            self.reaper.adopt(child)
        else:
            child.discard()

    def expect(self, language: Language) -> None:
        """Record the language of the job being run, for the next spares' warm-up."""
        self._recent.append(language)

    def refill(self) -> None:
        self.source.request(self.warm_languages)

    def retire_kept(self) -> None:
        """Let the kept child (if any) exit."""
        kept, self._kept = self._kept, None
        if kept is not None:
            self._retire(kept.child)

    def close(self) -> None:
        self.retire_kept()
        self.source.close()


__all__ = ["ChildHandle", "ChildRun", "Reaper", "SandboxChild", "SparePool", "fork_child", "supervise"]
