"""Attacks on the Lua sandbox, through the real stack: each names one vector, asserts the exact
outcome category, and that the worker then runs a normal job correctly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.outcomes import Outcome
from scriptpool.values import from_value, from_value_map
from tests.conftest import Stack
from tests.integration.helpers import assert_worker_healthy, outcome, run_lua
from tests.security.attack_table import assert_limits_held

MB = 1024 * 1024


@dataclass(frozen=True)
class Attack:
    source: str
    expected: Outcome
    message: str = ""
    limits: dict[str, int] = field(default_factory=dict)


CPU = {"cpu_time_ms": 400, "wall_time_ms": 20_000}
SMALL_MEMORY = {"memory_bytes": 16 * MB}

ATTACKS: dict[str, Attack] = {
    # --- escapes to the host: bridge objects, bytecode, metatables, host callback internals
    "python_bridge_global": Attack("return python.eval('1')", Outcome.SCRIPT_ERROR, "python"),
    "python_builtins_via_package": Attack("return package.loaded.python", Outcome.SCRIPT_ERROR, "package"),
    "python_via_require": Attack("return require('python')", Outcome.SCRIPT_ERROR, "require"),
    "host_callback_attribute": Attack("return Session.create.__globals__", Outcome.SCRIPT_ERROR, "index a function"),
    "host_callback_upvalues_via_debug": Attack(
        "return debug.getupvalue(Session.create, 1)", Outcome.SCRIPT_ERROR, "debug"
    ),  # fmt: skip
    "string_dump_bytecode": Attack("return string.dump(function() end)", Outcome.SCRIPT_ERROR, "dump"),
    "string_dump_via_metatable": Attack("return ('').dump(print)", Outcome.SCRIPT_ERROR, "dump"),
    "binary_chunk_load": Attack("local f, e = load('\\27LuaT') assert(f, e)", Outcome.SCRIPT_ERROR, "binary chunk"),
    "load_reaches_real_globals": Attack(
        "return assert(assert(load('return io.open'))()('/etc/passwd'))", Outcome.SCRIPT_ERROR, "NOT_FOUND"
    ),  # fmt: skip  (load's io.open is the sandbox's: /etc/passwd of the job's root)
    "load_with_function_reader": Attack(
        "return assert(load(function() return nil end))", Outcome.SCRIPT_ERROR, "source strings"
    ),  # fmt: skip
    "dofile_host_file": Attack("return dofile('/etc/passwd')", Outcome.SCRIPT_ERROR, "dofile"),
    "loadfile_host_file": Attack("return loadfile('/etc/passwd')", Outcome.SCRIPT_ERROR, "loadfile"),
    "io_open_host_file": Attack("return assert(io.open('/etc/passwd')):read('a')", Outcome.SCRIPT_ERROR, "NOT_FOUND"),
    "io_open_out_of_root": Attack(
        "return assert(io.open('/../etc/passwd')):read('a')", Outcome.SCRIPT_ERROR, "PERMISSION_DENIED"
    ),  # fmt: skip
    "os_execute": Attack("return os.execute('id')", Outcome.SCRIPT_ERROR, "execute"),
    "io_popen": Attack("return io.popen('id')", Outcome.SCRIPT_ERROR, "popen"),
    "os_exit_kills_worker": Attack("os.exit(1)", Outcome.SCRIPT_ERROR, "exit"),
    "os_getenv_secrets": Attack("return os.getenv('REDIS_URL')", Outcome.SCRIPT_ERROR, "getenv"),
    "os_remove_file": Attack("return assert(os.remove('/tmp/x'))", Outcome.SCRIPT_ERROR, "NOT_FOUND"),
    "os_remove_out_of_root": Attack("return assert(os.remove('../x'))", Outcome.SCRIPT_ERROR, "PERMISSION_DENIED"),
    "collectgarbage_stop": Attack("collectgarbage('stop')", Outcome.SCRIPT_ERROR, "only 'collect'"),
    "gc_finalizer_runs_unhooked": Attack(
        "setmetatable({}, {__gc = function() while true do end end})", Outcome.SCRIPT_ERROR, "__gc"
    ),  # fmt: skip
    "null_sentinel_is_read_only": Attack("null.x = 1", Outcome.SCRIPT_ERROR, "read-only"),
    # --- CPU spin in every construct
    "spin_while": Attack("while true do end", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_repeat": Attack("repeat until false", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_numeric_for": Attack("for i = 1, math.huge do end", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_goto": Attack("::top:: goto top", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_tail_call": Attack("local function f() return f() end return f()", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_in_pcall_swallowing_errors": Attack(
        "while true do pcall(function() while true do end end) end", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_xpcall_handler": Attack(
        "xpcall(error, function() while true do end end)", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_coroutine": Attack(
        "coroutine.resume(coroutine.create(function() while true do end end))", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_coroutine_wrap_inside_pcall": Attack(
        "while true do pcall(coroutine.wrap(function() while true do end end)) end",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    "spin_in_gsub_callback": Attack(
        "string.gsub(string.rep('a', 100), '.', function() while true do end end)",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    "spin_in_sort_comparator": Attack(
        "table.sort({3, 2, 1}, function() while true do end end)", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_tostring_metamethod": Attack(
        "print(setmetatable({}, {__tostring = function() while true do end end}))",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    "spin_in_error_value_tostring": Attack(
        "error(setmetatable({}, {__tostring = function() while true do end end}))",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    "spin_in_index_metamethod": Attack(
        "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x",
        Outcome.SCRIPT_ERROR,
        "stack overflow",
        limits=CPU,
    ),  # fmt: skip
    "pattern_matching_bomb_in_c": Attack(
        "return string.find(string.rep('a', 40000), '.-.-.-.-.-.-.-.-b')",
        Outcome.CPU_TIME_EXCEEDED,
        limits={"cpu_time_ms": 1000},
    ),  # fmt: skip
    "wall_clock_hog_below_cpu_limit": Attack(
        "while true do end", Outcome.WALL_TIME_EXCEEDED, limits={"cpu_time_ms": 20_000, "wall_time_ms": 300}
    ),  # fmt: skip
    # --- memory bombs
    "table_growth": Attack(
        "local t = {} for i = 1, 1e9 do t[i] = i end", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY
    ),  # fmt: skip
    "string_doubling": Attack(
        "local s = 'x' while true do s = s .. s end", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY
    ),  # fmt: skip
    "string_rep_huge": Attack("return #string.rep('x', 2^30)", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY),
    "string_rep_beyond_lua_size": Attack("return #string.rep('x', 2^62)", Outcome.SCRIPT_ERROR, "too large"),
    "memory_error_swallowed_by_pcall": Attack(
        "while true do pcall(string.rep, 'x', 1e9) end",
        Outcome.MEMORY_EXCEEDED,
        limits={**SMALL_MEMORY, "cpu_time_ms": 5000},
    ),  # fmt: skip
    "table_concat_huge": Attack(
        "local t = {} for i = 1, 1e7 do t[i] = 'abcdefgh' end return #table.concat(t)",
        Outcome.MEMORY_EXCEEDED,
        limits=SMALL_MEMORY,
    ),  # fmt: skip
    "coroutine_flood": Attack(
        "local t = {} while true do t[#t + 1] = coroutine.create(print) end",
        Outcome.MEMORY_EXCEEDED,
        limits=SMALL_MEMORY,
    ),  # fmt: skip
    "closure_flood": Attack(
        "local t = {} while true do local n = #t t[n + 1] = function() return n end end",
        Outcome.MEMORY_EXCEEDED,
        limits=SMALL_MEMORY,
    ),  # fmt: skip
    # --- recursion
    "deep_recursion": Attack(
        "local function f(n) return 1 + f(n + 1) end return f(1)", Outcome.SCRIPT_ERROR, "stack overflow"
    ),  # fmt: skip
    "deep_coroutine_nesting": Attack(
        "local function f() return coroutine.wrap(f)() end return f()", Outcome.SCRIPT_ERROR, "C stack overflow"
    ),
    # --- output floods
    "print_flood": Attack("while true do print('spam') end", Outcome.OUTPUT_EXCEEDED, limits={"output_bytes": 4096}),
    "single_huge_print": Attack(
        "print(string.rep('x', 5 * 1024 * 1024))", Outcome.OUTPUT_EXCEEDED, limits={"output_bytes": 4096}
    ),  # fmt: skip
    "huge_error_message": Attack(
        "error(string.rep('x', 4 * 1024 * 1024))", Outcome.SCRIPT_ERROR, "more characters cut"
    ),
    # --- global-call floods and hostile arguments
    "global_call_flood": Attack(
        "while true do Session.getCurrent() end", Outcome.CALL_LIMIT_EXCEEDED, limits={"max_global_calls": 50}
    ),  # fmt: skip
    "global_call_flood_in_pcall": Attack(
        "while true do pcall(Session.list) end", Outcome.CALL_LIMIT_EXCEEDED, limits={"max_global_calls": 50}
    ),  # fmt: skip
    "huge_argument_to_global": Attack(
        "Session.create{name = string.rep('x', 8 * 1024 * 1024)}", Outcome.SCRIPT_ERROR, "maximum is 255"
    ),  # fmt: skip
    "deeply_nested_argument": Attack(
        "local t = {} local c = t for i = 1, 200 do c.x = {} c = c.x end Session.create{metadata = t}",
        Outcome.SCRIPT_ERROR,
        "nested",
    ),  # fmt: skip
    "self_referencing_argument": Attack(
        "local t = {} t.t = t Session.create{metadata = t}", Outcome.SCRIPT_ERROR, "contains itself"
    ),  # fmt: skip
    "function_as_argument": Attack("Session.create{name = print}", Outcome.SCRIPT_ERROR, "cannot be passed"),
    "mixed_key_table_argument": Attack("Session.create{metadata = {1, 2, x = 3}}", Outcome.SCRIPT_ERROR, "keys"),
    "forged_session_id_path": Attack(
        "return Session.get('../../etc/passwd')", Outcome.SCRIPT_ERROR, "INVALID_ARGUMENT"
    ),  # fmt: skip
    "format_string_width_bomb": Attack("return string.format('%99999999d', 1)", Outcome.SCRIPT_ERROR, "invalid"),
    "unreturnable_result_coroutine": Attack(
        "return coroutine.create(print)", Outcome.SCRIPT_ERROR, "cannot be passed"
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_lua_attack(client: ScriptpoolClient, name: str) -> None:
    attack = ATTACKS[name]
    job = run_lua(client, attack.source, limits=attack.limits)
    assert outcome(job) is attack.expected, f"{name}: {outcome(job)}: {job.result.message}"
    if attack.message:
        assert attack.message in job.result.message, job.result.message
    assert "/work/" not in job.result.message and "Traceback (most recent" not in job.result.message
    assert_limits_held(client, job, attack.limits)
    assert_worker_healthy(client)


def test_artifact_byte_limit_per_job(client: ScriptpoolClient) -> None:
    """A job cannot write more artifact content than its `artifact_bytes` limit, even in many small
    stores; the refusal is a catchable RESOURCE_EXHAUSTED and nothing over the limit is stored."""
    source = """
    local stored, code = 0, nil
    for i = 1, 100 do
      local ok, err = pcall(Artifact.store, '', {content = string.rep('x', 1000), type = 'data',
                                                metadata = {name = 'part' .. i}})
      if not ok then code = err.code break end
      stored = stored + 1
    end
    return {stored, code, #Artifact.list('')}
    """
    job = run_lua(client, source, limits={"artifact_bytes": 4500})
    assert outcome(job) is Outcome.OK, job.result.message
    assert from_value(job.result.result) == [4, "RESOURCE_EXHAUSTED", 4]
    assert_worker_healthy(client)


def test_reading_an_artifact_larger_than_the_jobs_memory_is_refused(client: ScriptpoolClient) -> None:
    """Artifact content is bounded by the reading job's memory limit before it is held anywhere."""
    store = run_lua(client, "return tostring(Artifact.store('', {content = string.rep('x', 3000000), type = 'data'}))")
    assert outcome(store) is Outcome.OK, store.result.message
    artifact_id = from_value(store.result.result)
    assert isinstance(artifact_id, str)
    source = f"""
    local ok, err = pcall(Artifact.getContent, '', '{artifact_id}')
    local ok2, err2 = pcall(function() return Artifact.get('', '{artifact_id}').content end)  -- lazy
    return {{ok, err.code, ok2, err2.code}}
    """
    job = run_lua(client, source, session_id=store.session_id, limits={"memory_bytes": 2 * MB})
    assert outcome(job) is Outcome.OK, job.result.message
    assert from_value(job.result.result) == [False, "RESOURCE_EXHAUSTED", False, "RESOURCE_EXHAUSTED"]
    big_enough = run_lua(client, f"return #Artifact.getContent('', '{artifact_id}')", session_id=store.session_id)
    assert from_value(big_enough.result.result) == 3000000
    assert_worker_healthy(client)


def test_another_principals_session_answers_like_a_missing_one_and_is_untouched(
    stack: Stack, client: ScriptpoolClient
) -> None:
    """A real session of another principal: reading, changing or deleting it from a script answers
    exactly as for an id nobody owns (the id aside), and the owner's session is unchanged."""
    _, victim_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, victim_key) as victim:
        owned = victim.create_session("victim", tags=["keep"], metadata={"secret": "s3cr3t"})
        missing = str(uuid.uuid4())
        source = """
        local answers = {}
        for _, id in ipairs({INPUT.owned, INPUT.missing}) do
          local seen = {}
          for _, attempt in ipairs({
            function() return Session.get(id) end,
            function() return Session.getMetadata(id) end,
            function() return Session.updateMetadata(id, {secret = 'stolen'}) end,
            function() return Session.setTags(id, {'stolen'}) end,
            function() return Session.complete(id) end,
            function() return Session.delete(id) end,
          }) do
            local ok, err = pcall(attempt)
            local said = ok and 'allowed' or (err.code .. ': ' .. err.message:gsub(id:gsub('%-', '%%-'), 'ID'))
            seen[#seen + 1] = said
          end
          answers[#answers + 1] = seen
        end
        return answers
        """
        job = run_lua(client, source, inputs={"owned": owned.id, "missing": missing})
        assert outcome(job) is Outcome.OK, job.result.message
        answers = from_value(job.result.result)
        assert isinstance(answers, list) and len(answers) == 2
        against_owned, against_missing = answers
        assert against_owned == against_missing
        assert isinstance(against_owned, list)
        assert all(isinstance(a, str) and a.startswith("NOT_FOUND: ") for a in against_owned), against_owned
        after = victim.get_session(owned.id)
        assert (after.state, list(after.tags), from_value_map(after.metadata)) == (
            owned.state,
            ["keep"],
            {"secret": "s3cr3t"},
        )
    assert_worker_healthy(client)


@pytest.mark.parametrize(
    "call", ["Artifact.getContent(INPUT.session, INPUT.artifact)", "State.get('global', INPUT.key)"]
)
def test_a_host_answer_past_the_memory_left_ends_the_job_memory_exceeded(client: ScriptpoolClient, call: str) -> None:
    """Each answer fits the job's memory on its own, but not beside the ones kept before it: Lua
    running out of memory while a host answer is handed to it used to hang the child in lupa until
    the wall time (`wall_time_exceeded` after 20 s). The answer is refused before it reaches Lua, so
    the job ends `memory_exceeded` at once, and the pcall around it cannot catch that."""
    key = f"big-{uuid.uuid4().hex}"
    setup = f"""
    State.set('global', '{key}', string.rep('z', 1000000))
    return tostring(Artifact.store('', {{content = string.rep('y', 3000000), type = 'data'}}))
    """
    store = run_lua(client, setup)
    assert outcome(store) is Outcome.OK, store.result.message
    source = f"""
    local kept, caught = {{}}, 0
    for i = 1, 40 do
      local ok, answer = pcall(function() return {call} end)
      if ok then kept[#kept + 1] = answer else caught = caught + 1 end
    end
    return {{#kept, caught}}
    """
    inputs = {"session": store.session_id, "artifact": from_value(store.result.result), "key": key}
    job = run_lua(client, source, session_id=store.session_id, inputs=inputs,
                  limits={"memory_bytes": 16 * MB, "wall_time_ms": 20_000})  # fmt: skip
    assert outcome(job) is Outcome.MEMORY_EXCEEDED, f"{outcome(job)}: {job.result.message}"
    assert_worker_healthy(client)


@pytest.mark.parametrize("inputs", [{"big": "x" * (12 * MB)}, {"big": ["x" * 1000] * 12_000}])
def test_inputs_larger_than_the_jobs_memory_end_it_memory_exceeded(
    client: ScriptpoolClient, inputs: dict[str, object]
) -> None:
    """The job's inputs are made into Lua values outside any protected call: past the memory limit,
    Lua aborted the child (`internal_error`, SIGABRT). They are measured first."""
    job = run_lua(client, "return #INPUT.big", inputs=inputs, limits={"memory_bytes": 8 * MB})
    assert outcome(job) is Outcome.MEMORY_EXCEEDED, f"{outcome(job)}: {job.result.message}"
    fits = run_lua(client, "return #INPUT.big", inputs=inputs, limits={"memory_bytes": 64 * MB})
    assert outcome(fits) is Outcome.OK, fits.result.message
    assert_worker_healthy(client)
