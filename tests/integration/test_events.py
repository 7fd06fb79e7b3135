"""Event.emit / subscribe / receive / unsubscribe from all three languages and over gRPC, lifecycle
events, the client stream, and bad input."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.services.hooks import MAX_HOOKS_PER_PRINCIPAL
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import text
from scriptpool.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from scriptpool.languages import Language
from scriptpool.v1 import common_pb2, events_pb2, events_pb2_grpc, jobs_pb2, sessions_pb2
from scriptpool.values import from_value, to_value
from tests.conftest import TEST_QUEUE, Stack, wait_for

from .helpers import outcome, result_of, run_js, run_lua
from .test_python_jobs import run_py


def _subscribe(client: ScriptpoolClient, pattern: str) -> str:
    sub: events_pb2.Subscription = client.events.subscribe(events_pb2.SubscribeRequest(pattern=pattern))
    return sub.subscription_id


def _receive(client: ScriptpoolClient, subscription_id: str, timeout_ms: int = 5000) -> events_pb2.ReceiveResponse:
    request = events_pb2.ReceiveRequest(subscription_id=subscription_id, timeout_ms=timeout_ms)
    response: events_pb2.ReceiveResponse = client.events.receive(request)
    return response


def test_a_lua_job_emits_and_a_client_subscription_receives_it_with_the_jobs_session(
    client: ScriptpoolClient,
) -> None:
    sub = _subscribe(client, "order.*")
    job = run_lua(client, "Event.emit('order.placed', {id = 7, items = {'a', 'b'}}) return true")
    assert outcome(job).value == "ok"
    got = _receive(client, sub)
    assert got.received and got.event.name == "order.placed"
    assert from_value(got.event.data) == {"id": 7, "items": ["a", "b"]}
    assert got.event.session_id == job.session_id and got.event.job_id == job.id
    nothing = _receive(client, sub, timeout_ms=200)  # each event once
    assert not nothing.received


def test_scripts_in_every_language_subscribe_emit_and_receive(client: ScriptpoolClient) -> None:
    lua = run_lua(client, """
        local sub = Event.subscribe('ping.*')
        Event.publish('ping.lua', {n = 1})
        local e = Event.receive(sub, 2000)
        Event.unsubscribe(sub)
        return {e.name, e.data.n}
    """)  # fmt: skip
    js = run_js(client, """
        const sub = Event.subscribe('ping.*');
        Event.emit('ping.js', {n: 2});
        const e = Event.receive(sub, 2000);
        Event.unsubscribe(sub);
        [e.name, e.data.n]
    """)  # fmt: skip
    py = run_py(client, "sub = Event.subscribe('ping.*')\nEvent.emit('ping.py', {'n': 3})\n"
                "e = Event.receive(sub, 2000)\nEvent.unsubscribe(sub)\n[e['name'], e['data']['n']]")  # fmt: skip
    assert [result_of(lua), result_of(js), result_of(py)] == [["ping.lua", 1], ["ping.js", 2], ["ping.py", 3]]


def test_receive_without_an_event_returns_nil_after_its_timeout(client: ScriptpoolClient) -> None:
    job = run_lua(client, """
        local sub = Event.subscribe('never.*')
        local started = os.clock()
        local e = Event.receive(sub, 300)
        return e == nil
    """)  # fmt: skip
    assert result_of(job) is True


def test_lifecycle_events_of_the_principals_jobs_and_sessions_arrive(client: ScriptpoolClient) -> None:
    sub = _subscribe(client, "job.*")
    job = run_lua(client, "return 1")
    names = []
    for _ in range(2):
        got = _receive(client, sub)
        assert got.received and got.event.job_id == job.id
        names.append(got.event.name)
    assert names == ["job.started", "job.finished"]


def test_another_principal_sees_none_of_these_events_and_cannot_use_the_subscription(
    stack: Stack, client: ScriptpoolClient
) -> None:
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        theirs = _subscribe(other, "*")  # everything it may see
        mine = _subscribe(client, "secret.*")
        run_lua(client, "Event.emit('secret.thing', {password = 'hunter2'}) return 1")
        assert _receive(client, mine).event.name == "secret.thing"  # the owner sees its events...
        assert not _receive(other, theirs, timeout_ms=500).received  # ...nobody else sees any of them
        with pytest.raises(NotFound):
            _receive(other, mine, timeout_ms=10)
        with pytest.raises(NotFound):
            other.events.unsubscribe(events_pb2.Subscription(subscription_id=mine))
        assert _receive(client, mine, timeout_ms=10).received is False  # still there, still the owner's


def test_bad_event_input_is_refused_with_a_clear_error(client: ScriptpoolClient) -> None:
    for name in ("", "has space", "x" * 200, "new\nline"):
        with pytest.raises(InvalidArgument, match="event name"):
            client.events.emit(events_pb2.EmitEventRequest(name=name, data=to_value(1)))
    with pytest.raises(InvalidArgument, match="at most"):
        client.events.emit(events_pb2.EmitEventRequest(name="big", data=to_value("x" * 70_000)))
    with pytest.raises(InvalidArgument, match="pattern"):
        client.events.subscribe(events_pb2.SubscribeRequest(pattern="a b"))
    with pytest.raises(InvalidArgument, match="subscription_id"):
        _receive(client, "not-a-uuid", timeout_ms=10)
    with pytest.raises(NotFound):
        _receive(client, "6f1c2f4e-8b7a-4c1e-9f3a-2b6d5e4c3a21", timeout_ms=10)
    job = run_lua(client, "local ok, err = pcall(Event.emit, '') return err.code")
    assert result_of(job) == "INVALID_ARGUMENT"


def test_a_client_stream_delivers_matching_events_live(client: ScriptpoolClient) -> None:
    received: list[events_pb2.Event] = []
    following = threading.Event()
    stream: Any = events_pb2_grpc.EventServiceStub(client.channel).Stream(
        events_pb2.SubscribeRequest(pattern="live.*"), metadata=client._metadata, timeout=30
    )

    def read() -> None:
        try:
            for event in stream:
                if event.name == "live.ready":
                    following.set()
                    continue
                received.append(event)
                if len(received) == 2:
                    return
        except grpc.RpcError:
            return

    reader = threading.Thread(target=read)
    reader.start()
    while not following.wait(0.2):  # the stream starts at "now": handshake until it sees one of ours
        client.events.emit(events_pb2.EmitEventRequest(name="live.ready"))
    run_lua(client, "Event.emit('other.x', 0) Event.emit('live.a', 1) Event.emit('live.b', 2) return 1")
    reader.join(timeout=10)
    stream.cancel()
    assert [(e.name, from_value(e.data)) for e in received] == [("live.a", 1), ("live.b", 2)]


def test_event_calls_are_on_the_jobs_timeline(client: ScriptpoolClient) -> None:
    job = run_lua(client, "Event.emit('tl.x', 1) return 1")
    request = sessions_pb2.GetTimelineRequest(session_id=job.session_id, limit=100)
    descriptions = [e.description for e in client.sessions.get_timeline(request).entries]
    assert "Event.emit -> OK" in descriptions


def test_state_writes_emit_state_changed_to_their_principal_only(stack: Stack, client: ScriptpoolClient) -> None:
    sub = _subscribe(client, "state.changed")
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        theirs = _subscribe(other, "state.*")
        job = run_lua(client, """
            State.set('global', 'k', 1)
            State.get('global', 'k')
            State.increment('global', 'k', 2)
            State.compareAndSet('global', 'k', 99, 0)
            State.delete('global', 'k')
            return 1
        """)  # fmt: skip
        ops = []
        while (got := _receive(client, sub, timeout_ms=500)).received:
            data = from_value(got.event.data)
            assert isinstance(data, dict) and data["key"] == "k" and got.event.job_id == job.id
            ops.append(data["op"])
        assert ops == ["set", "increment", "delete"]  # reads and a failed compareAndSet change nothing
        assert not _receive(other, theirs, timeout_ms=300).received


def test_the_events_cli_emits_and_tails(
    stack: Stack, principal_and_key: tuple[str, str], client: ScriptpoolClient, capsys: pytest.CaptureFixture[str]
) -> None:
    from scriptpool.coordinator.cli.main import main

    base = ["events", "--coordinator", stack.address, "--api-key", principal_and_key[1]]
    tail_code: list[int] = []
    tail = threading.Thread(target=lambda: tail_code.append(main([*base, "tail", "cli.*", "--count", "2", "--json"])))
    tail.start()
    time.sleep(0.5)  # the tail follows from "now"
    assert main([*base, "emit", "other.x", "1"]) == 0
    assert main([*base, "emit", "cli.one", '{"n": 1}']) == 0
    run_lua(client, "Event.emit('cli.two', 'from a job') return 1")
    tail.join(timeout=15)
    assert tail_code == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["name"], e["data"]) for e in lines] == [("cli.one", {"n": 1}), ("cli.two", "from a job")]
    assert main([*base, "emit", "bad name", "1"]) == 2  # a refused request: exit 2 with the reason
    assert "event name" in capsys.readouterr().err


def test_live_streams_are_for_clients_and_capped_and_a_dropped_one_frees_its_slot(
    redis_server: PrivateRedis, principal_and_key: tuple[str, str], client: ScriptpoolClient, redis_client: Redis
) -> None:
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_event_streams=1)
    capped = start_coordinator(settings)
    try:
        with ScriptpoolClient(f"127.0.0.1:{capped.port}", principal_and_key[1]) as near:

            def opened(name: str) -> Any:
                stream = events_pb2_grpc.EventServiceStub(near.channel).Stream(
                    events_pb2.SubscribeRequest(pattern="slot.*"), metadata=near._metadata
                )
                time.sleep(0.3)  # a stream follows from "now": let it start
                near.events.emit(events_pb2.EmitEventRequest(name=name))
                return stream

            first = opened("slot.taken")
            assert next(first).name == "slot.taken"  # the one stream this coordinator allows is open
            with pytest.raises(ResourceExhausted, match="event streams"):
                next(near.follow_events("*"))
            first.cancel()
            give_up = time.monotonic() + 10
            while True:  # the slot comes back once the coordinator sees the cancel
                again = opened("slot.again")
                try:
                    assert next(again).name == "slot.again"
                    break
                except grpc.RpcError as exc:
                    assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < give_up
                finally:
                    again.cancel()
        job = client.submit(Language.LUA, "local t = os.clock() while os.clock() - t < 3 do end return 1")
        assert wait_for(lambda: client.get_job(job.id).status == jobs_pb2.JOB_STATUS_RUNNING)
        credential = text(redis_client.hget(f"sp:job:{job.id}", "credential") or b"")
        with ScriptpoolClient(f"127.0.0.1:{capped.port}", credential) as as_job:
            with pytest.raises(PermissionDenied, match="EventService.Stream"):
                next(as_job.follow_events("*"))
        client.cancel(job.id)
    finally:
        capped.stop(grace=1)


def test_receive_with_no_wait_returns_what_is_already_there(client: ScriptpoolClient) -> None:
    job = run_lua(client, """
        local sub = Event.subscribe('now.*')
        Event.emit('now.a', 1)
        Event.emit('now.b', 2)
        local a, b, c = Event.receive(sub), Event.receive(sub, 0), Event.receive(sub)
        return {a.name, b.name, c == nil}
    """)  # fmt: skip
    assert result_of(job) == ["now.a", "now.b", True]


LUA_CALLBACKS = """
local seen = {}
local hook = Hook.register('state.changed', function(ctx)
  seen[#seen + 1] = ctx.hook_point .. ':' .. ctx.data.key .. ':' .. ctx.job_id
end)
Event.on('cb.*', function(e) seen[#seen + 1] = e.name .. '=' .. tostring(e.data) end)
State.set('global', 'cbkey', 1)        -- the hook runs after this call returns
Event.emit('cb.one', 1)                -- Event.on runs after this one
local listed = Hook.list()
Hook.unregister(hook)
State.set('global', 'cbkey', 2)        -- no hook any more
Event.emit('cb.two', 2)
return {seen = seen, hooks = #listed, point = listed[1].hook_point}
"""


def test_lua_callbacks_run_after_the_global_call_that_brought_their_event(client: ScriptpoolClient) -> None:
    job = run_lua(client, LUA_CALLBACKS)
    result = result_of(job)
    assert isinstance(result, dict)
    assert result["seen"] == [f"state.changed:cbkey:{job.id}", "cb.one=1", "cb.two=2"]
    assert (result["hooks"], result["point"]) == (1, "state.changed")


def test_callback_registration_refuses_bad_input(client: ScriptpoolClient) -> None:
    job = run_lua(client, """
        local a, e1 = pcall(Hook.register, 'no.such.point', function() end)
        local b, e2 = pcall(Event.on, 'x.*', 'not a function')
        return {e1.code, e2.code}
    """)  # fmt: skip
    assert result_of(job) == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]


JS_CALLBACKS = """
const seen = [];
const hook = Hook.register('state.changed', (ctx) => seen.push(ctx.hook_point + ':' + ctx.data.key + ':' + ctx.job_id));
Event.on('cb.*', (e) => seen.push(e.name + '=' + e.data));
State.set('global', 'cbkey', 1);
Event.emit('cb.one', 1);
const listed = Hook.list();
Hook.unregister(hook);
State.set('global', 'cbkey', 2);
Event.emit('cb.two', 2);
({seen: seen, hooks: listed.length, point: listed[0].hook_point})
"""

PY_CALLBACKS = """
seen = []
def on_state(ctx):
    seen.append(ctx['hook_point'] + ':' + ctx['data']['key'] + ':' + ctx['job_id'])
hook = Hook.register('state.changed', on_state)
Event.on('cb.*', lambda e: seen.append(e['name'] + '=' + str(e['data'])))
State.set('global', 'cbkey', 1)
Event.emit('cb.one', 1)
listed = Hook.list()
Hook.unregister(hook)
State.set('global', 'cbkey', 2)
Event.emit('cb.two', 2)
{'seen': seen, 'hooks': len(listed), 'point': listed[0]['hook_point']}
"""


@pytest.mark.parametrize("language", ["javascript", "python"])
def test_js_and_python_callbacks_behave_like_luas(client: ScriptpoolClient, language: str) -> None:
    job = run_js(client, JS_CALLBACKS) if language == "javascript" else run_py(client, PY_CALLBACKS)
    result = result_of(job)
    assert isinstance(result, dict), job.result.message
    assert result["seen"] == [f"state.changed:cbkey:{job.id}", "cb.one=1", "cb.two=2"]
    assert (result["hooks"], result["point"]) == (1, "state.changed")


def test_clients_register_hooks_and_poll_their_firings(stack: Stack, client: ScriptpoolClient) -> None:
    hooks = events_pb2_grpc.HookServiceStub(client.channel)
    md = client._metadata
    state_hook = hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), metadata=md)
    session_hook = hooks.Register(events_pb2.RegisterHookRequest(hook_point="session.completed"), metadata=md)
    listed = hooks.List(common_pb2.Empty(), metadata=md)
    assert {(h.hook_id, h.hook_point) for h in listed.hooks} == {
        (state_hook.hook_id, "state.changed"), (session_hook.hook_id, "session.completed")
    }  # fmt: skip
    job = run_lua(client, "State.set('global', 'hooked', 1) Session.complete(Session.getCurrent()) return 1")
    firings = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=5), metadata=md).firings
    by_hook = {f.hook_id: f.context for f in firings}
    assert by_hook[state_hook.hook_id].hook_point == "state.changed"
    assert by_hook[state_hook.hook_id].job_id == job.id
    done = by_hook[session_hook.hook_id]
    assert (done.session_id, done.old_state, done.new_state) == (job.session_id, "active", "completed")
    empty = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0.2), metadata=md)
    assert not empty.firings  # each firing once
    hooks.Unregister(events_pb2.HookRef(hook_id=state_hook.hook_id), metadata=md)
    assert [h.hook_id for h in hooks.List(common_pb2.Empty(), metadata=md).hooks] == [session_hook.hook_id]


def test_hook_registrations_are_the_principals_own_and_checked(stack: Stack, client: ScriptpoolClient) -> None:
    hooks = events_pb2_grpc.HookServiceStub(client.channel)
    mine = hooks.Register(events_pb2.RegisterHookRequest(hook_point="job.finished"), metadata=client._metadata)
    with pytest.raises(grpc.RpcError) as caught:
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="job.*"), metadata=client._metadata)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown hook point" in (
        caught.value.details() or ""
    )
    _, other_key = stack.new_api_key()
    other = (("authorization", f"Bearer {other_key}"),)
    with pytest.raises(grpc.RpcError) as caught:
        hooks.Unregister(events_pb2.HookRef(hook_id=mine.hook_id), metadata=other)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert not hooks.List(common_pb2.Empty(), metadata=other).hooks
    run_lua(client, "return 1")
    assert not hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0.3), metadata=other).firings
    assert hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=5), metadata=client._metadata).firings


def test_a_principal_holds_at_most_max_hooks(stack: Stack) -> None:
    _, key = stack.new_api_key()
    md = (("authorization", f"Bearer {key}"),)
    with ScriptpoolClient(stack.address, key) as owner:
        hooks = events_pb2_grpc.HookServiceStub(owner.channel)
        made = [hooks.Register(events_pb2.RegisterHookRequest(hook_point="job.finished"), metadata=md)
                for _ in range(MAX_HOOKS_PER_PRINCIPAL)]  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            hooks.Register(events_pb2.RegisterHookRequest(hook_point="job.finished"), metadata=md)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {MAX_HOOKS_PER_PRINCIPAL} hooks" in (caught.value.details() or "")
        assert len(hooks.List(common_pb2.Empty(), metadata=md).hooks) == MAX_HOOKS_PER_PRINCIPAL  # nothing half-made
        hooks.Unregister(events_pb2.HookRef(hook_id=made[0].hook_id), metadata=md)
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="job.finished"), metadata=md)  # room again


def test_waits_longer_than_redis_socket_timeout_end_quietly(client: ScriptpoolClient) -> None:
    """redis-py gives up on a socket read after 5 s by default: a single XREAD BLOCK longer than that
    came back as UNAVAILABLE ("cannot reach Redis"). Waits now block in slices of at most a second."""
    sub = _subscribe(client, f"quiet.{time.monotonic_ns()}")
    hooks = events_pb2_grpc.HookServiceStub(client.channel)
    hook = hooks.Register(events_pb2.RegisterHookRequest(hook_point="session.completed"), metadata=client._metadata)
    answers: dict[str, object] = {}

    def poll() -> None:
        answers["poll"] = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=5.6), metadata=client._metadata)

    poller = threading.Thread(target=poll)
    poller.start()
    received = _receive(client, sub, timeout_ms=5600)
    poller.join(timeout=30)
    hooks.Unregister(events_pb2.HookRef(hook_id=hook.hook_id), metadata=client._metadata)
    assert not received.HasField("event")
    polled = answers["poll"]
    assert isinstance(polled, events_pb2.HookFirings) and not polled.firings
