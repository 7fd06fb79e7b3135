"""The State service and global: every operation from Lua, JavaScript, Python and gRPC, each scope,
value round trips, isolation, atomicity, session delete/snapshots, bad input and the timeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from unittest.mock import patch

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores.state import StateStore
from scriptpool.coordinator.stores.timeline import CallRecord
from scriptpool.core.job_records import hash_fields
from scriptpool.core.keys import global_state_key, job_state_key, session_state_key
from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, ScriptpoolError
from scriptpool.languages import Language
from scriptpool.v1 import common_pb2, sessions_pb2, state_pb2
from scriptpool.values import PlainValue, from_value, from_value_map, to_value
from tests.conftest import Stack

from .helpers import result_of, run_lua

LUA = """
State.set("global", "g", 1)
State.set("k", "two")
State.set("session:" .. Session.getCurrent(), "s", {a = 1})
State.set("job", "j", true)
local got = {g = State.get("global", "g"), k = State.get("session:current", "k"), k1 = State.get("k"),
             s = State.get("session:" .. Session.getCurrent(), "s"), j = State.get("job", "j"),
             missing = State.get("global", "nope") == nil}
local inc = {State.increment("global", "n", 5), State.increment("global", "n"), State.increment("c"),
             State.increment("c", 2.5)}
local cas = {State.compareAndSet("global", "cas", nil, "first"), State.compareAndSet("global", "cas", "wrong", "x"),
             State.compareAndSet("global", "cas", "first", "second"), State.compareAndSet("cas2", nil, 1)}
State.save("global", "alias", "v")
local loaded = State.load("global", "alias")
local keys, keys2, job_keys = State.list("global"), State.list_keys("session:current"), State.list("job")
local deleted = {State.delete("global", "alias"), State.delete("global", "alias")}
State.set("global", "g", nil)
State.delete("j") -- not in session:current: nothing happens
return {got = got, inc = inc, cas = cas, cas_val = State.get("global", "cas"), loaded = loaded, keys = keys,
        keys2 = keys2, job_keys = job_keys, deleted = deleted, g_gone = State.get("global", "g") == nil,
        j_kept = State.get("job", "j")}
"""

JS = """
State.set("global", "g", 1);
State.set("k", "two");
State.set("session:" + Session.getCurrent(), "s", {a: 1});
State.set("job", "j", true);
const got = {g: State.get("global", "g"), k: State.get("session:current", "k"), k1: State.get("k"),
             s: State.get("session:" + Session.getCurrent(), "s"), j: State.get("job", "j"),
             missing: State.get("global", "nope") === null};
const inc = [State.increment("global", "n", 5), State.increment("global", "n"), State.increment("c"),
             State.increment("c", 2.5)];
const cas = [State.compareAndSet("global", "cas", null, "first"), State.compareAndSet("global", "cas", "wrong", "x"),
             State.compareAndSet("global", "cas", "first", "second"), State.compareAndSet("cas2", null, 1)];
State.save("global", "alias", "v");
const loaded = State.load("global", "alias");
const keys = State.list("global"), keys2 = State.list_keys("session:current"), job_keys = State.list("job");
const deleted = [State.delete("global", "alias"), State.delete("global", "alias")];
State.set("global", "g", null);
State.delete("j");
({got, inc, cas, cas_val: State.get("global", "cas"), loaded, keys, keys2, job_keys, deleted,
  g_gone: State.get("global", "g") === null, j_kept: State.get("job", "j")})
"""

PY = """
State.set("global", "g", 1)
State.set("k", "two")
State.set("session:" + Session.getCurrent(), "s", {"a": 1})
State.set("job", "j", True)
got = {"g": State.get("global", "g"), "k": State.get("session:current", "k"), "k1": State.get("k"),
       "s": State.get("session:" + Session.getCurrent(), "s"), "j": State.get("job", "j"),
       "missing": State.get("global", "nope") is None}
inc = [State.increment("global", "n", 5), State.increment("global", "n"), State.increment("c"),
       State.increment("c", 2.5)]
cas = [State.compareAndSet("global", "cas", None, "first"), State.compare_and_set("global", "cas", "wrong", "x"),
       State.compareAndSet("global", "cas", "first", "second"), State.compareAndSet("cas2", None, 1)]
State.save("global", "alias", "v")
loaded = State.load("global", "alias")
keys, keys2, job_keys = State.list("global"), State.list_keys("session:current"), State.list("job")
deleted = [State.delete("global", "alias"), State.delete("global", "alias")]
State.set("global", "g", None)
State.delete("j")
{"got": got, "inc": inc, "cas": cas, "cas_val": State.get("global", "cas"), "loaded": loaded, "keys": keys,
 "keys2": keys2, "job_keys": job_keys, "deleted": deleted, "g_gone": State.get("global", "g") is None,
 "j_kept": State.get("job", "j")}
"""

EXPECTED = {
    "got": {"g": 1, "k": "two", "k1": "two", "s": {"a": 1}, "j": True, "missing": True},
    "inc": [5, 6, 1, 3.5],
    "cas": [True, False, True, True],
    "cas_val": "second",
    "loaded": "v",
    "keys": ["alias", "cas", "g", "n"],
    "keys2": ["c", "cas2", "k", "s"],
    "job_keys": ["j"],
    "deleted": [True, False],
    "g_gone": True,
    "j_kept": True,
}


@pytest.mark.parametrize(
    ("language", "source"), [(Language.LUA, LUA), (Language.JAVASCRIPT, JS), (Language.PYTHON, PY)]
)
def test_every_state_operation_and_scope(client: ScriptpoolClient, language: Language, source: str) -> None:
    assert result_of(client.run(language, source, timeout=60)) == EXPECTED


def test_state_written_in_one_language_is_read_in_the_others(client: ScriptpoolClient) -> None:
    session_id = client.create_session("shared").id
    value = {"list": [1, 2.5, "ü"], "n": -7}
    result_of(run_lua(client, "State.set('x', {list = {1, 2.5, 'ü'}, n = -7}) return 1", session_id=session_id))
    js = client.run(Language.JAVASCRIPT, "State.get('session:current', 'x')", session_id=session_id, timeout=60)
    py = client.run(Language.PYTHON, f"State.get('session:{session_id}', 'x')", session_id=session_id, timeout=60)
    assert result_of(js) == value
    assert result_of(py) == value


ROUND_TRIP: dict[str, PlainValue] = {
    "nested": {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}, "empty_list": [], "empty_map": {}},
    "unicode": "héllo wörld ✓ 日本語 🎉",
    "big_ints": [2**63 - 1, -(2**63), 2**53 + 1, 0],
    "floats": [0.1, 1e308, -0.0, 5e-324, math.inf, -math.inf, 1.0],
    "bytes": b"\x00\x01\xff binary \x00",
    "bools": [True, False, None],
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_values_round_trip_unchanged_over_grpc(client: ScriptpoolClient, name: str) -> None:
    value = ROUND_TRIP[name]
    client.state.set(state_pb2.SetStateRequest(scope="global", key=name, value=to_value(value)))
    answer = client.state.get(state_pb2.StateKey(scope="global", key=name))
    assert answer.found
    assert answer.value == to_value(value)  # exactly: ints stay ints, floats floats, bytes bytes
    assert from_value(answer.value) == value


def test_values_round_trip_unchanged_through_a_python_job(client: ScriptpoolClient) -> None:
    source = "\n".join(f"State.set('global', {k!r}, {v!r})" for k, v in ROUND_TRIP.items() if k != "floats")
    source = source + "\n" + "{" + ", ".join(f"{k!r}: State.get('global', {k!r})" for k in ROUND_TRIP) + "}"
    client.state.set(state_pb2.SetStateRequest(scope="global", key="floats", value=to_value(ROUND_TRIP["floats"])))
    job = client.run(Language.PYTHON, source, timeout=60)
    assert result_of(job) == ROUND_TRIP


def test_every_operation_over_grpc_with_each_client_scope(client: ScriptpoolClient) -> None:
    session_id = client.create_session("grpc").id
    for scope in ("global", f"session:{session_id}"):
        state = client.state
        state.set(state_pb2.SetStateRequest(scope=scope, key="a", value=to_value("x")))
        assert from_value(state.get(state_pb2.StateKey(scope=scope, key="a")).value) == "x"
        assert from_value(state.increment(state_pb2.IncrementStateRequest(scope=scope, key="n")).value) == 1
        by = to_value(-3)
        assert from_value(state.increment(state_pb2.IncrementStateRequest(scope=scope, key="n", by=by)).value) == -2
        swap = state.compare_and_set(state_pb2.CompareAndSetRequest(scope=scope, key="a", expected=to_value("x"),
                                                                    new_value=to_value("y")))  # fmt: skip
        assert swap.swapped and from_value(swap.current) == "y"
        assert list(state.list(state_pb2.StateScope(scope=scope)).keys) == ["a", "n"]
        deleted = state.delete(state_pb2.StateKey(scope=scope, key="a"))
        assert deleted.found and from_value(deleted.value) == "y"
        assert not state.get(state_pb2.StateKey(scope=scope, key="a")).found
    # session:current for a client is its current session (Session.setCurrent)
    with pytest.raises(FailedPrecondition, match="no current session"):
        client.state.get(state_pb2.StateKey(scope="session:current", key="n"))
    client.sessions.set_current(sessions_pb2.SetCurrentSessionRequest(session_id=session_id))
    assert from_value(client.state.get(state_pb2.StateKey(scope="session:current", key="n")).value) == -2
    with pytest.raises(InvalidArgument, match="only inside a running job"):
        client.state.get(state_pb2.StateKey(scope="job", key="n"))


def test_compare_and_set_semantics(client: ScriptpoolClient) -> None:
    def cas(expected: PlainValue, new: PlainValue, key: str = "k") -> tuple[bool, PlainValue]:
        request = state_pb2.CompareAndSetRequest(scope="global", key=key, expected=to_value(expected),
                                                 new_value=to_value(new))  # fmt: skip
        answer = client.state.compare_and_set(request)
        return answer.swapped, from_value(answer.current)

    assert cas(None, {"b": 1, "a": [1, 2]}) == (True, {"b": 1, "a": [1, 2]})  # null expected = must be absent
    assert cas(None, "other") == (False, {"b": 1, "a": [1, 2]})  # present: no swap, current returned
    assert cas({"a": [1, 2], "b": 1}, 1) == (True, 1)  # maps compare by content, whatever the key order
    assert cas(1.0, 2.0) == (True, 2.0)  # numbers compare numerically across int and float
    assert cas(2, "s") == (True, "s")
    assert cas("S", "t") == (False, "s")
    assert cas("s", None) == (True, None)  # new null deletes
    assert not client.state.get(state_pb2.StateKey(scope="global", key="k")).found
    assert cas("anything", 1) == (False, None)  # absent never equals a non-null expected


def test_increment_rules(client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]) -> None:
    def inc(key: str, by: PlainValue = None) -> PlainValue:
        request = state_pb2.IncrementStateRequest(scope="global", key=key)
        if by is not None:
            request.by.CopyFrom(to_value(by))
        return from_value(client.state.increment(request).value)

    assert inc("i", 2**62) == 2**62
    assert inc("i", 2**62 - 1) == 2**63 - 1  # exact 64-bit arithmetic
    with pytest.raises(FailedPrecondition, match="overflow a 64-bit integer"):
        inc("i")
    assert inc("i", -(2**63 - 1)) == 0  # the refused increment changed nothing
    assert inc("f", 0.1) == 0.1 and inc("f", 0.2) == 0.1 + 0.2  # IEEE doubles, as in every language
    assert inc("i", 0.5) == 0.5 and isinstance(inc("i", 1), float)  # int + float is a float
    client.state.set(state_pb2.SetStateRequest(scope="global", key="s", value=to_value("text")))
    before = redis_client.hgetall(global_state_key(principal_and_key[0]))
    with pytest.raises(FailedPrecondition, match="'s' in scope global holds a string, not a number"):
        inc("s")
    with pytest.raises(InvalidArgument, match="by must be an integer or a float"):
        inc("i", "1")
    assert redis_client.hgetall(global_state_key(principal_and_key[0])) == before


def test_concurrent_increments_from_two_jobs_lose_no_update(client: ScriptpoolClient) -> None:
    n = 300
    loop = f"for i = 1, {n} do State.increment('global', 'counter') State.increment('global', 'f', 0.5) end return 1"
    cas_loop = (f"for i = 1, {n // 3} do repeat local v = State.get('global', 'c') "
                "until State.compareAndSet('global', 'c', v, (v or 0) + 1) end return 1")  # fmt: skip
    jobs = [client.submit(Language.LUA, source) for source in (loop, loop, cas_loop, cas_loop)]
    for job in jobs:
        assert result_of(client.wait(job.id, timeout=120)) == 1

    def get(key: str) -> PlainValue:
        return from_value(client.state.get(state_pb2.StateKey(scope="global", key=key)).value)

    assert get("counter") == 2 * n
    assert get("f") == float(n)
    assert get("c") == 2 * (n // 3)


def test_principals_cannot_reach_each_others_state(client: ScriptpoolClient, stack: Stack) -> None:
    session_id = client.create_session("mine").id
    client.state.set(state_pb2.SetStateRequest(scope="global", key="secret", value=to_value(42)))
    client.state.set(state_pb2.SetStateRequest(scope=f"session:{session_id}", key="s", value=to_value(1)))
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        assert not other.state.get(state_pb2.StateKey(scope="global", key="secret")).found
        other.state.set(state_pb2.SetStateRequest(scope="global", key="secret", value=to_value(0)))
        missing = "7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f"
        messages = []
        for target in (session_id, missing):  # someone else's session answers exactly like a missing one
            with pytest.raises(NotFound) as caught:
                other.state.get(state_pb2.StateKey(scope=f"session:{target}", key="s"))
            messages.append(caught.value.message.replace(target, "ID"))
            with pytest.raises(NotFound):
                other.state.set(state_pb2.SetStateRequest(scope=f"session:{target}", key="s", value=to_value(9)))
        assert messages[0] == messages[1] == "session ID not found"
        from_job = other.run(Language.LUA, f"local ok, e = pcall(State.list, 'session:{session_id}') return e.code")
        assert result_of(from_job) == "NOT_FOUND"
    assert from_value(client.state.get(state_pb2.StateKey(scope="global", key="secret")).value) == 42
    answer = client.state.get(state_pb2.StateKey(scope=f"session:{session_id}", key="s"))
    assert from_value(answer.value) == 1


def test_job_scope_belongs_to_one_job_and_ends_with_it(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("jobs").id
    first = run_lua(client, "State.set('job', 'mine', 1) return State.get('job', 'mine')", session_id=session_id)
    assert result_of(first) == 1
    assert not redis_client.exists(job_state_key(first.id))  # deleted when the job finished
    second = run_lua(client, "return {State.get('job', 'mine') == nil, #State.list('job')}", session_id=session_id)
    assert result_of(second) == [True, 0]


def test_session_delete_removes_its_state(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("doomed").id
    result_of(
        run_lua(client, "State.set('a', 1) State.set('b', {1, 2}) Session.save() return 1", session_id=session_id)
    )
    assert redis_client.exists(session_state_key(session_id))
    client.sessions.delete(sessions_pb2.SessionRef(session_id=session_id))
    assert not redis_client.keys(f"sp:session:{session_id}*")  # the state and the snapshot's copy too
    with pytest.raises(NotFound):
        client.state.get(state_pb2.StateKey(scope=f"session:{session_id}", key="a"))


def test_snapshots_hold_state_values_and_load_restores_them(client: ScriptpoolClient) -> None:
    session_id = client.create_session("snap").id
    source = """
    State.set('a', 1)
    local snap = Session.save()
    State.set('a', 2) State.set('b', 'new')
    local snap2 = Session.save()
    State.delete('a')
    Session.load(nil, snap)
    local restored = {State.get('a'), State.get('b') == nil, State.list()}
    Session.load(nil, snap2)
    return {restored, State.get('a'), State.get('b')}
    """
    assert result_of(run_lua(client, source, session_id=session_id)) == [[1, True, ["a"]], 2, "new"]


BAD_INPUT = [
    (state_pb2.StateKey(scope="nope", key="k"), InvalidArgument, "use global, session:current, session:<id> or job"),
    (state_pb2.StateKey(scope="", key="k"), InvalidArgument, "unknown scope ''"),
    (state_pb2.StateKey(scope="session:not-a-uuid", key="k"), InvalidArgument, "expected a UUIDv4"),
    (state_pb2.StateKey(scope="global", key=""), InvalidArgument, "key must be 1-256 characters"),
    (state_pb2.StateKey(scope="global", key="k" * 257), InvalidArgument, "key must be 1-256 characters (got 257)"),
]


@pytest.mark.parametrize(("request_", "error", "message"), BAD_INPUT)
def test_bad_keys_and_scopes_are_refused(
    client: ScriptpoolClient, request_: state_pb2.StateKey, error: type[ScriptpoolError], message: str
) -> None:
    for method in (client.state.get, client.state.delete):
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            method(request_)
    with pytest.raises(error):
        client.state.set(state_pb2.SetStateRequest(scope=request_.scope, key=request_.key, value=to_value(1)))


def test_oversized_values_are_refused_and_change_nothing(
    client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    client.state.set(state_pb2.SetStateRequest(scope="global", key="k", value=to_value("small")))
    before = redis_client.hgetall(global_state_key(principal_and_key[0]))
    big = to_value(b"x" * (1024 * 1024))
    with pytest.raises(InvalidArgument, match=r"value is 1048\d+ bytes encoded; the maximum is 1048576"):
        client.state.set(state_pb2.SetStateRequest(scope="global", key="k", value=big))
    deep = common_pb2.Value(int_value=1)
    for _ in range(33):  # (built by hand: to_value refuses it already)
        deep = common_pb2.Value(list_value=common_pb2.ValueList(items=[deep]))
    with pytest.raises(InvalidArgument, match="value is nested more than 32 levels deep"):
        client.state.set(state_pb2.SetStateRequest(scope="global", key="k", value=deep))
    with pytest.raises(InvalidArgument, match="expected is 1048"):
        client.state.compare_and_set(state_pb2.CompareAndSetRequest(scope="global", key="k", expected=big))
    assert redis_client.hgetall(global_state_key(principal_and_key[0])) == before


@pytest.fixture
def small_store(redis_client: Redis) -> Iterator[StateStore]:
    store = StateStore(redis_client, max_value_bytes=100, max_scope_keys=3, max_scope_bytes=100)
    yield store
    store.lean.close()


def _set(store: StateStore, caller: Caller, key: str, value: PlainValue) -> None:
    store.set(caller, state_pb2.SetStateRequest(scope="global", key=key, value=to_value(value)))


def test_scope_budget_keeps_an_exact_byte_count(small_store: StateStore, redis_client: Redis) -> None:
    caller = Caller(principal="budget-" + str(id(small_store)))
    key = global_state_key(caller.principal)
    redis_client.delete(key)

    def used() -> int:
        fields = redis_client.hgetall(key)
        counted = int(fields.pop(b"", b"0"))
        assert counted == sum(len(k) + len(v) for k, v in fields.items())
        return counted

    _set(small_store, caller, "a", "x" * 50)
    _set(small_store, caller, "b", 7)
    small_store.increment(caller, state_pb2.IncrementStateRequest(scope="global", key="b", by=to_value(10**12)))
    small_store.increment(caller, state_pb2.IncrementStateRequest(scope="global", key="b", by=to_value(0.5)))
    _set(small_store, caller, "a", "short")
    assert used() > 0
    _set(small_store, caller, "c", 1)
    with pytest.raises(ResourceExhausted, match="scope global is full: at most 3 keys"):
        _set(small_store, caller, "d", 1)
    with pytest.raises(ResourceExhausted):
        _set(small_store, caller, "a", "y" * 90 + "z" * 5)  # fits the value limit, not the scope's bytes
    assert used() <= 100
    for k in ("a", "b", "c"):
        small_store.delete(caller, "global", k)
    assert not redis_client.exists(key)  # the counter goes with the last key


def test_state_get_and_its_timeline_entry_are_one_redis_command(client: ScriptpoolClient, redis_client: Redis) -> None:
    """The hot path: one EVALSHA on the lean connection, nothing through redis-py."""
    from scriptpool.core import lean_redis

    session_id = client.create_session("perf").id
    store = StateStore(redis_client)
    caller = Caller(principal="p-one-trip", job_id="job-one-trip", session_id=session_id)
    try:
        store.get(caller, "global", "warm", CallRecord("State.get", caller.job_id, session_id))  # loads the script
        sent: list[object] = []
        through_redis_py: list[object] = []
        pack: Callable[..., bytes] = lean_redis.pack_command
        execute: Callable[..., object] = redis_client.execute_command

        def counting_pack(*args: lean_redis.Arg) -> bytes:
            sent.append(args[0])
            return pack(*args)

        def counting_execute(*args: object, **kwargs: object) -> object:
            through_redis_py.append(args[0])
            return execute(*args, **kwargs)

        record = CallRecord("State.get", caller.job_id, session_id)
        with (
            patch.object(lean_redis, "pack_command", counting_pack),
            patch.object(redis_client, "execute_command", counting_execute),
        ):
            store.get(caller, "global", "k", record)
        assert sent == ["EVALSHA"] and through_redis_py == [] and record.written
    finally:
        store.lean.close()
    timeline = client.sessions.get_timeline(sessions_pb2.GetTimelineRequest(session_id=session_id))
    assert [e.description for e in timeline.entries][-2:] == ["State.get -> OK", "State.get -> OK"]


def test_every_job_state_call_is_on_the_timeline_with_its_outcome(client: ScriptpoolClient, stack: Stack) -> None:
    session_id = client.create_session("recorded").id
    other = client.create_session("someone's").id
    client.state.set(state_pb2.SetStateRequest(scope=f"session:{session_id}", key="t", value=to_value("x")))
    source = """
    State.set('k', 1)
    State.get('k')
    pcall(State.increment, 't')
    pcall(State.get, 'bogus', 'k')
    State.list('global')
    State.delete('k')
    State.compareAndSet('k', nil, 2)
    return 1
    """
    job = run_lua(client, source, session_id=session_id)
    result_of(job)
    _, stranger_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, stranger_key) as stranger:
        refused = stranger.run(
            Language.JAVASCRIPT, f"try {{ State.get('session:{other}', 'k') }} catch (e) {{ e.code }}"
        )
        assert result_of(refused) == "NOT_FOUND"
        stranger_timeline = stranger.sessions.get_timeline(
            sessions_pb2.GetTimelineRequest(session_id=refused.session_id, types=["global_call"])
        )
        assert [e.description for e in stranger_timeline.entries] == ["State.get -> NOT_FOUND"]
    timeline = client.sessions.get_timeline(
        sessions_pb2.GetTimelineRequest(session_id=session_id, types=["global_call"])
    )
    assert [e.description for e in timeline.entries] == [
        "State.set -> OK",
        "State.get -> OK",
        "State.increment -> FAILED_PRECONDITION",
        "State.get -> INVALID_ARGUMENT",
        "State.list -> OK",
        "State.delete -> OK",
        "State.compareAndSet -> OK",
    ]
    for entry in timeline.entries:
        assert entry.job_id == job.id and entry.timestamp > 0
        op, outcome = entry.description.split(" -> ")
        assert from_value_map(entry.data) == {"op": op, "outcome": outcome}


def test_lua_entries_match_what_record_job_call_writes(client: ScriptpoolClient, redis_client: Redis) -> None:
    from scriptpool.coordinator.services.recording import record_job_call
    from scriptpool.core.keys import timeline_key

    session_id = client.create_session("same-shape").id
    caller = Caller(principal="p-shape", job_id="job-shape", session_id=session_id)
    store = StateStore(redis_client)
    try:
        store.get(caller, "global", "k", CallRecord("State.get", caller.job_id, session_id))
    finally:
        store.lean.close()
    record_job_call(redis_client, caller, "State.get", "OK")
    entries = redis_client.xrange(timeline_key(session_id))
    assert isinstance(entries, list)
    from_lua, from_python = (hash_fields(fields) for _, fields in entries[-2:])
    assert from_lua.keys() == from_python.keys()
    assert {k: v for k, v in from_lua.items() if k != "ts"} == {k: v for k, v in from_python.items() if k != "ts"}
    assert abs(float(from_lua["ts"]) - float(from_python["ts"])) < 5


def test_state_cli(stack: Stack, principal_and_key: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from scriptpool.coordinator.cli.main import main

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["state", "--coordinator", stack.address, "--api-key", principal_and_key[1], *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert cli("set", "global", "k", '{"a": [1, 2.5, "ü"]}')[0] == 0
    assert cli("get", "global", "k")[1].strip() == '{"a": [1, 2.5, "ü"]}'
    assert cli("list", "global")[1].split() == ["k"]
    assert cli("delete", "global", "k")[1].strip() == "deleted"
    assert cli("get", "global", "k")[1].strip() == "null"
    code, _, err = cli("set", "global", "k", "not json")
    assert code == 2 and "INVALID_ARGUMENT" in err and "not JSON" in err
    code, _, err = cli("get", "nowhere", "k")
    assert code == 2 and "unknown scope 'nowhere'" in err
