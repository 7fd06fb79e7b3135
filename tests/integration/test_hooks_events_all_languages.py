"""Issue 16's Hook and Event API in Lua, JavaScript and Python on the real stack: hook handles,
priorities, rs-llmspell's points as custom points, Hook.list's filters and fields, the hook
context, Event.listSubscriptions/getStats, event_type and ISO timestamps, false for unknown ids,
and the lifecycle namespaces no script or client may emit into."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import grpc
import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.v1 import events_pb2, events_pb2_grpc, jobs_pb2
from scriptpool.values import to_value

from .helpers import outcome, result_of

LANGUAGES = [Language.LUA, Language.JAVASCRIPT, Language.PYTHON]

HOOKS = {
    Language.LUA: """
local order, contexts, hs = {}, {}, {}
for _, level in ipairs({'low', 'highest', 'normal', 'lowest', 'high'}) do
  hs[level] = Hook.register('BeforeToolExecution', function(ctx) order[#order + 1] = level end, level)
end
local int = Hook.register('BeforeToolExecution', function(ctx) order[#order + 1] = 'int' end, -50)
Hook.register('AfterToolExecution', function(ctx) contexts[#contexts + 1] = ctx end)
Event.publish('BeforeToolExecution', {tool = 'calc'})
Event.publish('AfterToolExecution', {tool = 'calc', ok = true})
State.get('global', 'flush')
local listed = Hook.list()
local r = {order = order, ctx = contexts[1], listed = listed, point = int:hook_point(),
  by_point = #Hook.list('BeforeToolExecution'), high = #Hook.list({priority = 'high'}),
  lua = #Hook.list({language = 'lua'}), none = #Hook.list({language = 'python'}),
  by_int = #Hook.list({priority = -50}), same_id = int:id() == int.hook_id and tostring(int) == int.hook_id}
r.first = hs.highest:unregister()
r.second = hs.highest:unregister()
r.again = Hook.unregister(hs.highest)
r.by_id = Hook.unregister(hs.low:id())
r.unknown = Hook.unregister('00000000-0000-4000-8000-000000000000')
r.not_a_handle = Hook.unregister({})
r.raised = not pcall(function() return hs.highest:id() end)
r.remaining = #Hook.list()
order = {}
Event.publish('BeforeToolExecution', {})
State.get('global', 'flush')
r.after = order
return r
""",
    Language.JAVASCRIPT: """
let order = [];
const contexts = [], hs = {};
for (const level of ['low', 'highest', 'normal', 'lowest', 'high']) {
  hs[level] = Hook.register('BeforeToolExecution', (ctx) => { order.push(level); }, level);
}
const int = Hook.register('BeforeToolExecution', (ctx) => { order.push('int'); }, -50);
Hook.register('AfterToolExecution', (ctx) => { contexts.push(ctx); });
Event.publish('BeforeToolExecution', {tool: 'calc'});
Event.publish('AfterToolExecution', {tool: 'calc', ok: true});
State.get('global', 'flush');
const r = {order: order, ctx: contexts[0], listed: Hook.list(), point: int.hook_point(),
  by_point: Hook.list('BeforeToolExecution').length, high: Hook.list({priority: 'high'}).length,
  lua: Hook.list({language: 'javascript'}).length, none: Hook.list({language: 'python'}).length,
  by_int: Hook.list({priority: -50}).length, same_id: int.id() === int.hook_id && String(int) === int.hook_id};
r.first = hs.highest.unregister();
r.second = hs.highest.unregister();
r.again = Hook.unregister(hs.highest);
r.by_id = Hook.unregister(hs.low.id());
r.unknown = Hook.unregister('00000000-0000-4000-8000-000000000000');
r.not_a_handle = Hook.unregister({});
try { hs.highest.id(); r.raised = false; } catch (e) { r.raised = true; }
r.remaining = Hook.list().length;
order = [];
Event.publish('BeforeToolExecution', {});
State.get('global', 'flush');
r.after = order;
r
""",
    Language.PYTHON: """
order, contexts, hs = [], [], {}
for level in ['low', 'highest', 'normal', 'lowest', 'high']:
    hs[level] = Hook.register('BeforeToolExecution', lambda ctx, level=level: order.append(level), level)
int_hook = Hook.register('BeforeToolExecution', lambda ctx: order.append('int'), -50)
Hook.register('AfterToolExecution', contexts.append)
Event.publish('BeforeToolExecution', {'tool': 'calc'})
Event.publish('AfterToolExecution', {'tool': 'calc', 'ok': True})
State.get('global', 'flush')
r = {'order': list(order), 'ctx': contexts[0], 'listed': Hook.list(), 'point': int_hook.hook_point(),
     'by_point': len(Hook.list('BeforeToolExecution')), 'high': len(Hook.list({'priority': 'high'})),
     'lua': len(Hook.list({'language': 'python'})), 'none': len(Hook.list({'language': 'lua'})),
     'by_int': len(Hook.list({'priority': -50})), 'same_id': int_hook.id() == int_hook.hook_id == str(int_hook)}
r['first'] = hs['highest'].unregister()
r['second'] = hs['highest'].unregister()
r['again'] = Hook.unregister(hs['highest'])
r['by_id'] = Hook.unregister(hs['low'].id())
r['unknown'] = Hook.unregister('00000000-0000-4000-8000-000000000000')
r['not_a_handle'] = Hook.unregister({})
try:
    hs['highest'].id()
    r['raised'] = False
except Exception:
    r['raised'] = True
r['remaining'] = len(Hook.list())
del order[:]
Event.publish('BeforeToolExecution', {})
State.get('global', 'flush')
r['after'] = list(order)
r
""",
}


def _is_iso(text: object) -> bool:
    return isinstance(text, str) and datetime.datetime.fromisoformat(text).tzinfo is not None


@pytest.mark.parametrize("language", LANGUAGES)
def test_hook_handles_priorities_custom_points_and_list(client: ScriptpoolClient, language: Language) -> None:
    job = client.run(language, HOOKS[language], timeout=60)
    r: Any = result_of(job)
    assert isinstance(r, dict), job.result.message
    assert r["order"] == ["highest", "high", "int", "normal", "low", "lowest"]  # lower runs first, ints between
    listed = r["listed"]
    assert isinstance(listed, list) and len(listed) == 7
    assert [h["priority"] for h in listed] == ["highest", "high", "-50", "normal", "normal", "low", "lowest"]
    assert [h["hook_point"] for h in listed][3:5] == ["BeforeToolExecution", "AfterToolExecution"]  # same: in order
    lang = language.value
    for h in listed:
        assert h["language"] == lang and h["name"] == f"{lang}_{h['hook_id']}"
    assert r["point"] == "BeforeToolExecution" and r["same_id"] is True
    assert (r["by_point"], r["high"], r["lua"], r["none"], r["by_int"]) == (6, 1, 7, 0, 1)
    assert (r["first"], r["second"], r["again"], r["by_id"]) == (True, False, False, True)
    assert (r["unknown"], r["not_a_handle"], r["raised"], r["remaining"]) == (False, False, True, 5)
    assert r["after"] == ["high", "int", "normal", "lowest"]  # unregistered hooks no longer run
    ctx = r["ctx"]
    assert isinstance(ctx, dict)
    assert ctx["point"] == ctx["hook_point"] == "AfterToolExecution"
    assert ctx["data"] == {"tool": "calc", "ok": True} and ctx["language"] == lang
    assert ctx["job_id"] == job.id and ctx["session_id"] == job.session_id
    assert isinstance(ctx["correlation_id"], str) and ctx["correlation_id"]
    assert isinstance(ctx["metadata"], dict) and ctx["metadata"]["job_id"] == job.id
    assert ctx["component_id"] == {"type": "Tool", "name": job.id}
    assert _is_iso(ctx["timestamp"]) and isinstance(ctx["timestamp_unix"], float)
    assert datetime.datetime.fromisoformat(str(ctx["timestamp"])).timestamp() == pytest.approx(ctx["timestamp_unix"])


BAD_PRIORITY = {
    Language.LUA: "local ok, e = pcall(Hook.register, 'BeforeAgentInit', function() end, 'urgent')\n"
                  "return e.code .. ' ' .. e.message",
    Language.JAVASCRIPT: "let m; try { Hook.register('BeforeAgentInit', () => 0, 'urgent'); }\n"
                         "catch (e) { m = e.code + ' ' + e.message; } m",
    Language.PYTHON: "try:\n    Hook.register('BeforeAgentInit', print, 'urgent')\n"
                     "except Exception as e:\n    m = str(e)\nm",
}  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_invalid_priority_is_invalid_argument(client: ScriptpoolClient, language: Language) -> None:
    message = result_of(client.run(language, BAD_PRIORITY[language], timeout=60))
    assert isinstance(message, str) and message.startswith("INVALID_ARGUMENT")
    assert "priority must be one of highest, high, normal, low, lowest or an integer" in message
    assert "'urgent'" in message


EVENTS = {
    Language.LUA: """
local base = #Event.list_subscriptions()
local a, b = Event.subscribe('ev.*'), Event.subscribe('*.error')
local listed = Event.listSubscriptions()
Event.publish('ev.one', {n = 1})
Event.emit('app.error', {n = 2})
local e = Event.receive(a, 2000)
local f = Event.receive(b, 2000)
local stats = Event.get_stats()
local r = {base = base, listed = listed, e = e, f_type = f.event_type, stats = stats,
  first = Event.unsubscribe(a), second = Event.unsubscribe(a), unknown = Event.unsubscribe('nope'),
  unknown_uuid = Event.unsubscribe('00000000-0000-4000-8000-000000000000')}
r.after = Event.getStats().bridge_stats.active_subscriptions
return r
""",
    Language.JAVASCRIPT: """
const base = Event.list_subscriptions().length;
const a = Event.subscribe('ev.*'), b = Event.subscribe('*.error');
const listed = Event.listSubscriptions();
Event.publish('ev.one', {n: 1});
Event.emit('app.error', {n: 2});
const e = Event.receive(a, 2000);
const f = Event.receive(b, 2000);
const stats = Event.get_stats();
const r = {base, listed, e, f_type: f.event_type, stats,
  first: Event.unsubscribe(a), second: Event.unsubscribe(a), unknown: Event.unsubscribe('nope'),
  unknown_uuid: Event.unsubscribe('00000000-0000-4000-8000-000000000000')};
r.after = Event.getStats().bridge_stats.active_subscriptions;
r
""",
    Language.PYTHON: """
base = len(Event.list_subscriptions())
a, b = Event.subscribe('ev.*'), Event.subscribe('*.error')
listed = Event.listSubscriptions()
Event.publish('ev.one', {'n': 1})
Event.emit('app.error', {'n': 2})
e = Event.receive(a, 2000)
f = Event.receive(b, 2000)
stats = Event.get_stats()
r = {'base': base, 'listed': listed, 'e': e, 'f_type': f['event_type'], 'stats': stats,
     'first': Event.unsubscribe(a), 'second': Event.unsubscribe(a), 'unknown': Event.unsubscribe('nope'),
     'unknown_uuid': Event.unsubscribe('00000000-0000-4000-8000-000000000000')}
r['after'] = Event.getStats()['bridge_stats']['active_subscriptions']
r
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_event_subscriptions_stats_event_type_and_false_for_unknown_ids(
    client: ScriptpoolClient, language: Language
) -> None:
    job = client.run(language, EVENTS[language], timeout=60)
    r: Any = result_of(job)
    assert isinstance(r, dict), job.result.message
    lang = language.value
    assert r["base"] == 0
    assert sorted((s["pattern"], s["language"]) for s in r["listed"]) == [("*.error", lang), ("ev.*", lang)]
    e = r["e"]
    assert e["name"] == e["event_type"] == "ev.one" and e["data"] == {"n": 1} and e["job_id"] == job.id
    assert _is_iso(e["timestamp"]) and isinstance(e["timestamp_unix"], float)
    assert r["f_type"] == "app.error"
    assert r["stats"] == {
        "event_bus_stats": {"events_processed": 4, "events_published": 2, "events_received": 2,
                            "rate_limit_violations": 0},
        "bridge_stats": {"active_subscriptions": 2, "active_hooks": 0, "subscriptions_by_language": {lang: 2}},
    }  # fmt: skip
    assert (r["first"], r["second"], r["unknown"], r["unknown_uuid"]) == (True, False, False, False)
    assert r["after"] == 1


RESERVED = {
    Language.LUA: """
local out = {}
for _, name in ipairs({'session.loaded', 'artifact.mine', 'job.done', 'state.changed'}) do
  local ok, e = pcall(Event.publish, name, {})
  out[#out + 1] = ok and 'accepted' or e.code .. ' ' .. e.message
end
return out
""",
    Language.JAVASCRIPT: """
const out = [];
for (const name of ['session.loaded', 'artifact.mine', 'job.done', 'state.changed']) {
  try { Event.emit(name, {}); out.push('accepted'); } catch (e) { out.push(e.code + ' ' + e.message); }
}
out
""",
    Language.PYTHON: """
out = []
for name in ['session.loaded', 'artifact.mine', 'job.done', 'state.changed']:
    try:
        Event.emit(name, {})
        out.append('accepted')
    except Exception as e:
        out.append(str(e))
out
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_scripts_cannot_emit_into_lifecycle_namespaces(client: ScriptpoolClient, language: Language) -> None:
    sub = client.events.subscribe(events_pb2.SubscribeRequest(pattern="*"))
    refused: Any = result_of(client.run(language, RESERVED[language], timeout=60))
    assert isinstance(refused, list) and len(refused) == 4
    for message, namespace in zip(refused, ["session.*", "artifact.*", "job.*", "state.changed"], strict=True):
        assert isinstance(message, str) and message.startswith("INVALID_ARGUMENT")
        assert f"reserved namespace '{namespace}'" in message
    names = []
    while True:  # what the job's run put on the stream: its own lifecycle, none of the refused names
        got = client.events.receive(events_pb2.ReceiveRequest(subscription_id=sub.subscription_id, timeout_ms=0))
        if not got.received:
            break
        names.append(got.event.name)
    assert not {"session.loaded", "artifact.mine", "job.done", "state.changed"} & set(names)


def test_clients_cannot_emit_into_lifecycle_namespaces_but_may_fire_custom_points(client: ScriptpoolClient) -> None:
    with pytest.raises(InvalidArgument, match=r"reserved namespace 'session\.\*'"):
        client.events.emit(events_pb2.EmitEventRequest(name="session.completed", data=to_value({})))
    with pytest.raises(grpc.RpcError) as caught:
        raw = events_pb2_grpc.EventServiceStub(client.channel)
        raw.Emit(events_pb2.EmitEventRequest(name="job.finished"), metadata=client._metadata)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_clients_emit_of_an_rs_point_fires_a_scripts_hook(client: ScriptpoolClient) -> None:
    ready = client.events.subscribe(events_pb2.SubscribeRequest(pattern="conformance.ready"))
    source = """
local seen = {}
Hook.register('BeforeWorkflowStart', function(ctx) seen[#seen + 1] = ctx.data.workflow end)
local go = Event.subscribe('conformance.go')
Event.publish('conformance.ready', {})
local e = Event.receive(go, 20000)  -- the hook's firing is delivered after this call returns
return {go = e ~= nil, seen = seen}
"""
    result: dict[str, jobs_pb2.Job] = {}
    runner = threading.Thread(target=lambda: result.update(job=client.run(Language.LUA, source, timeout=60)))
    runner.start()
    try:
        got = client.events.receive(events_pb2.ReceiveRequest(subscription_id=ready.subscription_id, timeout_ms=20000))
        assert got.received
        client.events.emit(events_pb2.EmitEventRequest(name="BeforeWorkflowStart", data=to_value({"workflow": "w1"})))
        client.events.emit(events_pb2.EmitEventRequest(name="conformance.go"))
    finally:
        runner.join(60)
    job = result["job"]
    assert outcome(job).value == "ok", job.result.message
    assert result_of(job) == {"go": True, "seen": ["w1"]}


def test_a_client_hook_on_an_rs_point_fires_for_a_scripts_emit(client: ScriptpoolClient) -> None:
    hooks = events_pb2_grpc.HookServiceStub(client.channel)
    md = client._metadata
    hook = hooks.Register(events_pb2.RegisterHookRequest(hook_point="AfterAgentExecution"), metadata=md)
    job = client.run(Language.LUA, "Event.publish('AfterAgentExecution', {agent = 'a1'}) return 1", timeout=60)
    assert outcome(job).value == "ok", job.result.message
    firings = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=5), metadata=md).firings
    assert [(f.hook_id, f.context.hook_point, f.context.job_id) for f in firings] == [
        (hook.hook_id, "AfterAgentExecution", job.id)
    ]


HANDLE_AS_ID = {
    Language.LUA: """
local seen = 0
local h = Hook.register('WorkflowCheckpoint', function(ctx) seen = seen + 1 end)
local bad = select(2, pcall(Hook.list, 5))
local ok = Event.unsubscribe(h)
Event.publish('WorkflowCheckpoint', {})
State.get('global', 'flush')
return {ok, seen, #Hook.list(), pcall(h.id, h), bad.message}
""",
    Language.JAVASCRIPT: """
let seen = 0;
const h = Hook.register('WorkflowCheckpoint', (ctx) => { seen += 1; });
let bad; try { Hook.list(5); } catch (e) { bad = e.message; }
const ok = Event.unsubscribe(h);
Event.publish('WorkflowCheckpoint', {});
State.get('global', 'flush');
let live = true; try { h.id(); } catch (e) { live = false; }
[ok, seen, Hook.list().length, live, bad]
""",
    Language.PYTHON: """
seen = []
h = Hook.register('WorkflowCheckpoint', seen.append)
try:
    Hook.list(5)
except Exception as e:
    bad = e.message
ok = Event.unsubscribe(h)
Event.publish('WorkflowCheckpoint', {})
State.get('global', 'flush')
try:
    h.id()
    live = True
except Exception:
    live = False
[ok, len(seen), len(Hook.list()), live, bad]
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_handle_is_accepted_where_its_id_is(client: ScriptpoolClient, language: Language) -> None:
    result: Any = result_of(client.run(language, HANDLE_AS_ID[language], timeout=60))
    assert result[:4] == [True, 0, 0, False]  # unsubscribed through its handle: never fires, gone, dead
    message = str(result[4]).removeprefix("INVALID_ARGUMENT: ")  # (a JS error's message carries its code)
    kind = "an int" if language is Language.PYTHON else "a number"  # each language's own word
    assert message == f"Hook.list: the filter must be a hook point name or a table/object, got {kind}"
