"""The Lua engine in-process (no fork, no jail): the language layer of the sandbox."""

from __future__ import annotations

import pytest

from scriptpool.errors import NotFound
from scriptpool.languages import Language
from scriptpool.sandbox.engines import lua
from scriptpool.sandbox.errors import CallLimitExceeded, CpuTimeExceeded, MemoryExceeded, OutputExceeded, ScriptError
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.values import PlainValue
from tests.unit.engine_helpers import AnsweringHost, seeded_job


class RecordingHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        if op == "Session.get":
            raise NotFound(f"session {args[0]!s} not found")
        return {"echo": args}


def run(source: str, host: RecordingHost | None = None, **limits: int) -> tuple[PlainValue, str]:
    out = OutputSink(limits.get("output_bytes", 10_000))
    job = ScriptJob(language=Language.LUA, source=source, limits=JobLimits(**limits))
    return runner_for(Language.LUA).run(job, host or RecordingHost(), out), out.text()


def test_values_cross_with_their_types() -> None:
    host = RecordingHost()
    result, _ = run('return Session.create{name="n", tags={"a","b"}, metadata={x=1, y=1.5, z={}}}', host)
    assert host.calls == [
        ("Session.create", [{"name": "n", "tags": ["a", "b"], "metadata": {"x": 1, "y": 1.5, "z": {}}}])
    ]
    assert result == {"echo": [{"name": "n", "tags": ["a", "b"], "metadata": {"x": 1, "y": 1.5, "z": {}}}]}


def test_binary_strings_stay_bytes() -> None:
    result, _ = run(r'return "\255\0\1"')
    assert result == b"\xff\x00\x01"


def test_snake_case_aliases_exist() -> None:
    host = RecordingHost()
    run("Session.get_current() Session.set_current('x') State.list_keys('global') Event.publish('e', 1)", host)
    assert [op for op, _ in host.calls] == ["Session.getCurrent", "Session.setCurrent", "State.list", "Event.emit"]


@pytest.mark.parametrize(
    "name", ["io.popen", "io.stdout", "io.input", "io.tmpfile", "os.execute", "os.getenv", "os.exit",
             "os.tmpname", "package", "require", "debug", "dofile", "loadfile", "python", "string.dump",
             "_G.io.popen"],
)  # fmt: skip
def test_dangerous_globals_are_absent(name: str) -> None:
    result, _ = run(f"return {name} == nil")
    assert result is True


def test_string_dump_is_gone_from_the_string_metatable_too() -> None:
    result, _ = run('return getmetatable("") == false and ("x").dump == nil and string.dump == nil')
    assert result is True


def test_binary_chunks_cannot_be_loaded() -> None:
    result, _ = run(
        'local f, err = load("\\27Lua") local g, err2 = load("\\27Lua", "x", "b")'
        " return {f == nil, err, g == nil, err2}"
    )
    assert result == [
        True,
        "attempt to load a binary chunk (mode is 't')",  # the default mode is text only
        True,
        "load: only text chunks are allowed in the sandbox (mode 't')",  # asking for binary is refused
    ]


def test_host_callbacks_expose_no_python_attributes() -> None:
    with pytest.raises(ScriptError):
        run("return Session.create.__globals__")


def test_pcall_cannot_swallow_the_cpu_limit() -> None:
    with pytest.raises(CpuTimeExceeded):
        run("while true do pcall(function() while true do end end) end", cpu_time_ms=200)


def test_coroutines_get_the_cpu_budget_too() -> None:
    with pytest.raises(CpuTimeExceeded):
        run("coroutine.wrap(function() while true do end end)()", cpu_time_ms=200)


def test_gc_finalizers_are_refused_because_lua_runs_them_unhooked() -> None:
    source = "setmetatable({}, {__gc = function() while true do end end}) collectgarbage()"
    with pytest.raises(ScriptError, match="__gc finalizers are not allowed"):
        run(source, cpu_time_ms=200)
    # a __gc added after setmetatable is never called by Lua 5.4, so it cannot run unhooked either
    result, _ = run(
        "local mt = {} setmetatable({}, mt) mt.__gc = function() while true do end end collectgarbage() return 1"
    )
    assert result == 1


def test_memory_errors_cannot_be_caught() -> None:
    with pytest.raises(MemoryExceeded):
        run('while true do pcall(string.rep, "x", 1e9) end', memory_bytes=8_000_000, cpu_time_ms=2000)


def test_output_limit_keeps_the_first_bytes() -> None:
    out = OutputSink(25)
    job = ScriptJob(language=Language.LUA, source='for i = 1, 100 do print("abcdefghij") end')
    with pytest.raises(OutputExceeded):
        runner_for(Language.LUA).run(job, RecordingHost(), out)
    assert out.text() == "abcdefghij\nabcdefghij\nabc"


def test_call_limit() -> None:
    with pytest.raises(CallLimitExceeded):
        run("for i = 1, 100 do Session.getCurrent() end", max_global_calls=5)


def test_call_errors_are_tables_with_code_and_message() -> None:
    result, _ = run('local ok, e = pcall(Session.get, "x") return {ok, e.code, e.message, tostring(e)}')
    assert result == [False, "NOT_FOUND", "session x not found", "NOT_FOUND: session x not found"]


def test_session_objects_have_methods() -> None:
    class Host(RecordingHost):
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            if op == "Session.get":
                return {"id": "s1", "tags": ["a"], "state": "active"}
            return super().call(op, args)

    host = Host()
    result, _ = run('local s = Session.get("s1") s:suspend() return {s:hasTag("a"), s:has_tag("b")}', host)
    assert result == [True, False]
    assert host.calls[-1] == ("Session.suspend", ["s1"])


def test_self_referencing_table_is_a_clear_error() -> None:
    with pytest.raises(ScriptError, match="contains itself"):
        run("local t = {} t.t = t return t")


def test_null_stands_for_a_missing_value() -> None:
    host = RecordingHost()
    result, _ = run("Session.updateMetadata('s', {gone = null, kept = 1}) return {null, tostring(null)}", host)
    assert host.calls == [("Session.updateMetadata", ["s", {"gone": None, "kept": 1}])]
    # {null, "null"} is a list whose first item is null
    assert result == [None, "null"]


def test_each_runtime_gets_its_own_random_seed() -> None:
    values = {run("return math.random(1, 1 << 40)")[0] for _ in range(5)}
    assert len(values) == 5


SEEDED_LUA = (
    "return {math.random(1, 1000000000), math.random(1, 1000000000), INPUT.x, os.date('!%Y'), Session.get('s')}"
)


def test_a_runtime_prepared_in_the_spare_serves_one_job_configured_like_a_fresh_one() -> None:
    """The spare child loads the job's runtime and prelude before the job arrives; inputs, seed, clock,
    CPU budget and host come with the job, and the result equals that of a runtime built for the job."""
    from scriptpool.sandbox.engines import lua

    fresh_host = AnsweringHost()
    fresh = runner_for(Language.LUA).run(seeded_job(Language.LUA, SEEDED_LUA), fresh_host, OutputSink(1000))
    lua.prepare_spare_instance(JobLimits().memory_bytes)
    assert lua._spare.ready is not None
    host = AnsweringHost()
    answer = runner_for(Language.LUA).run(seeded_job(Language.LUA, SEEDED_LUA), host, OutputSink(1000))
    assert lua._spare.ready is None  # used once, by this job
    assert answer == fresh
    assert isinstance(answer, list) and answer[2:] == [[1, "two"], "2000", "answer"]
    assert host.calls == fresh_host.calls == [("Session.get", ["s"])]


def test_a_prepared_runtime_runs_one_script_only_and_other_limits_get_their_own() -> None:
    from scriptpool.sandbox.engines import lua

    lua.prepare_spare_instance(JobLimits().memory_bytes)
    prepared = lua._spare.take(JobLimits().memory_bytes)
    first = prepared.run(b"return 1", prepared.marshal.to_lua({}), 1.0, 1, 0)
    again = prepared.run(b"return 2", prepared.marshal.to_lua({}), 1.0, 1, 0)
    assert tuple(first)[:3] == (b"ok", 1, 1)
    assert tuple(again)[:2] == (b"error", b"this sandbox already ran a script")
    lua.prepare_spare_instance(JobLimits().memory_bytes)
    small = JobLimits(memory_bytes=2 * 1024 * 1024)
    with pytest.raises(MemoryExceeded):  # the job's own 2 MiB limit holds: not the prepared runtime's
        runner_for(Language.LUA).run(
            ScriptJob(language=Language.LUA, source="local t = {} for i = 1, 10^7 do t[i] = i end", limits=small),
            AnsweringHost(), OutputSink(100),
        )  # fmt: skip
    assert lua._spare.ready is None


def test_the_catalog_tables_built_in_lua_hold_every_global_operation_and_alias() -> None:
    """The catalog chunk (compiled once, run in each runtime) says what the Python catalog says."""
    import lupa.lua54 as lupa

    from scriptpool.sandbox.catalog import GLOBAL_OPS, aliases
    from scriptpool.sandbox.engines.lua import CATALOG_BYTECODE

    runtime = lupa.LuaRuntime(encoding=None)
    catalog, alias_table = runtime.execute(CATALOG_BYTECODE)
    built = {name.decode(): [op.decode() for op in ops.values()] for name, ops in catalog.items()}
    assert built == {name: list(ops) for name, ops in GLOBAL_OPS.items()}
    built_aliases = {
        name.decode(): {alias.decode(): target.decode() for alias, target in table.items()}
        for name, table in alias_table.items()
    }
    assert built_aliases == {name: dict(aliases(name)) for name in GLOBAL_OPS}
    assert sum(map(len, built_aliases.values())) > 10  # the comparison is not vacuous


MB = 1024 * 1024


@pytest.mark.parametrize(
    "source",
    [
        # a <close> handler that replaces the memory error with its own
        "local ok, e = pcall(function()\n"
        "  local guard <close> = setmetatable({}, {__close = function() error('mine', 0) end})\n"
        "  local s = 'x' while true do s = s .. s end\n"
        "end) return {'survived', e}",
        # the same, the handler added after setmetatable and declared in a chunk made by load
        "local mt = {} local t = setmetatable({}, mt) mt.__close = function() error('mine', 0) end\n"
        "local f = assert(load('local t = ... local g <close> = t local s = \"x\" while true do s = s .. s end'))\n"
        "return {'survived', pcall(f, t)}",
        # load's own compile running out of memory answers nil, message
        "local f, e = load('return {' .. string.rep('1,', 3000000) .. '}') return {'survived', e}",
        # the error through coroutine.wrap, xpcall's handler, and an error object made of it
        "local f = coroutine.wrap(function() local s = 'x' while true do s = s .. s end end)\n"
        "local ok, e = pcall(f) return {'survived', e}",
        "return {'survived', xpcall(function() local s = 'x' while true do s = s .. s end end,"
        " function(m) return 'caught' end)}",
        "local ok, e = pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end)\n"
        "local ok2, e2 = pcall(error, {e}) return {'survived', ok2}",
    ],
    ids=["close_handler", "close_added_later_in_load", "load_compile", "coroutine_wrap", "xpcall_handler",
         "error_object"],
)  # fmt: skip
def test_no_script_can_swallow_the_memory_limit(source: str) -> None:
    with pytest.raises((MemoryExceeded, ScriptError)) as caught:
        run(source, memory_bytes=16 * MB, cpu_time_ms=5000)
    if caught.type is ScriptError:  # the <close> cases are refused before they can run
        assert "to-be-closed variables (<close>) are not allowed" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "local x <close> = nil",
        "local a, b <close> = 1, nil",
        "local function f() return function() local y < close > = false end end",
        "return load('local z <close> = nil')",  # refused by load: returns nil, message
    ],
)
def test_to_be_closed_variables_are_refused(source: str) -> None:
    refused = "to-be-closed variables (<close>) are not allowed in the sandbox"
    try:
        result, _ = run(source)
    except ScriptError as exc:
        assert str(exc) == refused
    else:
        assert result == [None, f"load: {refused}"]


def test_scripts_that_only_mention_close_still_run() -> None:
    """The <close> scan reads the compiled code, not the text: constants of every kind, long strings
    (their sizes take more than one byte), nested functions and `<const>` do not trip it."""
    source = """
    local close <const> = 'close'
    local long = string.rep('close ', 100)
    local function nested(a) local b = function() return a, 1.5, 2^40, true, nil, close end return b end
    local co = coroutine.create(function() coroutine.yield(1) end)
    coroutine.resume(co)
    local f = assert(load('local close = 1 return close < 2, "' .. long .. '"'))
    return {coroutine.close(co), #long, nested(7)() == 7, (f())}
    """
    result, _ = run(source)
    assert result == [True, 600, True, True]


def test_no_prelude_metatable_can_be_read_or_replaced() -> None:
    """Every table the prelude gives a metatable: the globals, a call's error, a session object, an
    artifact reference, a lazily read artifact, null, strings. A script that could reach one could
    add a __gc to it, and the prelude's later objects would be finalized outside the CPU budget."""
    source = """
    local Host = {}
    function Host.probe(name, v)
      local mt = getmetatable(v)
      local replaced = pcall(setmetatable, v, {__gc = true})
      local plain = pcall(setmetatable, v, {})
      return name .. ':' .. tostring(mt) .. ':' .. tostring(replaced) .. ':' .. tostring(plain)
    end
    local out = {}
    for _, name in ipairs({'Session', 'Artifact', 'State', 'Event', 'Hook'}) do
      out[#out + 1] = Host.probe(name, _G[name])
    end
    local _, err = pcall(Session.get, 'missing')
    out[#out + 1] = Host.probe('error', err)
    local s = Session.load('a')
    out[#out + 1] = Host.probe('session', s)
    out[#out + 1] = tostring(s.__index) .. ':' .. tostring(s.__gc)
    out[#out + 1] = Host.probe('ref', Artifact.store('', {content = 'x'}))
    out[#out + 1] = Host.probe('artifact', Artifact.get('', 'a'))
    out[#out + 1] = Host.probe('null', null)
    out[#out + 1] = tostring(getmetatable(''))
    return out
    """

    class ObjectHost(RecordingHost):
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            if op in ("Session.load", "Artifact.store", "Artifact.get"):
                return {"id": "a", "session_id": "s", "version": 1}
            return super().call(op, args)

    result, _ = run(source, ObjectHost())
    names = ["Session", "Artifact", "State", "Event", "Hook", "error", "session"]
    expected = [f"{name}:false:false:false" for name in names] + ["nil:nil"]
    expected += ["ref:false:false:false", "artifact:false:false:false", "null:false:false:false", "false"]
    assert result == expected


def test_host_faults_reach_the_script_as_a_generic_error() -> None:
    """A global call that fails on the host for a reason of its own (an OSError, a string Python
    cannot encode) gives the script an INTERNAL error with a fixed text: no Python type name,
    message or exception object (lupa would otherwise hand the exception over as userdata)."""

    class FaultyHost:
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            if op == "Session.list":
                raise OSError(27, "File too large: /srv/secret/path")
            return "\udc80"  # the host answers a string with a lone surrogate

    source = "local a, e = pcall(Session.list) local b, f = pcall(Session.getCurrent)"
    source += " return {type(e), tostring(e), type(f), tostring(f)}"
    result, _ = run(source, FaultyHost())  # type: ignore[arg-type]
    generic = "INTERNAL: the call failed in the host"
    assert result == ["table", generic, "table", generic]


def test_arguments_that_cannot_cross_are_invalid_argument() -> None:
    result, _ = run("local ok, e = pcall(Session.create, {metadata = {[1.5] = 1}}) return e.code")
    assert result == "INVALID_ARGUMENT"


def _filtered_runtime_reaches(monkeypatch: pytest.MonkeyPatch, *, filtered: bool) -> tuple[bool, str]:
    """Builds a job's runtime exactly as `LuaRunner` does (with or without its attribute filter),
    hands one Python object to Lua code in it, and returns what that code could reach through it:
    the attribute filter is the layer that stops a Python object, should one ever leak into a
    script, from leading to its class, its module and the interpreter."""
    if not filtered:
        monkeypatch.setattr(lua, "_deny_attributes", None)
    prepared = lua._Prepared(JobLimits().memory_bytes)
    try:
        reach = prepared.runtime.eval(
            "function(obj) local ok, v = pcall(function() return obj.__self__.job end) return ok, tostring(v) end"
        )
        prepared.binding.job = ScriptJob(language=Language.LUA, source="secret source")
        ok, value = reach(prepared.binding.host_call)
        return bool(ok), value.decode() if isinstance(value, bytes) else str(value)
    finally:
        prepared.discard()


def test_the_attribute_filter_stops_a_leaked_python_object(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = _filtered_runtime_reaches(monkeypatch, filtered=True)
    assert ok is False and "Python attributes are not reachable from the sandbox" in str(message)


def test_without_the_attribute_filter_the_same_object_leads_to_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: the attack it makes succeeds once the filter is removed."""
    ok, description = _filtered_runtime_reaches(monkeypatch, filtered=False)
    assert ok is True and "secret source" in str(description)
