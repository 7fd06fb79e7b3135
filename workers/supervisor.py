"""Fork sandbox children and supervise one job in one child, from outside the guest.

The worker keeps one spare child forked ahead of time (fork is off the job's critical path); each
child runs exactly one job and exits. The supervisor enforces wall time, output bytes and the
global-call count itself and kills the child when one is passed; CPU time and memory are enforced
by the kernel (rlimits set in the child) with the engine's own checks as the fast first line.
Whatever happens, the child is reaped and its rusage read.
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
from scriptpool.v1 import jobs_pb2, sandbox_pb2
from scriptpool.values import PlainValue, from_value, to_value

from sandbox import framing
from sandbox.host import GlobalHost
from sandbox.languages import Language
from sandbox.outcomes import Outcome
from sandbox.runner import DEFAULT_WARM_UP
from workers.children import (
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
    ) -> None:
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
        self.child.sock.setblocking(True)
        try:
            framing.send(self.child.sock, frame)
        except OSError:
            pass  # the child is gone; the loop sees EOF next
        finally:
            self.child.sock.setblocking(False)

    def run(self) -> ChildRun:
        started = time.monotonic()
        deadline = started + self.limits.wall_time_ms / 1000.0
        first = sandbox_pb2.WorkerFrame()
        first.job.CopyFrom(self.job)
        try:
            framing.send(self.child.sock, first)
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
            self.final = frame.result

    def finish(self) -> ChildRun:
        info = self.run_info
        if self.final is not None and self.stopped_for is None and self.reaper is not None:
            # The child sent its result and is exiting: record the job now, reap the child later
            # (tearing down a forked address space takes a millisecond or two).
            self.child.sock.close()
            self.reaper.adopt(self.child)
            info.cpu_time_ms = self.final.cpu_time_ms
            info.peak_memory_bytes = self.final.peak_memory_bytes
            self.take_result(self.final)
            return info
        ended = _reap(self.child, kill_first=self.final is None and self.stopped_for is None)
        self.child.sock.close()
        info.cpu_time_ms = ended.cpu_time_ms if ended else 0
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
) -> ChildRun:
    """Run `job` in `child` and return how it ended. `on_tick` returning True cancels the job;
    `on_handed_over` runs once the child has the job (the worker forks its next spare there, while
    the child runs on another core). With a `reaper`, a child that delivered its result is reaped
    later instead of before returning."""
    return _Supervision(child, job, host, on_tick, on_handed_over, reaper).run()


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
    """Keeps one child waiting, so a job never waits for fork(). The children come from `source`:
    the worker's zygote, or (by default) forks of this process."""

    def __init__(self, source: ChildSource | None = None, recent_jobs: int = RECENT_JOBS) -> None:
        self.source: ChildSource = source if source is not None else LocalForks()
        self._recent: deque[Language] = deque(maxlen=recent_jobs)

    @property
    def warm_languages(self) -> tuple[Language, ...]:
        """The engines a spare warms up: those of the worker's recent jobs (the cheap defaults until
        it has seen any). Warming an engine costs 1-3.5 ms of CPU per child; a job for an engine
        that is not warm still runs, paying those copy-on-write faults itself."""
        if not self._recent:
            return DEFAULT_WARM_UP
        return tuple(language for language in Language if language in self._recent)

    def take(self) -> SandboxChild:
        return self.source.take(self.warm_languages)

    def expect(self, language: Language) -> None:
        """Record the language of the job being run, for the next spares' warm-up."""
        self._recent.append(language)

    def refill(self) -> None:
        self.source.request(self.warm_languages)

    def close(self) -> None:
        self.source.close()


__all__ = ["ChildHandle", "ChildRun", "Reaper", "SandboxChild", "SparePool", "fork_child", "supervise"]
