"""JavaScript scripts on QuickJS compiled to WebAssembly (quickjs-rs on wasmtime), one fresh instance per job.

Defence in depth, under the OS jail: the script runs inside a wasm linear memory with no WASI
capabilities reachable from JS (no `std`/`os` modules, no module loader), a QuickJS heap limit plus a
hard cap on the linear memory (the store's limit), the wasm stack limit (deep recursion traps the
instance), and a CPU budget checked by QuickJS's interrupt poll. Every job builds its own wasmtime
store and QuickJS runtime from the compiled module and closes them afterwards. The new instance's
heap starts as a copy of the prelude template (the linear memory and stack pointer of an instance
that ran only the prelude, captured once per process, as quickjs-rs's whole-memory snapshots do):
what running the prelude would leave, for about a fifth of the CPU. Its host functions and
limits are then made its own (`_Guest.restore`).

The expensive part, compiling the 700 KB guest module with Cranelift, happens once per process:
`prewarm()` does it in the worker before it forks, so each child only instantiates (well under a
millisecond). The engine is created with parallel compilation off so no compiler thread pool exists
when the worker forks, and with no up-front address-space reservation for linear memories, so an
instance fits under the child's RLIMIT_AS (wasmtime's default reserves 4 GiB per memory), and
without copy-on-write memory images (they keep a memfd open, which the jail closes).

Every call quickjs-rs makes into its guest goes through the numeric fast path (installed by
`install_engine`): the same call, without wasmtime-py's per-call type work
(`sandbox/engines/wasmtime_internals.py`; ~30 -> ~6 µs a call, ~50 calls a job).

What this needs of quickjs-rs beyond its public API is in `sandbox/engines/quickjs_internals.py`.
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from importlib import resources
from typing import Any

import quickjs_rs
import wasmtime

from scriptpool.errors import ScriptpoolError
from scriptpool.languages import Language
from scriptpool.sandbox.catalog import FILE_OP_PREFIX, FILE_OPS, GLOBAL_OPS, aliases
from scriptpool.sandbox.engines import quickjs_internals as qjs
from scriptpool.sandbox.engines.spare_instance import SpareInstance
from scriptpool.sandbox.engines.wasmtime_internals import NumericCaller
from scriptpool.sandbox.errors import LIMIT_ERRORS, LimitExceeded, MemoryExceeded, SandboxError, ScriptError
from scriptpool.sandbox.host import HOST_FAULT, GlobalHost, OutputSink
from scriptpool.sandbox.limits import MIB
from scriptpool.sandbox.runner import ScriptJob, clock_offset, seed_for
from scriptpool.sandbox.script_clock import MAX_CLOCK_READS
from scriptpool.values import MAX_DEPTH, PlainValue

PRELUDE = resources.files(__package__).joinpath("js_prelude.js").read_text(encoding="utf-8")
STACK_LIMIT_BYTES = 256 * 1024
"""QuickJS's own stack limit. Inside wasm its check rarely fires first: the wasm stack (wasmtime's
default 512 KiB) traps the instance on deep recursion, which ends the job as a script error."""
GROWTH_RESERVATION = 128 * MIB
"""Address space reserved past a linear memory each time it has to move to grow. Without it every
allocator step (64 KiB) would copy the whole memory, making a 64 MiB heap cost seconds of CPU;
with it a job under the default limits moves its memory once, and the reservation still fits the
jail's address-space margin."""
NEAR_MEMORY_CAP = 1 * MIB
"""Linear memory this close to its cap means an allocation has failed (or is about to)."""

_LINE = re.compile(r"eval_script:(\d+)")
_PENDING, _FULFILLED = 0, 1

_ENGINE_LOCK = threading.Lock()
_ENGINE: wasmtime.Engine | None = None


def _engine_config() -> wasmtime.Config:
    config = wasmtime.Config()
    # No compiler threads: the worker forks sandbox children after compiling, and a forked child
    # must not depend on threads that did not survive the fork.
    config.parallel_compilation = False
    # Linear memory grows by moving instead of living in a 4 GiB reservation: the child's address
    # space is capped at a few hundred MiB above the job's memory limit. The explicit bounds checks
    # this needs cost nothing measurable on the interpreter loop.
    config.memory_reservation = 0
    config.memory_guard_size = 0
    config.memory_reservation_for_growth = GROWTH_RESERVATION
    # Copy-on-write memory images live in a memfd opened when the module is compiled; the jail
    # closes every inherited descriptor, so instances copy their initial memory instead.
    config.memory_init_cow = False
    return config


_CALLER = NumericCaller()


def install_engine() -> wasmtime.Engine:
    """Make quickjs-rs build every instance on our engine, and call its guest through the numeric
    fast path (`sandbox/engines/wasmtime_internals.py`). Must run before quickjs-rs makes its own engine."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            qjs.route_guest_calls(_CALLER.call)
            engine = wasmtime.Engine(_engine_config())
            qjs.share_engine(engine)
            _ENGINE = engine
        return _ENGINE


def prewarm() -> None:
    """Compile the guest module and run one trivial job, so forked children only instantiate."""
    install_engine()
    qjs.compile_guest()
    JavaScriptRunner().run(ScriptJob(language=Language.JAVASCRIPT, source="1"), _NoCalls(), OutputSink(0))


class _NoCalls:
    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        raise ScriptpoolError(f"{op} is not available while warming up")


class _Budget:
    """The interrupt poll: stops the script once its CPU time is spent or a limit was hit."""

    def __init__(self, guest: _Guest) -> None:
        self.guest = guest
        self.deadline = float("inf")
        self.limit: str | None = None

    def start(self, cpu_time_ms: int) -> None:
        self.deadline = time.process_time() + cpu_time_ms / 1000.0

    def poll(self) -> bool:
        if self.limit is None:
            if time.process_time() > self.deadline:
                self.limit = "cpu"
            elif self.guest.memory_exhausted():
                self.limit = "memory"
        return self.limit is not None


WASM_PAGE_BYTES = 65536


class HeapImage:
    """A QuickJS instance's heap as bytes (its linear memory) and its wasm stack pointer, with the
    byte ranges a fresh instance must be given to hold exactly these bytes (`runs`: the whole image
    unless `with_runs` narrowed them)."""

    __slots__ = ("address", "image", "runs", "source", "stack_pointer")

    def __init__(self, image: bytearray, stack_pointer: int, runs: list[tuple[int, int]] | None = None) -> None:
        self.image = image
        self.source = (ctypes.c_char * len(image)).from_buffer(image)
        """A ctypes view of the image: it pins the bytearray, so `address` stays valid."""
        self.address = ctypes.addressof(self.source)
        """Where the image's bytes are, to copy from without another copy."""
        self.stack_pointer = stack_pointer
        self.runs = runs if runs is not None else [(0, len(image))]

    def with_runs(self, runs: list[tuple[int, int]]) -> HeapImage:
        return HeapImage(self.image, self.stack_pointer, runs)


def pages_that_differ(image: bytearray, fresh: list[bytearray], page: int = 4096) -> list[tuple[int, int]]:
    """The byte ranges (offset, length), whole pages merged, where `image` differs from any of the
    `fresh` memories (a fresh instance's pages past its own size are zero, as wasm grows memory)."""
    runs: list[tuple[int, int]] = []
    for offset in range(0, len(image), page):
        wanted = image[offset : offset + page]
        if all(base[offset : offset + page].ljust(len(wanted), b"\0") == wanted for base in fresh):
            continue
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + len(wanted))
        else:
            runs.append((offset, len(wanted)))
    return runs


class _Guest:
    """One QuickJS instance: runtime, context, wasm store and memory cap. Used once, then closed."""

    def __init__(self, memory_bytes: int) -> None:
        install_engine()
        self.memory_bytes = memory_bytes
        self.runtime = quickjs_rs.Runtime(memory_limit=memory_bytes, stack_limit=STACK_LIMIT_BYTES)
        self.context = self.runtime.new_context(timeout=float("inf"))
        self.engine_ctx: Any = qjs.engine_context(self.context)
        instance = qjs.instance(self.engine_ctx)
        self._store: wasmtime.Store = instance.store
        self._memory: wasmtime.Memory = instance.mem
        self.memory_cap = self.linear_memory() + memory_bytes
        self._store.set_limits(memory_size=self.memory_cap)
        self.budget = _Budget(self)
        # Replaces quickjs-rs's wall-clock handler: our budget is CPU time.
        qjs.set_interrupt_handler(self.runtime, self.budget.poll)

    def linear_memory(self) -> int:
        return int(self._memory.data_len(self._store))

    def memory_exhausted(self) -> bool:
        return self.linear_memory() + NEAR_MEMORY_CAP > self.memory_cap

    def register(self, name: str, fn: Any) -> None:
        self.context.register(name, fn, is_async=False)

    def set_global(self, name: str, value: Any) -> None:
        self.context.globals[name] = value

    def eval(self, source: str, *, promise: bool = False) -> Any:
        return self.engine_ctx.eval_handle(source, promise=promise, filename="script")

    def settle(self, promise: Any) -> tuple[bool, Any]:
        """Run microtasks until `promise` settles; returns (fulfilled, value or reason)."""
        while self.engine_ctx.promise_state(promise) == _PENDING:
            if self.budget.poll() or self.engine_ctx.run_pending_jobs() <= 0:
                break
        state = self.engine_ctx.promise_state(promise)
        if state == _PENDING:
            if self.budget.limit:
                raise _Stopped
            raise ScriptError("javascript", "the script's result is a promise that never settles")
        return state == _FULFILLED, self.engine_ctx.promise_result(promise)

    def drain(self) -> None:
        """Run the microtasks left after the result settled (a `.then` that prints, say)."""
        while not self.budget.poll() and self.engine_ctx.run_pending_jobs() > 0:
            pass

    def host_exception(self) -> BaseException | None:
        return qjs.last_host_exception(self.context)

    def memory_copy(self) -> bytearray:
        """This instance's linear memory, copied."""
        size = self.linear_memory()
        copy = bytearray(size)
        ctypes.memmove((ctypes.c_char * size).from_buffer(copy), self._memory.data_ptr(self._store), size)
        return copy

    def capture(self) -> HeapImage:
        """This instance's whole heap: its linear memory and its stack pointer (quickjs-rs's
        whole-memory snapshot holds exactly these two: everything QuickJS allocates lives in the
        linear memory, by offset)."""
        return HeapImage(self.memory_copy(), int(qjs.instance(self.engine_ctx).sp.value(self._store)))

    def copy_heap(self, heap: HeapImage) -> None:
        """Make this fresh instance's linear memory and stack pointer `heap`'s: grow the memory to
        the image's size, copy the image's `runs` straight into it. An image that does not fit under
        this instance's memory cap is QuickJS's out of memory."""
        size, current = len(heap.image), self.linear_memory()
        if size > current:
            try:
                self._memory.grow(self._store, -(-(size - current) // WASM_PAGE_BYTES))
            except wasmtime.WasmtimeError as exc:  # over this instance's memory cap
                raise qjs.JSError("InternalError", "out of memory", "") from exc
        base = ctypes.cast(self._memory.data_ptr(self._store), ctypes.c_void_p).value
        assert base is not None
        for offset, length in heap.runs:
            ctypes.memmove(base + offset, heap.address + offset, length)
        qjs.instance(self.engine_ctx).sp.set_value(self._store, heap.stack_pointer)

    def restore(self, heap: HeapImage, host_functions: dict[str, Any]) -> None:
        """Replace this fresh instance's heap with `heap` (`copy_heap`), then make it this
        instance's: the host functions in the heap (QuickJS finds them by name) call
        `host_functions`, and QuickJS's heap and stack limits are this instance's again (the image
        carries the template's)."""
        self.copy_heap(heap)
        instance = qjs.instance(self.engine_ctx)
        instance.c("set_memory_limit", self.memory_bytes)
        instance.c("set_max_stack_size", STACK_LIMIT_BYTES)
        qjs.rebind_host_functions(self.context, instance, host_functions)

    def close(self) -> None:
        self.context.close()
        self.runtime.close()


class _Stopped(Exception):
    """The script was stopped by the budget; the limit recorded there says why."""


class _Binding:
    """The host functions an instance is built with, pointing at the job it serves (set once the job
    has arrived: an instance prepared in a spare child has none until then)."""

    def __init__(self) -> None:
        self.job: _Job | None = None

    def host_call(self, op: str, args: list[PlainValue]) -> list[PlainValue]:
        if self.job is None:
            return ["err", "INTERNAL", "no job is running in this sandbox"]
        return self.job.host_call(op, args)

    def host_print(self, text: str) -> bool:
        return self.job.host_print(text) if self.job is not None else False


_SETUP = {
    "catalog": {name: list(ops) for name, ops in GLOBAL_OPS.items()},
    "aliases": {name: aliases(name) for name in GLOBAL_OPS},
    "maxDepth": MAX_DEPTH,
    "fileOps": list(FILE_OPS),
}
"""What the prelude is set up with: the same for every instance, so computed once."""


HOST_CALL, HOST_PRINT = "__scriptpool_host_call", "__scriptpool_host_print"
"""The host functions' global names while the prelude runs (it takes them and deletes the names)."""
_KEEP_API = "globalThis.__scriptpool_api = (0, eval)(globalThis.__scriptpool_prelude); undefined"
_TAKE_API = "(() => { const api = globalThis.__scriptpool_api; delete globalThis.__scriptpool_api; return api; })()"
TEMPLATE_MEMORY_BYTES = 64 * MIB
"""The heap limit the prelude template is built under (each instance restored from it gets its
job's own limit back before anything runs)."""


def _load_prelude(guest: _Guest, binding: _Binding, source: str) -> Any:
    """Run the prelude in a fresh instance: its host functions, its setup, then `source` (which
    evaluates the prelude and returns or keeps its API object)."""
    guest.register(HOST_CALL, binding.host_call)
    guest.register(HOST_PRINT, binding.host_print)
    guest.set_global("__scriptpool_setup", _SETUP)
    guest.set_global("__scriptpool_prelude", PRELUDE)
    return guest.eval(source)


_template: HeapImage | None = None


def prelude_template() -> HeapImage:
    """The heap of a fresh instance right after the prelude ran, its API object kept in a global:
    built once per process (in the worker's zygote by `prewarm`, so spare children inherit it) by
    an instance that runs nothing else and serves no job."""
    global _template
    if _template is None:
        # One instance at a time: in a jailed child each may reserve address space as it grows.
        fresh = [_fresh_memory(TEMPLATE_MEMORY_BYTES // 4)]
        builder = _Guest(TEMPLATE_MEMORY_BYTES)
        try:
            fresh.append(builder.memory_copy())
            _load_prelude(builder, _Binding(), _KEEP_API)
            heap = builder.capture()
        finally:
            builder.close()
        _template = _narrowed(heap, fresh)
    return _template


def _fresh_memory(memory_bytes: int) -> bytearray:
    guest = _Guest(memory_bytes)
    try:
        return guest.memory_copy()
    finally:
        guest.close()


def _narrowed(heap: HeapImage, fresh: list[bytearray]) -> HeapImage:
    """`heap`, copied into fresh instances only where it differs from what they already hold.

    Most of the template is pages a fresh instance already has (the module's data, zeroed heap):
    copying them only faults in fresh pages. Fresh instances differ from one another only where
    their limits are kept, so comparing two made with different limits finds every page that must
    be written. The result is checked once here, on a fresh instance with a third limit: if it does
    not come out byte for byte the template, the whole image is copied instead."""
    narrowed = heap.with_runs(pages_that_differ(heap.image, fresh))
    probe = _Guest(TEMPLATE_MEMORY_BYTES // 2)
    try:
        probe.copy_heap(narrowed)
        exact = probe.memory_copy() == heap.image
    finally:
        probe.close()
    return narrowed if exact else heap


class _Prepared:
    """A fresh instance with the prelude evaluated, not yet configured for a job: what a spare child
    builds while it waits, so the job's own instance is ready when the job arrives. It never runs
    anything but the prelude before its one job; `configure` (seed, clock, INPUT) comes first.

    The instance is new (its own wasm store and linear memory); its heap is a copy of the prelude
    template's (`prelude_template`), which is what running the prelude in it would leave, at about
    a fifth of the CPU (~0.8 ms instead of ~4.5 ms in-process: the prelude's parse and run, and
    its host-to-wasm crossings, are paid once per process, and only the pages a fresh instance
    does not already hold are copied). Its host functions are this instance's own and its limits
    its job's (`_Guest.restore`); the template's API object is taken out of `globalThis` before
    the job's script can run."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.guest = _Guest(memory_bytes)
        self.binding = _Binding()
        try:
            self.guest.restore(
                prelude_template(), {HOST_CALL: self.binding.host_call, HOST_PRINT: self.binding.host_print}
            )
            self.api = self.guest.eval(_TAKE_API)
        except BaseException:
            self.guest.close()
            raise

    def discard(self) -> None:
        self.guest.close()


_spare = SpareInstance(_Prepared)
"""The instance prepared in this (spare child) process for the job to come."""


def prepare_spare_instance(memory_bytes: int) -> None:
    """Build the next job's instance ahead of it (see `scriptpool.sandbox.engines.spare_instance`)."""
    _spare.prepare(memory_bytes)


class JavaScriptRunner:
    """Runs JavaScript source in a fresh QuickJS-in-wasm instance (prepared ahead in a spare child,
    or built now)."""

    def run(self, job: ScriptJob, host: GlobalHost, output: OutputSink) -> PlainValue:
        try:
            prepared = _spare.take(job.limits.memory_bytes)
        except qjs.JSError as exc:  # the prelude itself did not fit in the job's memory limit
            if "out of memory" in str(exc.args):
                raise MemoryExceeded(_LIMIT_MESSAGES["memory"].format(limits=job.limits)) from None
            raise SandboxError(f"the JavaScript sandbox could not be set up ({exc.args[0]})") from None
        try:
            return _Job(job, host, output, prepared).run()
        finally:
            prepared.discard()


class _Job:
    def __init__(self, job: ScriptJob, host: GlobalHost, output: OutputSink, prepared: _Prepared) -> None:
        self.job = job
        self.host = host
        self.output = output
        self.prepared = prepared
        self.guest = prepared.guest
        self.budget = prepared.guest.budget
        self.calls = 0

    def host_call(self, op: str, args: list[PlainValue]) -> list[PlainValue]:
        if self.budget.limit:
            return ["limit", self.budget.limit]
        if not op.startswith(FILE_OP_PREFIX):  # the job's own files: local, not global calls
            self.calls += 1
        if self.calls > self.job.limits.max_global_calls:
            self.budget.limit = "calls"
            return ["limit", "calls"]
        try:
            return ["ok", self.host.call(op, list(args))]
        except LimitExceeded as exc:
            self.budget.limit = _limit_kind(exc)
            return ["limit", self.budget.limit]
        except ScriptpoolError as exc:
            return ["err", exc.code, exc.message]
        except MemoryError:
            self.budget.limit = "memory"
            return ["limit", "memory"]
        except Exception:  # a host fault: no Python text or object reaches the script
            return ["err", "INTERNAL", HOST_FAULT]

    def host_print(self, text: str) -> bool:
        if self.budget.limit:
            return False
        try:
            self.output.write(text)
        except LimitExceeded as exc:
            self.budget.limit = _limit_kind(exc)
            return False
        return True

    def run(self) -> PlainValue:
        api = self.prepared.api
        try:
            self.prepared.binding.job = self
            configuration = {
                "inputs": self.job.inputs,
                "seed": seed_for(self.job) % 2**32,
                "clockOffsetMs": round(clock_offset(self.job) * 1000),
                "clockReplay": list(self.job.clock_replay),
                "maxClockReads": MAX_CLOCK_READS,
            }
            api.call_method("configure", configuration)
            self.budget.start(self.job.limits.cpu_time_ms)
            value = self._evaluate(api)
        except _Stopped:
            self._check_limits()
            raise SandboxError("the script was stopped with no limit recorded") from None
        except qjs.JSError as exc:
            name, message, stack = exc.args
            self._raise_failure(f"{name}: {message}", stack or "")
        except wasmtime.Trap as exc:
            self._raise_trap(exc)
        except qjs.MarshalError as exc:
            self._check_limits()
            raise ScriptError("javascript", f"the script's result cannot be returned: {exc}") from None
        self._check_limits()
        return value

    def _evaluate(self, api: Any) -> PlainValue:
        guest = self.guest
        fulfilled, envelope = guest.settle(guest.eval(self.job.source, promise=True))
        if fulfilled:
            value = envelope.get("value")
            if value.is_promise():
                fulfilled, value = guest.settle(value)
        else:
            value = envelope
        guest.drain()
        self._record_clock(api)
        if not fulfilled:
            self._check_limits()
            described = api.call_method("describe", value).to_python()
            self._raise_failure(str(described["message"]), str(described["stack"]))
        self._check_limits()
        result: PlainValue = api.call_method("finish", value).to_python()
        return result

    def _record_clock(self, api: Any) -> None:
        """The clock values the script read (`script_clock.py`), kept with the job's result."""
        if self.budget.limit is None:
            self.job.clock_reads.extend(float(value) for value in api.call_method("clockReads").to_python())

    def _check_limits(self) -> None:
        host_exception = self.guest.host_exception()
        if host_exception is not None:
            raise host_exception
        if self.budget.limit is None and self.guest.memory_exhausted():
            self.budget.limit = "memory"
        if self.budget.limit is not None:
            kind = self.budget.limit
            raise LIMIT_ERRORS[kind](_LIMIT_MESSAGES[kind].format(limits=self.job.limits))

    def _raise_failure(self, message: str, stack: str) -> None:
        self._check_limits()
        # QuickJS's own heap limit, or linear memory that could not grow (the jail's RLIMIT_AS).
        if message == "InternalError: out of memory":
            raise MemoryExceeded(_LIMIT_MESSAGES["memory"].format(limits=self.job.limits))
        frames = [
            line.strip().replace("eval_script", "script") for line in stack.splitlines() if "eval_script:" in line
        ]
        match = _LINE.search(stack)
        raise ScriptError("javascript", message, int(match.group(1)) if match else 0, "\n".join(frames))

    def _raise_trap(self, exc: wasmtime.Trap) -> None:
        self._check_limits()
        if exc.trap_code == wasmtime.TrapCode.STACK_OVERFLOW:
            raise ScriptError("javascript", "RangeError: stack overflow (the script recursed too deeply)") from None
        raise SandboxError(f"the JavaScript engine stopped with a wasm trap ({exc.trap_code})") from None


def _limit_kind(exc: LimitExceeded) -> str:
    return next(kind for kind, cls in LIMIT_ERRORS.items() if isinstance(exc, cls))


_LIMIT_MESSAGES = {
    "cpu": "the script used more than {limits.cpu_time_ms} ms of CPU time",
    "wall": "the script ran longer than {limits.wall_time_ms} ms",
    "memory": "the script used more than {limits.memory_bytes} bytes of memory",
    "output": "the script printed more than {limits.output_bytes} bytes",
    "calls": "the script made more than {limits.max_global_calls} global calls",
}
