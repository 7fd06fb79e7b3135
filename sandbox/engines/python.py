"""Restricted Python scripts on RestrictedPython, one fresh namespace per job.

RestrictedPython restricts the language, not the environment, so it is defence in depth under the
OS jail of the sandbox child. What this layer does:

- **Compile**: `compile_restricted_exec` with a policy that also (1) assigns the last top-level
  expression statement to the result, as a notebook cell does, and (2) starts every `except`
  handler and `finally` block with a limit check (see below). Names and attributes starting with
  `_` are refused at compile time; `exec`/`eval`/`nonlocal`/async/`except*` are not allowed.
- **Run**: builtins, guards and importable modules are allowlists (see `python_env`). The globals
  `Session`/`Artifact`/`State`/`Hook`/`Event` come from the catalog with snake_case aliases; a
  failed call raises `ScriptpoolError` (a subclass per code, with `.code` and `.message`).
- **CPU**: a `sys.settrace` line budget on the script's own frames (filename `<script>`): every
  `CHECK_EVERY_LINES` lines it compares `time.process_time()` with the job's budget. Host frames
  are not traced. A spin inside one C call (`sum(range(10**12))`) is never seen by the tracer;
  RLIMIT_CPU in the child stops it from outside.
- **Memory**: three layers. (1) At each budget check the process's resident set
  (/proc/self/statm) is compared with its size when the job started plus `memory_bytes`; this is
  what stops gradual growth, also when the engine runs in-process without a jail. (2) A
  `MemoryError` seen in a script frame is the memory limit, even if the script catches it.
  (3) In the child RLIMIT_AS turns one huge allocation into that MemoryError. tracemalloc was
  rejected: it slows every allocation and is process-wide state.
- **Limits cannot be caught**: limits are raised as `_LimitHit`, a `BaseException` the script
  cannot name, and the first one is remembered. A bare `except:` or `except BaseException:` still
  catches it, so every handler and `finally` starts with `_limit_check_()`, which raises it again.
  CPython switches tracing off when a trace function raises; `_limit_check_()` and the
  unraisable-exception hook (generator finalizers) switch it back on for the script's frames.
- **Errors**: messages and the guest traceback are built from the script's own frames and lines
  only; host paths are scrubbed from exception messages.
"""

from __future__ import annotations

import ast
import os
import sys
import time
import types
import warnings
from typing import Any, NoReturn, cast

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer

from scriptpool.errors import ScriptpoolError
from scriptpool.sandbox.catalog import FILE_OP_PREFIX
from scriptpool.sandbox.engines import python_env
from scriptpool.sandbox.engines.python_env import Environment, GuestError, guest_error, to_plain
from scriptpool.sandbox.errors import LIMIT_ERRORS, LimitExceeded, ScriptError
from scriptpool.sandbox.host import HOST_FAULT, GlobalHost, OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, seed_for
from scriptpool.sandbox.script_clock import ScriptClock
from scriptpool.values import PlainValue

LANGUAGE = "python"
SCRIPT_FILENAME = "<script>"
RESULT_NAME = "__result__"
CHECK_EVERY_LINES = 1000
TRACEBACK_FRAMES = 20  # a traceback longer than this keeps its first and last frames

_LIMIT_MESSAGES = {  # the same wording as the Lua engine
    "cpu": "the script used more than {limits.cpu_time_ms} ms of CPU time",
    "wall": "the script ran longer than {limits.wall_time_ms} ms",
    "memory": "the script used more than {limits.memory_bytes} bytes of memory",
    "output": "the script printed more than {limits.output_bytes} bytes",
    "calls": "the script made more than {limits.max_global_calls} global calls",
}


class _LimitHit(BaseException):
    """A limit was reached. Never reachable by name from a script; `except Exception` misses it."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# ------------------------------------------------------------------ compiling


def _limit_check_stmt(where: ast.AST) -> ast.stmt:
    check = ast.Expr(ast.Call(func=ast.Name("_limit_check_", ast.Load()), args=[], keywords=[]))
    ast.copy_location(check, where)
    return ast.fix_missing_locations(check)


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus the notebook-style result and limit re-checks in handlers.

    The added nodes are inserted after the base class has visited a node, so the names they use
    (which start with `_`) are not subject to the script's name checks.
    """

    def visit_Module(self, node: ast.Module) -> Any:
        node = cast(ast.Module, super().visit_Module(node))
        if node.body and isinstance(node.body[-1], ast.Expr):
            last = node.body[-1]
            assign = ast.Assign(targets=[ast.Name(RESULT_NAME, ast.Store())], value=last.value)
            node.body[-1] = ast.fix_missing_locations(ast.copy_location(assign, last))
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> Any:
        node = cast(ast.ExceptHandler, super().visit_ExceptHandler(node))
        node.body.insert(0, _limit_check_stmt(node.body[0]))
        return node

    def visit_Try(self, node: ast.Try) -> Any:
        node = cast(ast.Try, super().visit_Try(node))
        if node.finalbody:
            node.finalbody.insert(0, _limit_check_stmt(node.finalbody[0]))
        return node


def compile_script(source: str) -> types.CodeType:
    """Parse and restrict the script; a ScriptError (with the line) if it is not valid or not allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings from the script are the script's business
        try:
            tree = ast.parse(source, SCRIPT_FILENAME, "exec")
        except SyntaxError as exc:
            line = exc.lineno or 0
            raise ScriptError(LANGUAGE, f"syntax error: {exc.msg}", line, f"line {line}: {exc.msg}") from None
        result = compile_restricted_exec(tree, filename=SCRIPT_FILENAME, policy=_Policy)
    if result.code is None:
        first = result.errors[0] if result.errors else "Line 0: the script could not be compiled"
        head, _, message = first.partition(": ")
        line = int(head[5:]) if head[5:].isdigit() else 0
        raise ScriptError(LANGUAGE, f"not allowed in the sandbox: {message}", line, "\n".join(result.errors))
    return result.code


# ------------------------------------------------------------------ the budget


class _Budget:
    """CPU and memory budget, the remembered limit and the trace functions that enforce them."""

    def __init__(self, limits: JobLimits) -> None:
        self.limits = limits
        self.hit: str | None = None
        self.deadline = time.process_time() + limits.cpu_time_ms / 1000
        self._page = os.sysconf("SC_PAGE_SIZE")
        try:
            self._statm: int | None = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # RLIMIT_AS in the child still holds
            self._statm = None
        self._rss_limit = self._rss() + limits.memory_bytes
        self.global_trace, self.local_trace = self._tracers()

    def close(self) -> None:
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def _rss(self) -> int:
        if self._statm is None:
            return 0
        return int(os.pread(self._statm, 128, 0).split()[1]) * self._page

    def trip(self, kind: str) -> NoReturn:
        if self.hit is None:
            self.hit = kind
        raise _LimitHit(self.hit)

    def check(self) -> None:
        if time.process_time() > self.deadline:
            self.trip("cpu")
        if self._statm is not None and self._rss() > self._rss_limit:
            self.trip("memory")

    def recheck(self) -> None:
        """`_limit_check_()` at the top of every handler: re-arm tracing, re-raise a caught limit."""
        if sys.gettrace() is not self.global_trace:
            self.rearm(sys._getframe(1))
        if self.hit is not None:
            raise _LimitHit(self.hit)

    def rearm(self, frame: types.FrameType | None) -> None:
        sys.settrace(self.global_trace)
        while frame is not None:
            if frame.f_code.co_filename == SCRIPT_FILENAME:
                frame.f_trace = self.local_trace
            frame = frame.f_back

    def unraisable(self, unraisable: Any) -> None:
        """A limit raised in a generator finalizer is swallowed by CPython: keep the budget armed."""
        if isinstance(unraisable.exc_value, MemoryError) and self.hit is None:
            self.hit = "memory"
        self.rearm(sys._getframe(1))

    def _tracers(self) -> tuple[Any, Any]:
        budget = self
        left = CHECK_EVERY_LINES

        def local_trace(frame: types.FrameType, event: str, arg: Any) -> Any:
            nonlocal left
            if budget.hit is not None:
                if event == "exception":
                    return local_trace
                raise _LimitHit(budget.hit)
            left -= 1
            if left <= 0:
                left = CHECK_EVERY_LINES
                budget.check()
            if event == "exception" and issubclass(arg[0], MemoryError):
                budget.trip("memory")
            return local_trace

        def global_trace(frame: types.FrameType, event: str, arg: Any) -> Any:
            if frame.f_code.co_filename != SCRIPT_FILENAME:
                return None
            if budget.hit is not None:
                raise _LimitHit(budget.hit)
            return local_trace

        return global_trace, local_trace


# ------------------------------------------------------------------ running


class PythonRunner:
    """Runs restricted Python source in a fresh namespace."""

    def run(self, job: ScriptJob, host: GlobalHost, output: OutputSink) -> PlainValue:
        code = compile_script(job.source)
        budget = _Budget(job.limits)
        calls = 0

        def call(op: str, args: list[PlainValue]) -> PlainValue:
            nonlocal calls
            if not op.startswith(FILE_OP_PREFIX):  # the job's own files: local, not global calls
                calls += 1
            if calls > job.limits.max_global_calls:
                budget.trip("calls")
            try:
                return host.call(op, args)
            except LimitExceeded as exc:
                budget.trip(_limit_kind(exc))
            except ScriptpoolError as exc:
                raise guest_error(exc.code, exc.message) from None
            except MemoryError:
                budget.trip("memory")
            except Exception:  # a host fault: no Python text or object reaches the script
                raise guest_error("INTERNAL", HOST_FAULT) from None

        def write(text: str) -> None:
            try:
                output.write(text)
            except LimitExceeded:
                budget.trip("output")

        clock = ScriptClock(job.clock_start, job.clock_replay)
        env = Environment(call, write, budget.recheck, job.inputs, seed_for(job), clock).globals
        previous_trace, previous_hook = sys.gettrace(), sys.unraisablehook
        sys.unraisablehook = budget.unraisable
        sys.settrace(budget.global_trace)
        try:
            result, failure = _execute(code, env, budget, job.source)
        finally:
            sys.settrace(previous_trace)
            sys.unraisablehook = previous_hook
            budget.close()
            job.clock_reads.extend(clock.reads)
        if budget.hit is not None:
            raise LIMIT_ERRORS[budget.hit](_LIMIT_MESSAGES[budget.hit].format(limits=job.limits))
        if failure is not None:
            raise failure
        return result


def _execute(
    code: types.CodeType, env: dict[str, Any], budget: _Budget, source: str
) -> tuple[PlainValue, ScriptError | None]:
    """Run the script under the budget; a limit it reached is left on `budget.hit`."""
    result: PlainValue = None
    failure: ScriptError | None = None
    try:
        try:
            exec(code, env)
            budget.check()
            result = _result(env.get(RESULT_NAME))
        except _LimitHit:
            pass
        except MemoryError:
            budget.hit = budget.hit or "memory"
        except ScriptError as exc:
            failure = exc
        except BaseException as exc:  # anything the script raised, SystemExit included
            failure = _script_error(exc, source)
        # Drop the script's objects while still traced: finalizers they run count against the job.
        env.clear()
    except _LimitHit:
        pass
    return result, failure


def _limit_kind(exc: LimitExceeded) -> str:
    return next(kind for kind, cls in LIMIT_ERRORS.items() if isinstance(exc, cls))


def _result(value: object) -> PlainValue:
    try:
        return to_plain(value)
    except TypeError as exc:
        raise ScriptError(LANGUAGE, f"the script's result cannot be returned: {exc}") from None


# ------------------------------------------------------------------ error reports


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HOST_PREFIXES = tuple(
    sorted(
        {p for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, _REPO_ROOT) if len(p) > 1},
        key=len,
        reverse=True,
    )
)


def _scrub(text: str) -> str:
    for prefix in _HOST_PREFIXES:
        text = text.replace(prefix, "<host>")
    return text


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    if isinstance(exc, GuestError):
        return _scrub(text)
    name = type(exc).__name__
    return _scrub(f"{name}: {text}" if text else name)


def _script_error(exc: BaseException, source: str) -> ScriptError:
    """The script's message, innermost script line and a traceback of the script's frames only."""
    frames: list[tuple[int, str]] = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == SCRIPT_FILENAME:
            frames.append((tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    lines = source.splitlines()
    entries = []
    for index, (line, name) in enumerate(frames):
        if len(frames) > TRACEBACK_FRAMES and TRACEBACK_FRAMES // 2 <= index < len(frames) - TRACEBACK_FRAMES // 2:
            if index == TRACEBACK_FRAMES // 2:
                entries.append(f"  ... {len(frames) - TRACEBACK_FRAMES} more frames ...")
            continue
        entries.append(f"  line {line}, in {name}")
        if 0 < line <= len(lines):
            entries.append(f"    {lines[line - 1].strip()}")
    message = _describe(exc)
    traceback = "\n".join(["Traceback (most recent call last):", *entries, message])
    return ScriptError(LANGUAGE, message, frames[-1][0] if frames else 0, traceback)


def prewarm() -> None:
    """Import and build everything a job needs once, before the worker forks sandbox children."""
    python_env.prepare_modules()
    compile_script("import json\nx = [i for i in range(3)]\ntry:\n    pass\nfinally:\n    pass\nprint(x)\nx")


__all__ = ["PythonRunner", "compile_script", "prewarm"]
