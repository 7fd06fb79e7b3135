"""The sandbox child: runs scripts in a jailed process, each in a fresh engine instance.

The worker forks this process ahead of time with one end of a socketpair. The child waits for its
`ChildJob`, jails itself, runs the script with a fresh engine, streams print output, asks the worker
to make each global call, and sends one `ChildResult`. Then it `_exit`s, unless the worker said it
may give it more jobs (`WorkerFrame.jobs_after`, Lua and JavaScript only, for the same principal and
limits: see docs/adr/0003-child-reuse-within-a-principal.md): it then builds the next job's fresh engine instance, still
inside the jail, and waits for that job or for EOF. It holds no credentials, no Redis and no gRPC
connection: everything outside the process goes through the socket.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from typing import NoReturn

from scriptpool.errors import InvalidArgument, error_for_code
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox import framing
from scriptpool.sandbox.errors import LimitExceeded, SandboxError, ScriptError
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.jail import apply_jail, lock_down_spare, prepare_spare, release_scratch
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import DEFAULT_WARM_UP, ScriptJob, prepare_instance, runner_for, warm_up_spare
from scriptpool.sandbox.scratch_files import ScratchFileHost
from scriptpool.sandbox.script_clock import MAX_CLOCK_READS
from scriptpool.v1 import sandbox_pb2
from scriptpool.values import PlainValue, from_value, from_value_map, to_value


class SocketHost:
    """GlobalHost that asks the worker, over the socket, to make each call."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._next_id = 0
        self.calls = 0

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self._next_id += 1
        self.calls += 1
        frame = sandbox_pb2.ChildFrame()
        frame.call.call_id = self._next_id
        frame.call.op = op
        for arg in args:
            frame.call.args.append(to_value(arg))
        framing.send(self._sock, frame)
        reply = framing.recv(self._sock, sandbox_pb2.WorkerFrame).reply
        if reply.WhichOneof("body") == "error":
            raise error_for_code(reply.error.code, reply.error.message)
        return from_value(reply.value)


class SocketOutput(OutputSink):
    """OutputSink that streams each accepted chunk to the worker, so nothing is lost if killed."""

    def __init__(self, sock: socket.socket, limit_bytes: int) -> None:
        super().__init__(limit_bytes)
        self._sock = sock

    def _emit(self, text: str) -> None:
        frame = sandbox_pb2.ChildFrame()
        frame.output = text
        framing.send(self._sock, frame)


def script_job_from_frame(frame: sandbox_pb2.ChildJob) -> ScriptJob:
    limits = JobLimits.from_message(frame.limits)
    return ScriptJob(
        language=Language.from_proto(frame.language),
        source=frame.source,
        limits=limits,
        job_id=frame.job_id,
        session_id=frame.session_id,
        inputs=from_value_map(frame.inputs),
        random_seed=frame.random_seed,
        clock_start=frame.clock_start,
        clock_replay=tuple(frame.clock_replay),
    )


MAX_MESSAGE_CHARS = 8192


def _clip(text: str) -> str:
    """A script controls its error messages: keep them to a size a person (and Redis) can use."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"... [{len(text) - MAX_MESSAGE_CHARS} more characters cut]"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(job: ScriptJob, sock: socket.socket, scratch_dir: str | None = None) -> sandbox_pb2.ChildResult:
    """Run the script and describe how it ended. Never raises."""
    cpu_before = _cpu_seconds()
    result = sandbox_pb2.ChildResult()
    host = SocketHost(sock)
    files = ScratchFileHost(host, scratch_dir, job.limits.artifact_bytes, max_read_bytes=job.limits.memory_bytes)
    try:
        value = runner_for(job.language).run(job, files, SocketOutput(sock, job.limits.output_bytes))
        try:
            result.result.CopyFrom(to_value(value))
        except InvalidArgument as exc:
            raise ScriptError(job.language.value, f"the script's result cannot be returned: {exc.message}") from exc
        result.outcome = Outcome.OK.to_proto()
    except ScriptError as exc:
        result.outcome = exc.outcome.to_proto()
        result.message = _clip(exc.message)
        result.error.message = _clip(exc.message)
        result.error.line = exc.line
        result.error.traceback = _clip(exc.guest_traceback)
    except (SandboxError, LimitExceeded) as exc:
        result.outcome = exc.outcome.to_proto()
        result.message = exc.message
    except MemoryError:
        result.outcome = Outcome.MEMORY_EXCEEDED.to_proto()
        result.message = f"the script used more than {job.limits.memory_bytes} bytes of memory"
    except Exception as exc:
        result.outcome = Outcome.INTERNAL_ERROR.to_proto()
        result.message = f"internal sandbox error ({type(exc).__name__})"
    finally:
        files.close_all()
    result.global_calls = host.calls
    result.clock_reads.extend(job.clock_reads[:MAX_CLOCK_READS])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_time_ms = int((usage.ru_utime + usage.ru_stime - cpu_before) * 1000)
    result.peak_memory_bytes = usage.ru_maxrss * 1024
    return result


def _same_process_limits(first: JobLimits, later: JobLimits) -> bool:
    """The limits a process keeps for its life (address space, file size) must match the first job's
    for a later job to run here; the worker only reuses a child for identical limits."""
    return first.memory_bytes == later.memory_bytes and first.artifact_bytes == later.artifact_bytes


def _serve(sock: socket.socket) -> None:
    """Run the first job, jailing the process for it, then any later jobs the worker gives it."""
    frame = framing.recv(sock, sandbox_pb2.WorkerFrame)
    job = script_job_from_frame(frame.job)
    jobs_after = frame.jobs_after
    jail = apply_jail(job.limits, sock.fileno(), jobs_in_process=1 + jobs_after)
    first_limits = job.limits
    while True:
        out = sandbox_pb2.ChildFrame()
        out.result.CopyFrom(run_job(job, sock, jail.scratch_dir))
        # A process that may run another job empties its scratch before the result goes out, so the
        # worker can check it is empty before keeping it (`SparePool.keep`); if it cannot be emptied,
        # the process ends after this job (its parent or the next spare removes the directory).
        emptied = release_scratch(jail) if jobs_after else False
        framing.send(sock, out)
        if jobs_after == 0:
            release_scratch(jail)
            return
        if not emptied:
            return
        prepare_instance(job.language, job.limits.memory_bytes)  # the next job's, fresh
        try:
            frame = framing.recv(sock, sandbox_pb2.WorkerFrame)
        except EOFError:  # the worker will not give this child another job
            return
        job = script_job_from_frame(frame.job)
        if not _same_process_limits(first_limits, job.limits):
            raise SandboxError("a reused sandbox process was given a job with different limits")
        jobs_after = min(jobs_after - 1, frame.jobs_after)


def child_main(sock: socket.socket, warm_languages: tuple[Language, ...] = DEFAULT_WARM_UP) -> NoReturn:
    """Entry point in the forked child. Never returns: the process always ends with `os._exit`."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker owns Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # A write past RLIMIT_FSIZE must fail with EFBIG (a clear error to the script), not kill the
        # process: ignored explicitly, whatever the forking process or an engine did to it.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        prepare_spare()  # same for every job (network namespace): done while the spare waits
        warm_up_spare(warm_languages)  # engine copy-on-write faults, off the job's critical path
        lock_down_spare(sock.fileno())  # the job-independent jail layers, also before the job
        _serve(sock)
    except MemoryError:
        code = 3
    except BaseException:
        code = 2
    os._exit(code)


__all__ = ["child_main", "run_job", "script_job_from_frame"]
