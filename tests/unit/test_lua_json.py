"""The Lua `JSON` global (sandbox/engines/lua_json.py), in-process: compact sorted JSON out, Lua
values in, clean INVALID_ARGUMENT refusals, bounded by MAX_DEPTH and the job's memory, and no
global call spent."""

from __future__ import annotations

import pytest

from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.sandbox.engines import lua_json
from scriptpool.sandbox.errors import MemoryExceeded
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.values import MAX_DEPTH, PlainValue


class NoHost:
    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        raise AssertionError(f"JSON must not make a global call ({op})")


def run(source: str, **limits: int) -> PlainValue:
    job = ScriptJob(language=Language.LUA, source=source, limits=JobLimits(**limits))
    return runner_for(Language.LUA).run(job, NoHost(), OutputSink(10_000))


def test_stringify_is_compact_with_sorted_keys_and_lua_shapes() -> None:
    result = run("""return {
        JSON.stringify({b = 1, a = {1, 2, "x"}, c = {}}), JSON.stringify(nil), JSON.stringify(null),
        JSON.stringify(1.5), JSON.stringify("é\\n"), JSON.stringify(true)}""")
    assert result == ['{"a":[1,2,"x"],"b":1,"c":{}}', "null", "null", "1.5", '"é\\n"', "true"]


def test_parse_gives_lua_values_with_1_based_arrays_and_nil_for_null() -> None:
    result = run("""
        local v = JSON.parse('{"list": [10, 20, 30], "n": 7, "f": 0.5, "none": null, "t": true}')
        return {v.list[1], v.list[3], #v.list, math.type(v.n), v.f, v.none == nil, v.t, JSON.parse('null') == nil}
    """)
    assert result == [10, 30, 3, "integer", 0.5, True, True, True]


def test_a_round_trip_keeps_the_value() -> None:
    assert run("return JSON.parse(JSON.stringify({a = {x = 'y'}, b = {1, 2}}))") == {"a": {"x": "y"}, "b": [1, 2]}


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("JSON.stringify(function() end)", "function"),
        ("local t = {} t.me = t JSON.stringify(t)", "contains itself"),
        ("JSON.stringify(0/0)", "NaN"),
        ("JSON.stringify({x = math.huge})", "NaN and infinity"),
        ("JSON.stringify({1, x = 2})", "table keys"),
        ("JSON.parse('{bad')", "JSON.parse: Expecting property name"),
        ("JSON.parse('NaN')", "NaN is not JSON"),
        ("JSON.parse(42)", "expected a JSON string"),
        (f"JSON.parse(string.rep('[', {MAX_DEPTH + 1}) .. string.rep(']', {MAX_DEPTH + 1}))", "deeper than"),
        ("JSON.parse(string.rep('[', 100000))", "deeper than"),
    ],
)
def test_what_has_no_json_form_is_a_clean_invalid_argument(source: str, fragment: str) -> None:
    result = run(f"local ok, e = pcall(function() {source} end) return {{ok, e.code, e.message}}")
    assert isinstance(result, list) and result[:2] == [False, "INVALID_ARGUMENT"]
    assert fragment in str(result[2])


def test_json_calls_are_not_global_calls() -> None:
    assert run("for i = 1, 50 do JSON.parse(JSON.stringify({i})) end return 1", max_global_calls=1) == 1


def test_a_parsed_value_must_fit_the_jobs_memory() -> None:
    with pytest.raises(MemoryExceeded):
        run("local s = '[' .. string.rep('\"abcdefgh\",', 400000) .. '1]' return #JSON.parse(s)",
            memory_bytes=16 * 1024 * 1024)  # fmt: skip


def test_the_pure_functions() -> None:
    assert lua_json.stringify({"b": [1, None], "a": "x"}) == '{"a":"x","b":[1,null]}'
    assert lua_json.parse("[1, 2.5, 9223372036854775808]") == [1, 2.5, 9.223372036854776e18]
    with pytest.raises(InvalidArgument):
        lua_json.stringify(b"\xff")
