"""Lua scripts on lupa (Lua 5.4), one fresh runtime per job.

Defence in depth, under the OS jail: no `python` bridge and an attribute filter that denies every
Python attribute, an allowlisted environment (no package/require/debug/dofile/loadfile, text-only
load, no string.dump; `io` and `os.remove/rename` reach only the job's own files, through
sandbox/scratch_files.py), `max_memory`, and a CPU budget checked by a count hook that also
runs inside coroutines, pcall and __gc finalizers. See lua_prelude.lua.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import lupa.lua54 as lupa

from scriptpool.errors import ScriptpoolError
from scriptpool.sandbox.catalog import FILE_OP_PREFIX, GLOBAL_OPS, aliases
from scriptpool.sandbox.engines.lua_json import JSON_OPS, json_op
from scriptpool.sandbox.engines.spare_instance import SpareInstance
from scriptpool.sandbox.errors import LIMIT_ERRORS, LimitExceeded, MemoryExceeded, ScriptError
from scriptpool.sandbox.host import HOST_FAULT, GlobalHost, OutputSink
from scriptpool.sandbox.runner import ScriptJob, clock_offset, seed_for
from scriptpool.sandbox.script_clock import MAX_CLOCK_READS
from scriptpool.values import MAX_DEPTH, PlainValue

PRELUDE = resources.files(__package__).joinpath("lua_prelude.lua").read_bytes()


def _bytecode(source: bytes, name: str) -> bytes:
    """Our own Lua (the prelude, the catalog tables) compiled to bytecode once per process: loading
    the prelude costs each fresh runtime ~50 µs instead of ~160 µs to compile the text. Only our own
    source compiled here is ever loaded as bytecode; the `load` scripts get stays text-only."""
    compiler = lupa.LuaRuntime(encoding=None)
    dump = compiler.eval("function(source, name) return string.dump(assert(load(source, name, 't'))) end")
    return bytes(dump(source, f"={name}".encode()))


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _lua_literal(value: PlainValue) -> str:
    """A table constructor for the catalog's names (identifiers only, so quoting is trivial)."""
    if isinstance(value, str):
        assert _NAME.match(value), value
        return f'"{value}"'
    if isinstance(value, list):
        return "{" + ",".join(_lua_literal(item) for item in value) + "}"
    assert isinstance(value, dict)
    return "{" + ",".join(f"[{_lua_literal(key)}]={_lua_literal(item)}" for key, item in value.items()) + "}"


PRELUDE_BYTECODE = _bytecode(PRELUDE, "lua_prelude.lua")
_CATALOG: PlainValue = {name: list(ops) for name, ops in GLOBAL_OPS.items()}
_ALIASES: PlainValue = {name: dict(aliases(name)) for name in GLOBAL_OPS}
CATALOG_BYTECODE = _bytecode(f"return {_lua_literal(_CATALOG)}, {_lua_literal(_ALIASES)}".encode(), "catalog")
"""The globals catalog and its snake_case aliases as a chunk returning two tables: each runtime
builds them in Lua (~150 table writes through lupa from Python were a fifth of a trivial job's
set-up)."""
HOOK_EVERY_INSTRUCTIONS = 10_000
_LINE_PREFIX = re.compile(r"^script:(\d+): ")


LUA_VALUE_BYTES = 64
"""Bytes counted per Lua value made for a host answer, over its string bytes: a string's header, a
table entry (twice: a table's part doubles when it grows), and the stack slot that carries it."""
LUA_ANSWER_SLACK_BYTES = 16 * 1024
"""Bytes counted for every host answer on top: the result tuple and the prelude's handling of it."""


def lua_size_bound(value: PlainValue) -> int:
    """An upper bound of the Lua memory `_Marshal.to_lua(value)` allocates (strings by their UTF-8
    length; values nested deeper than MAX_DEPTH are refused by to_lua, so they are not walked)."""
    total = LUA_ANSWER_SLACK_BYTES
    pending: list[tuple[PlainValue, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        total += LUA_VALUE_BYTES
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, bytes):
            total += len(item)
        elif depth <= MAX_DEPTH and isinstance(item, dict):
            for key, nested in item.items():
                total += LUA_VALUE_BYTES + len(key.encode("utf-8", "surrogatepass"))
                pending.append((nested, depth + 1))
        elif depth <= MAX_DEPTH and isinstance(item, list):
            pending.extend((nested, depth + 1) for nested in item)
    return total


def _deny_attributes(obj: object, name: object, is_setting: bool) -> object:
    raise AttributeError("Python attributes are not reachable from the sandbox")


class _Marshal:
    """Converts between Lua values and plain Python values for one runtime."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def fits(self, value: PlainValue) -> bool:
        """Whether `value` can be made into Lua values within the runtime's memory limit. It must be
        checked before: Lua running out of memory while a host function builds or returns its answer
        unwinds across lupa's Python frames, which then waits forever for a lock it holds itself (the
        job would hang until its wall time instead of ending `memory_exceeded`)."""
        limit: int = self.runtime.get_max_memory()
        if not limit:  # no limit set
            return True
        used: int = self.runtime.get_memory_used()
        return lua_size_bound(value) <= limit - used

    def to_lua(self, value: PlainValue, depth: int = 0) -> Any:
        if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
            raise ScriptError("lua", f"value is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict):
            table = self.runtime.table()
            for key, item in value.items():
                table[key.encode("utf-8")] = self.to_lua(item, depth + 1)
            return table
        if isinstance(value, list):
            table = self.runtime.table()
            for index, item in enumerate(value, start=1):
                table[index] = self.to_lua(item, depth + 1)
            return table
        return value  # None, bool, int, float, bytes

    def to_plain(self, value: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> PlainValue:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value
        kind = lupa.lua_type(value)
        if kind != "table":
            raise ScriptError("lua", f"a Lua {kind or type(value).__name__} cannot be passed or returned as a value")
        if depth >= MAX_DEPTH or id(value) in seen:  # (lupa may wrap one table in several objects: a
            # cycle can end at the depth limit)
            raise ScriptError(
                "lua", f"a table that contains itself (or is nested deeper than {MAX_DEPTH} levels) cannot be passed"
            )
        seen = seen | {id(value)}
        items = list(value.items())
        if items == [(b"__scriptpool_null", True)]:
            return None
        if all(isinstance(k, int) and not isinstance(k, bool) for k, _ in items) and items:
            keys = sorted(k for k, _ in items)
            if keys == list(range(1, len(keys) + 1)):
                by_key = dict(items)
                return [self.to_plain(by_key[k], depth + 1, seen) for k in keys]
        out: dict[str, PlainValue] = {}
        for key, item in items:
            if not isinstance(key, bytes):
                raise ScriptError("lua", "table keys must be all strings (a map) or the integers 1..n (a list)")
            out[key.decode("utf-8", "replace")] = self.to_plain(item, depth + 1, seen)
        return out


class _Binding:
    """The host functions a runtime is built with, pointing at the job it serves (set once the job
    has arrived: a runtime prepared in a spare child has none until then)."""

    def __init__(self, marshal: _Marshal) -> None:
        self.marshal = marshal
        self.job: ScriptJob | None = None
        self.host: GlobalHost | None = None
        self.output: OutputSink | None = None
        self.calls = 0

    def host_call(self, op: bytes, packed_args: Any) -> tuple[Any, ...]:
        job, host = self.job, self.host
        if job is None or host is None:
            return (b"err", b"INTERNAL", b"no job is running in this sandbox")
        name = op.decode("utf-8")
        if name in JSON_OPS:  # the JSON global: handled here, no global call
            return self._json(name, packed_args)
        if not name.startswith(FILE_OP_PREFIX):  # the job's own files: local, not global calls
            self.calls += 1
        if self.calls > job.limits.max_global_calls:
            return (b"limit", b"calls")
        try:
            count = packed_args[b"n"] or 0
            args = [self.marshal.to_plain(packed_args[i + 1]) for i in range(count)]
        except ScriptError as exc:  # an argument that is no value (too deep, a function...): the script's mistake
            return (b"err", b"INVALID_ARGUMENT", f"{op.decode('utf-8')}: {exc}".encode())
        try:
            result = host.call(op.decode("utf-8"), args)
            if not self.marshal.fits(result):
                return (b"limit", b"memory")
            return (b"ok", self.marshal.to_lua(result))
        except LimitExceeded as exc:
            return (b"limit", _limit_kind(exc).encode())
        except ScriptError as exc:  # an argument that cannot cross (a function, a cycle...)
            return (b"err", b"INVALID_ARGUMENT", exc.message.encode("utf-8", "replace"))
        except ScriptpoolError as exc:
            return (b"err", exc.code.encode(), exc.message.encode("utf-8", "replace"))
        except lupa.LuaMemoryError:  # the answer did not fit in the script's memory
            return (b"limit", b"memory")
        except Exception:  # a host fault: the script sees no Python text, type or object
            return (b"err", b"INTERNAL", HOST_FAULT.encode())

    def _json(self, op: str, packed_args: Any) -> tuple[Any, ...]:
        try:
            count = packed_args[b"n"] or 0
            args = [self.marshal.to_plain(packed_args[i + 1]) for i in range(count)]
            result = json_op(op, args)
            if not self.marshal.fits(result):
                return (b"limit", b"memory")
            return (b"ok", self.marshal.to_lua(result))
        except ScriptError as exc:  # a function, a cycle, too deep...
            return (b"err", b"INVALID_ARGUMENT", f"{op}: {exc.message}".encode("utf-8", "replace"))
        except ScriptpoolError as exc:
            return (b"err", exc.code.encode(), exc.message.encode("utf-8", "replace"))
        except lupa.LuaMemoryError:
            return (b"limit", b"memory")

    def host_print(self, text: bytes) -> bool:
        if self.output is None:
            return False
        try:
            self.output.write(text.decode("utf-8", "replace"))
        except LimitExceeded:
            return False
        return True


class _Prepared:
    """A fresh runtime with the prelude loaded, not yet given a job: what a spare child builds while
    it waits. It runs nothing but the prelude before its one job; the job's inputs, seed, clock and
    CPU budget are passed to the prelude's `run` with the script."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.runtime = lupa.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_deny_attributes,
            max_memory=memory_bytes,
        )
        self.marshal = _Marshal(self.runtime)
        self.binding = _Binding(self.marshal)
        catalog, alias_table = self.runtime.execute(CATALOG_BYTECODE)
        self.run = self.runtime.execute(
            PRELUDE_BYTECODE,
            self.binding.host_call,
            self.binding.host_print,
            catalog,
            alias_table,
            HOOK_EVERY_INSTRUCTIONS,
        )

    def discard(self) -> None:
        """Let the runtime go now. The prelude holds our host functions, which hold the binding, which
        reaches the runtime: a cycle through the Lua state that Python's collector cannot see, so
        without this a process that runs another job would keep every earlier job's runtime (and
        its memory). The job's own objects are dropped too."""
        self.binding.job = self.binding.host = self.binding.output = None
        self.marshal.runtime = None
        self.run = None


_spare = SpareInstance(_Prepared)
"""The runtime prepared in this (spare child) process for the job to come."""


def prepare_spare_instance(memory_bytes: int) -> None:
    """Build the next job's runtime ahead of it (see `scriptpool.sandbox.engines.spare_instance`)."""
    _spare.prepare(memory_bytes)


class LuaRunner:
    """Runs Lua 5.4 source in a fresh lupa runtime (prepared ahead in a spare child, or built now)."""

    def run(self, job: ScriptJob, host: GlobalHost, output: OutputSink) -> PlainValue:
        try:
            prepared = _spare.take(job.limits.memory_bytes)
        except lupa.LuaMemoryError as exc:  # the prelude itself did not fit in the job's memory limit
            raise _memory_exceeded(job) from exc
        try:
            if not prepared.marshal.fits(job.inputs):  # made in no protected call: Lua would abort
                raise _memory_exceeded(job)
            binding = prepared.binding
            binding.job, binding.host, binding.output = job, host, output
            reads = prepared.runtime.table()
            try:
                status, *rest = prepared.run(
                    job.source.encode("utf-8"),
                    prepared.marshal.to_lua(job.inputs),
                    job.limits.cpu_time_ms / 1000.0,
                    seed_for(job),
                    clock_offset(job),
                    prepared.runtime.table_from(list(job.clock_replay)) if job.clock_replay else None,
                    reads,
                    MAX_CLOCK_READS,
                )
            finally:
                job.clock_reads.extend(float(reads[index]) for index in range(1, len(reads) + 1))
            return _finish(prepared.marshal, job, status, rest)
        except lupa.LuaMemoryError as exc:
            raise _memory_exceeded(job) from exc
        finally:
            prepared.discard()


def _memory_exceeded(job: ScriptJob) -> MemoryExceeded:
    return MemoryExceeded(f"the script used more than {job.limits.memory_bytes} bytes of memory")


def _limit_kind(exc: LimitExceeded) -> str:
    return next(kind for kind, cls in LIMIT_ERRORS.items() if isinstance(exc, cls))


def _finish(marshal: _Marshal, job: ScriptJob, status: bytes, rest: list[Any]) -> PlainValue:
    if status == b"ok":
        count, values = rest[0], rest[1:]
        if count == 0:
            return None
        if count == 1:
            return marshal.to_plain(values[0])
        return [marshal.to_plain(v) for v in values[:count]]
    if status == b"limit":
        kind = rest[0].decode()
        raise LIMIT_ERRORS[kind](_LIMIT_MESSAGES[kind].format(limits=job.limits))
    message = rest[0].decode("utf-8", "replace") if isinstance(rest[0], bytes) else str(rest[0])
    guest_traceback = rest[1].decode("utf-8", "replace") if len(rest) > 1 and isinstance(rest[1], bytes) else ""
    line = 0
    match = _LINE_PREFIX.match(message)
    if match:
        line = int(match.group(1))
        message = message[match.end() :]
    if status == b"syntax":
        message = f"syntax error: {message}"
    raise ScriptError("lua", message, line, guest_traceback)


_LIMIT_MESSAGES = {
    "cpu": "the script used more than {limits.cpu_time_ms} ms of CPU time",
    "wall": "the script ran longer than {limits.wall_time_ms} ms",
    "memory": "the script used more than {limits.memory_bytes} bytes of memory",
    "output": "the script printed more than {limits.output_bytes} bytes",
    "calls": "the script made more than {limits.max_global_calls} global calls",
}
