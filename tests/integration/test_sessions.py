"""The Session service and global: state machine, metadata, tags, snapshots, timeline, replay."""

from __future__ import annotations

import datetime
import threading
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import hash_fields
from scriptpool.core.keys import events_key
from scriptpool.core.session_values import session_state_name
from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound
from scriptpool.languages import Language
from scriptpool.sandbox.catalog import HOOK_POINTS
from scriptpool.v1 import common_pb2, jobs_pb2, sandbox_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value_map, to_value_map
from tests.conftest import Stack

from .helpers import outcome, result_of, run_lua

S = sessions_pb2


def call(client: ScriptpoolClient, name: str, request: object) -> object:
    """SessionService's RPC `name` (e.g. "GetMetadata"), through the client's typed method for it."""
    method = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return getattr(client.sessions, method)(request)


def state_of(client: ScriptpoolClient, session_id: str) -> str:
    return session_state_name(client.get_session(session_id).state)


def session_in(client: ScriptpoolClient, state: str) -> str:
    session_id = client.create_session("sm").id
    if state == "suspended":
        call(client, "Suspend", S.SessionRef(session_id=session_id))
    elif state == "completed":
        call(client, "Complete", S.SessionRef(session_id=session_id))
    return session_id


ALLOWED = {
    ("active", "Suspend"): "suspended",
    ("suspended", "Resume"): "active",
    ("active", "Complete"): "completed",
    ("suspended", "Complete"): "completed",
}


@pytest.mark.parametrize("start", ["active", "suspended", "completed"])
@pytest.mark.parametrize("op", ["Suspend", "Resume", "Complete"])
def test_state_machine_allows_exactly_the_documented_transitions(client: ScriptpoolClient, start: str, op: str) -> None:
    session_id = session_in(client, start)
    if (start, op) in ALLOWED:
        answer = call(client, op, S.SessionRef(session_id=session_id))
        assert isinstance(answer, S.Session) and session_state_name(answer.state) == ALLOWED[(start, op)]
    else:
        with pytest.raises(FailedPrecondition) as caught:
            call(client, op, S.SessionRef(session_id=session_id))
        assert start in caught.value.message  # names the current state ...
        assert "needs" in caught.value.message  # ... and the one the transition needs
        assert state_of(client, session_id) == start


def test_concurrent_completes_have_exactly_one_winner(client: ScriptpoolClient) -> None:
    session_id = client.create_session("race").id
    wins: list[bool] = []

    def attempt() -> None:
        try:
            call(client, "Complete", S.SessionRef(session_id=session_id))
            wins.append(True)
        except FailedPrecondition:
            wins.append(False)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_two_jobs_racing_to_resume_one_wins(client: ScriptpoolClient) -> None:
    session_id = session_in(client, "suspended")
    source = f"local ok, e = pcall(Session.resume, '{session_id}') return ok"
    jobs = [client.submit(Language.LUA, source) for _ in range(2)]
    results = sorted(bool(result_of(client.wait(j.id, 60))) for j in jobs)
    assert results == [False, True]
    assert state_of(client, session_id) == "active"


def test_transitions_are_on_the_timeline_and_the_event_stream(client: ScriptpoolClient, stack: Stack) -> None:
    from redis import Redis

    session_id = client.create_session("tl").id
    call(client, "Suspend", S.SessionRef(session_id=session_id))
    call(client, "Resume", S.SessionRef(session_id=session_id))
    timeline = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id))
    assert isinstance(timeline, S.Timeline)
    kinds = [e.type for e in timeline.entries]
    assert kinds == ["session.created", "session.state_changed", "session.state_changed"]
    assert from_value_map(timeline.entries[1].data) == {"old_state": "active", "new_state": "suspended"}
    redis = Redis.from_url(stack.redis_url)
    principal = client.get_session(session_id).principal
    entries = [hash_fields(f) for _, f in redis.xrange(events_key(principal))]  # type: ignore[union-attr]
    events = [f["type"].decode() for f in entries if f.get("session_id") == session_id.encode()]
    redis.close()
    assert events == ["session.created", "session.state_changed", "session.suspended", "session.state_changed",
                      "session.resumed"]  # fmt: skip


def test_lua_session_api_end_to_end(client: ScriptpoolClient) -> None:
    source = """
    local id = Session.create{name = "api", tags = {"a"}, metadata = {keep = 1, drop = 2}}
    local s = Session.get(id)
    s:addTag("b")
    local merged = Session.updateMetadata(id, {drop = null, added = {deep = true}, keep = 3})
    local snap = s:save()
    Session.setTags(id, {"x"})
    s:suspend()
    local loaded = Session.load(id, snap)
    local out = {
      tags_after_add = Session.getTags(id),
      merged = merged,
      snapshot = snap,
      loaded_state = loaded.state,
      loaded_has_b = loaded:hasTag("b"),
      metadata = Session.getMetadata(id),
      can_replay = Session.canReplay(id),
      snake = Session.get_metadata(id).keep,
    }
    s:complete()
    out.final = Session.get(id).state
    local ok, err = pcall(function() s:resume() end)
    out.resume_error = err.code
    return out
    """
    result = result_of(run_lua(client, source))
    assert result == {
        "tags_after_add": ["a", "b"],
        "merged": {"keep": 3, "added": {"deep": True}},
        "snapshot": 1,
        "loaded_state": "active",
        "loaded_has_b": True,
        "metadata": {"keep": 3, "added": {"deep": True}},
        "can_replay": False,
        "snake": 3,
        "final": "completed",
        "resume_error": "FAILED_PRECONDITION",
    }


def test_save_all_and_restore_recent(client: ScriptpoolClient) -> None:
    first = client.create_session("one").id
    second = client.create_session("two").id
    saved = call(client, "SaveAll", common_pb2.Empty())
    assert isinstance(saved, S.SaveAllResponse) and dict(saved.snapshots) == {first: 1, second: 1}
    call(client, "UpdateMetadata", S.UpdateMetadataRequest(session_id=second, updates=to_value_map({"x": 1})))
    call(client, "Suspend", S.SessionRef(session_id=second))
    restored = call(client, "RestoreRecent", S.RestoreRecentRequest(count=1))
    assert isinstance(restored, S.RestoreRecentResponse) and len(restored.session_ids) == 1
    back = client.get_session(restored.session_ids[0])
    assert session_state_name(back.state) == "active" and from_value_map(back.metadata) == {}
    with pytest.raises(InvalidArgument):
        call(client, "RestoreRecent", S.RestoreRecentRequest(count=0))


def test_job_timeline_records_start_calls_and_finish_with_paging(client: ScriptpoolClient) -> None:
    session_id = client.create_session("jobs").id
    job = run_lua(
        client, "Session.getTags(Session.getCurrent()) pcall(Session.get, 'bad') return 1", session_id=session_id
    )
    assert result_of(job) == 1
    entries = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id))
    assert isinstance(entries, S.Timeline)
    summary = [(e.type, e.description) for e in entries.entries]
    assert summary[0][0] == "session.created"
    assert summary[1][0] == "job.started"
    assert ("global_call", "Session.getTags -> OK") in summary
    assert ("global_call", "Session.get -> INVALID_ARGUMENT") in summary
    assert summary[-1] == ("job.finished", f"job {job.id} finished: ok")
    page1 = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id, limit=2))
    assert isinstance(page1, S.Timeline) and len(page1.entries) == 2 and page1.next_after
    page2 = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id, after=page1.next_after, limit=100))
    assert isinstance(page2, S.Timeline)
    assert [e.id for e in [*page1.entries, *page2.entries]] == [e.id for e in entries.entries]
    only = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id, types=["job.finished"]))
    assert isinstance(only, S.Timeline) and [e.type for e in only.entries] == ["job.finished"]


def test_get_and_set_current_are_coordinator_calls_on_the_timeline(client: ScriptpoolClient) -> None:
    """Every global operation is a gRPC call: the current session is kept by the coordinator (per job)
    and both operations are recorded, with setCurrent's refusal of a stranger session too."""
    home = client.create_session("home").id
    other = client.create_session("other").id
    source = (
        f"local before = Session.getCurrent() Session.setCurrent('{other}') local after = Session.getCurrent() "
        "local ok, e = pcall(Session.setCurrent, '00000000-0000-4000-8000-000000000000') "
        "local still = Session.getCurrent() Session.setCurrent(nil) local none = Session.getCurrent() "
        "return {before, after, e.code, still, none == nil}"
    )
    job = run_lua(client, source, session_id=home)
    assert result_of(job) == [home, other, "NOT_FOUND", other, True]
    assert _recorded_calls(client, home) == [
        "Session.getCurrent -> OK",
        "Session.setCurrent -> OK",
        "Session.getCurrent -> OK",
        "Session.setCurrent -> NOT_FOUND",
        "Session.getCurrent -> OK",
        "Session.setCurrent -> OK",
        "Session.getCurrent -> OK",
    ]
    # the next job of the session starts from its own session again
    assert result_of(run_lua(client, "return Session.getCurrent()", session_id=home)) == home


def _recorded_calls(client: ScriptpoolClient, session_id: str) -> list[str]:
    """The descriptions of the session's `global_call` timeline entries, oldest first."""
    entries = call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id, types=["global_call"]))
    assert isinstance(entries, S.Timeline)
    return [e.description for e in entries.entries]


def _wait_replay(client: ScriptpoolClient, replay_id: str) -> dict[str, PlainValue]:
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        metadata = from_value_map(client.get_session(replay_id).metadata)
        if metadata.get("status") != "running":
            return metadata
        time.sleep(0.1)
    raise AssertionError("replay did not finish")


def test_replay_reruns_jobs_in_a_new_session_and_reports_divergence(client: ScriptpoolClient) -> None:
    session_id = client.create_session("to replay").id
    assert outcome(run_lua(client, "return 1 + 1", session_id=session_id)).value == "ok"
    assert outcome(run_lua(client, "return Session.getCurrent()", session_id=session_id)).value == "ok"
    assert result_of(run_lua(client, f"return Session.canReplay('{session_id}')")) is True
    replay_id = result_of(run_lua(client, f"return Session.replay('{session_id}', {{speed = 0}})"))
    assert isinstance(replay_id, str)
    summary = _wait_replay(client, replay_id)
    assert summary["status"] == "finished"
    assert summary["jobs_replayed"] == 2 and summary["matched"] == 1 and summary["diverged"] == 1
    divergence = summary["first_divergence"]
    assert isinstance(divergence, dict) and divergence["job_index"] == 2
    replay = client.get_session(replay_id)
    assert replay.parent_session_id == session_id and "replay" in replay.tags
    meta = call(client, "GetReplayMetadata", S.SessionRef(session_id=session_id))
    assert isinstance(meta, S.ReplayMetadata) and list(meta.replays) == [replay_id] and meta.job_count == 2
    # the original is untouched
    assert state_of(client, session_id) == "active"


def test_delete_removes_the_session_and_its_timeline(client: ScriptpoolClient) -> None:
    session_id = client.create_session("gone").id
    run_lua(client, "return 1", session_id=session_id)
    call(client, "Delete", S.SessionRef(session_id=session_id))
    with pytest.raises(NotFound):
        client.get_session(session_id)
    with pytest.raises(NotFound):
        call(client, "GetTimeline", S.GetTimelineRequest(session_id=session_id))


@pytest.mark.parametrize(
    ("name", "request_factory", "expected"),
    [
        ("Get", lambda: S.SessionRef(session_id="../etc"), InvalidArgument),
        ("Get", lambda: S.SessionRef(session_id="7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f"), NotFound),
        ("Create", lambda: S.CreateSessionRequest(name="x" * 256), InvalidArgument),
        ("Create", lambda: S.CreateSessionRequest(tags=["y" * 65]), InvalidArgument),
        ("Create", lambda: S.CreateSessionRequest(metadata=to_value_map({"a": {"b": {"c": {"d": {"e": {"f": {
            "g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": {"p": {"q": 1}}}}}}}}}}}}}}}}})), InvalidArgument),
        ("Create", lambda: S.CreateSessionRequest(metadata=to_value_map({"big": "x" * 70_000})), InvalidArgument),
        ("List", lambda: S.ListSessionsRequest(page=common_pb2.PageRequest(limit=5000)), InvalidArgument),
        ("List", lambda: S.ListSessionsRequest(page=common_pb2.PageRequest(cursor="abc")), InvalidArgument),
        ("List", lambda: S.ListSessionsRequest(created_after=common_pb2.Value(string_value="today")), InvalidArgument),
        ("RestoreRecent", lambda: S.RestoreRecentRequest(count=10_000), InvalidArgument),
    ],
)  # fmt: skip
def test_bad_session_input_is_refused_and_changes_nothing(
    client: ScriptpoolClient, name: str, request_factory: object, expected: type[Exception]
) -> None:
    before = len(client.list_sessions().sessions)
    assert callable(request_factory)
    with pytest.raises(expected):
        call(client, name, request_factory())
    assert len(client.list_sessions().sessions) == before


def test_bad_input_from_lua_names_the_field(client: ScriptpoolClient) -> None:
    source = """
    local a = select(2, pcall(Session.create, {tags = {1, 2}}))
    local b = select(2, pcall(Session.create, {nme = "typo"}))
    local c = select(2, pcall(Session.setTags, Session.getCurrent(), "notalist"))
    return {a.message, b.message, c.code}
    """
    assert result_of(run_lua(client, source)) == [
        "Session.create: tags must be a list of strings",
        "Session.create: unknown option 'nme'; allowed: name, description, tags, metadata, parent_session_id",
        "INVALID_ARGUMENT",
    ]


def test_list_filters_and_pages(client: ScriptpoolClient) -> None:
    ids = [client.create_session(f"p{i}", tags=["page"] + (["odd"] if i % 2 else [])).id for i in range(5)]
    page = client.list_sessions(S.ListSessionsRequest(tags=["page"], page=common_pb2.PageRequest(limit=2)))
    assert [s.id for s in page.sessions] == ids[::-1][:2] and page.next_cursor == "2"
    odd = client.list_sessions(S.ListSessionsRequest(tags=["page", "odd"]))
    assert sorted(s.id for s in odd.sessions) == sorted([ids[1], ids[3]])
    now = time.time()
    future = client.list_sessions(S.ListSessionsRequest(created_after=common_pb2.Value(float_value=now + 60)))
    assert list(future.sessions) == []
    rfc = client.list_sessions(
        S.ListSessionsRequest(created_after=common_pb2.Value(string_value="2000-01-01T00:00:00Z"))
    )
    assert len(rfc.sessions) >= 5


def test_sessions_survive_a_coordinator_restart(stack: Stack, principal_and_key: tuple[str, str]) -> None:
    with ScriptpoolClient(stack.address, principal_and_key[1]) as client:
        session_id = client.create_session("durable", metadata={"n": 1}).id
    second = start_coordinator(Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue="unused"))
    try:
        with ScriptpoolClient(f"127.0.0.1:{second.port}", principal_and_key[1]) as other:
            assert from_value_map(other.get_session(session_id).metadata) == {"n": 1}
    finally:
        second.stop(grace=0)


def test_sessions_survive_a_redis_restart_with_aof(tmp_path: object) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "redis"
    with PrivateRedis(data, persistent=True) as server:
        running = start_coordinator(Settings(redis_url=server.url, listen="127.0.0.1:0"))
        key = running.auth.create_api_key("aof")
        with ScriptpoolClient(f"127.0.0.1:{running.port}", key) as client:
            session_id = client.create_session("aof", tags=["t"]).id
        running.stop(grace=0)
    with PrivateRedis(data, persistent=True) as server:
        running = start_coordinator(Settings(redis_url=server.url, listen="127.0.0.1:0"))
        try:
            with ScriptpoolClient(f"127.0.0.1:{running.port}", key) as client:
                assert client.get_session(session_id).tags == ["t"]
        finally:
            running.stop(grace=0)


metadata_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=10), metadata_values, max_size=5))
def test_metadata_round_trips_through_grpc(client: ScriptpoolClient, metadata: dict[str, PlainValue]) -> None:
    session = client.create_session("hyp", metadata=metadata)
    assert from_value_map(client.get_session(session.id).metadata) == metadata


def test_metadata_round_trips_through_lua(client: ScriptpoolClient) -> None:
    metadata: dict[str, PlainValue] = {
        "big": 2**53,
        "neg": -(2**62),
        "f": 0.1,
        "uni": "ünï©ødé ✓",
        "list": [1, "2", [3.5]],
        "map": {"k": None},
    }
    session = client.create_session("lua-md", metadata=metadata)
    got = result_of(run_lua(client, f"return Session.getMetadata('{session.id}')"))
    assert got == {k: v for k, v in metadata.items() if k != "map"} | {"map": {}}  # a nil value is absence in Lua


def test_unauthenticated_session_rpc(stack: Stack) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            sessions_pb2.DESCRIPTOR  # noqa: B018 - keep the import used
            from scriptpool.v1 import sessions_pb2_grpc

            sessions_pb2_grpc.SessionServiceStub(channel).Suspend(S.SessionRef(session_id="x"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("language", [Language.LUA, Language.JAVASCRIPT, Language.PYTHON])
def test_replay_callbacks_run_in_the_calling_script(client: ScriptpoolClient, language: Language) -> None:
    session_id = client.create_session("callbacks").id
    for _ in range(2):
        assert outcome(run_lua(client, "return 1", session_id=session_id)).value == "ok"
    source = {
        Language.LUA: f"""
            local progress, hooks = {{}}, {{}}
            local id = Session.replay('{session_id}', {{speed = 0,
                on_progress = function(p) progress[#progress + 1] = p end,
                on_hook = function(h) hooks[#hooks + 1] = h.hook_point end}})
            return {{progress = progress, hooks = hooks, id = id}}""",
        Language.JAVASCRIPT: f"""
            const progress = [], hooks = [];
            const id = Session.replay('{session_id}', {{speed: 0, on_progress: (p) => progress.push(p),
                                                       on_hook: (h) => hooks.push(h.hook_point)}});
            ({{progress, hooks, id}})""",
        Language.PYTHON: f"""
progress, hooks = [], []
rid = Session.replay('{session_id}', {{'speed': 0, 'on_progress': progress.append,
                                     'on_hook': lambda h: hooks.append(h['hook_point'])}})
{{'progress': progress, 'hooks': hooks, 'id': rid}}""",
    }[language]
    result = result_of(client.run(language, source, timeout=60))
    assert isinstance(result, dict)
    assert result["progress"] == [0.5, 1.0]
    hooks = result["hooks"]
    assert isinstance(hooks, list) and hooks.count("job.finished") == 2 and "session.created" in hooks
    assert set(hooks) <= set(HOOK_POINTS), "on_hook reports hook points only (no call records, no replay.*)"
    assert client.get_session(str(result["id"])).parent_session_id == session_id


RANDOM_SOURCES = {
    Language.LUA: "return math.random()",
    Language.JAVASCRIPT: "Math.random()",
    Language.PYTHON: "import random\nrandom.random()",
}


@pytest.mark.parametrize("language", list(RANDOM_SOURCES))
def test_replay_feeds_the_recorded_random_seed_back(client: ScriptpoolClient, language: Language) -> None:
    session_id = client.create_session("random").id
    first = result_of(client.run(language, RANDOM_SOURCES[language], session_id=session_id))
    second = result_of(client.run(language, RANDOM_SOURCES[language], session_id=session_id))
    assert isinstance(first, float) and first != second  # each job gets its own seed
    replay_id = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0)).replay_session_id
    summary = _wait_replay(client, replay_id)
    assert (summary["status"], summary["matched"], summary["diverged"]) == ("finished", 2, 0)


CLOCK_SOURCES = {
    Language.LUA: "return os.date('!%Y-%m-%d %H', os.time())",
    Language.JAVASCRIPT: "new Date().toISOString().slice(0, 13)",
    Language.PYTHON: "import datetime\ndatetime.datetime.utcnow().strftime('%Y-%m-%d %H')",
}


@pytest.mark.parametrize("language", list(CLOCK_SOURCES))
def test_a_replay_of_a_job_recorded_without_clock_reads_starts_its_clock_at_the_recorded_start(
    client: ScriptpoolClient, language: Language, redis_client: Redis
) -> None:
    session_id = client.create_session("clock").id
    job = client.run(language, CLOCK_SOURCES[language], session_id=session_id)
    assert result_of(job)
    # a record from before clock reads were kept, started a day earlier: the replayed script's clock
    # must start that day, not today
    record = f"sp:job:{job.id}"
    raw = redis_client.hget(record, "result")
    assert isinstance(raw, bytes)
    recorded = jobs_pb2.JobResult.FromString(raw)
    assert len(recorded.clock_reads) >= 1
    recorded.ClearField("clock_reads")
    redis_client.hset(
        record, mapping={"result": recorded.SerializeToString(), "started_at": repr(job.started_at - 86400)}
    )
    expected = result_of(client.run(language, CLOCK_SOURCES[language]))  # today, this hour
    replay_id = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0)).replay_session_id
    summary = _wait_replay(client, replay_id)
    assert summary["status"] == "finished" and summary["diverged"] == 1  # the recorded result was "today"
    divergence = summary["first_divergence"]
    assert isinstance(divergence, dict) and divergence["differs_in"] == "result"
    assert divergence["recorded_result"] == result_of(job)
    replayed = divergence["replayed_result"]
    assert isinstance(replayed, str) and isinstance(expected, str) and replayed != expected
    day_before = datetime.datetime.fromtimestamp(job.started_at - 86400, datetime.UTC)
    assert replayed.startswith(day_before.strftime("%Y-%m-%d"))


CLOCK_AND_RANDOM_SOURCES = {
    Language.LUA: (
        "local t0, c0 = os.time(), os.clock() local x = 0 for i = 1, 20000 do x = x + i end "
        "return {t0, c0, os.clock() - c0, os.date('%c'), math.random(), os.time() - t0}"
    ),
    Language.JAVASCRIPT: (
        "const t0 = Date.now(); let x = 0; for (let i = 0; i < 20000; i++) x += i;"
        "[t0, Date.now() - t0, new Date().toISOString(), String(Date()), Math.random()]"
    ),
    Language.PYTHON: (
        "import time, datetime, random\nt0 = time.time()\nm0 = time.monotonic()\nx = sum(range(20000))\n"
        "[t0, time.time() - t0, time.monotonic() - m0, time.perf_counter(), time.time_ns(), "
        "datetime.datetime.now().isoformat(), random.random()]"
    ),
}


@pytest.mark.parametrize("language", list(CLOCK_AND_RANDOM_SOURCES))
def test_a_script_that_reads_only_clocks_and_random_numbers_replays_as_matched(
    client: ScriptpoolClient, language: Language
) -> None:
    session_id = client.create_session("deterministic").id
    first = result_of(client.run(language, CLOCK_AND_RANDOM_SOURCES[language], session_id=session_id))
    second = result_of(client.run(language, CLOCK_AND_RANDOM_SOURCES[language], session_id=session_id))
    assert first != second  # real clocks, and each job its own seed
    for _ in range(2):  # every time
        replay_id = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0)).replay_session_id
        summary = _wait_replay(client, replay_id)
        assert (summary["status"], summary["matched"], summary["diverged"]) == ("finished", 2, 0), summary


def test_first_divergence_says_what_differed(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("diverging").id
    small = client.run(Language.LUA, "return 'recorded'", session_id=session_id)
    large = client.run(Language.LUA, "return string.rep('x', 1000)", session_id=session_id)
    failing = client.run(Language.LUA, "return 1", session_id=session_id)
    edits = {small.id: "return 'replayed'", large.id: "return string.rep('y', 1000)", failing.id: "error('no')"}
    for job_id, source in edits.items():  # the replays run other scripts than the recorded ones
        raw = redis_client.hget(f"sp:job:{job_id}", "spec")
        assert isinstance(raw, bytes)
        spec = sandbox_pb2.ChildJob.FromString(raw)
        spec.source = source
        redis_client.hset(f"sp:job:{job_id}", "spec", spec.SerializeToString())
    replay_id = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0)).replay_session_id
    summary = _wait_replay(client, replay_id)
    assert (summary["matched"], summary["diverged"]) == (0, 3)
    first = summary["first_divergence"]
    assert isinstance(first, dict)
    assert first == {
        "job_index": 1,
        "replayed_job_id": first["replayed_job_id"],
        "differs_in": "result",
        "recorded_outcome": "OUTCOME_OK",
        "replayed_outcome": "OUTCOME_OK",
        "recorded_result": "recorded",
        "replayed_result": "replayed",
    }
    entries = call(client, "GetTimeline", S.GetTimelineRequest(session_id=replay_id, types=["replay.progress"]))
    assert isinstance(entries, S.Timeline) and len(entries.entries) == 3


def test_a_job_reading_a_session_is_one_round_trip_with_its_record(stack: Stack, client: ScriptpoolClient) -> None:
    """Session.get/getMetadata/getTags from a job: read, owner check and timeline record in one EVALSHA;
    a stranger's session is NOT_FOUND on the timeline too, and nothing of it comes back."""
    _, other_key = stack.new_api_key()
    with ScriptpoolClient(stack.address, other_key) as other:
        foreign = other.create_session("foreign", metadata={"secret": "s3cr3t"}).id
    home = client.create_session("home", tags=["t"], metadata={"k": 1}).id
    source = (
        f"local s = Session.get('{home}') local m = Session.getMetadata('{home}') local t = Session.getTags('{home}') "
        f"local ok, e = pcall(Session.get, '{foreign}') return {{s.name, m.k, t[1], e.code, e.message}}"
    )
    answer = result_of(run_lua(client, source, session_id=home))
    assert isinstance(answer, list) and answer[:4] == ["home", 1, "t", "NOT_FOUND"]
    assert "s3cr3t" not in str(answer)
    assert _recorded_calls(client, home) == [
        "Session.get -> OK",
        "Session.getMetadata -> OK",
        "Session.getTags -> OK",
        "Session.get -> NOT_FOUND",
    ]


def test_session_get_sends_one_command(
    client: ScriptpoolClient, principal_and_key: tuple[str, str], redis_client: Redis
) -> None:
    from unittest.mock import patch

    from scriptpool.coordinator.auth import Caller
    from scriptpool.coordinator.stores.sessions import SessionStore
    from scriptpool.coordinator.stores.timeline import CallRecord
    from scriptpool.core import lean_redis

    home = client.create_session("one trip").id
    principal = principal_and_key[0]
    lean = lean_redis.LeanPool(redis_client)
    store = SessionStore(redis_client, 1000, lean=lean)
    caller = Caller(principal=principal, job_id="job-one-trip", session_id=home)
    try:
        store.get_recorded(caller, home, CallRecord("Session.get", caller.job_id, home))  # loads the script
        sent: list[object] = []
        pack = lean_redis.pack_command

        def counting(*args: lean_redis.Arg) -> bytes:
            sent.append(args[0])
            return pack(*args)

        with patch.object(lean_redis, "pack_command", counting):
            session = store.get_recorded(caller, home, CallRecord("Session.get", caller.job_id, home))
        assert sent == ["EVALSHA"] and session.name == "one trip"
    finally:
        lean.close()


def test_calls_the_worker_refuses_are_on_the_timeline_too(client: ScriptpoolClient) -> None:
    """Refused before reaching the coordinator (bad arguments): the script gets its error and the
    session's timeline still records the call with that outcome."""
    home = client.create_session("refusals").id
    source = """
        local a = {pcall(Session.get, 123)}
        local b = {pcall(Event.receive, 'some-subscription', -1)}
        return {a[2].code, b[2].code}
    """
    assert result_of(run_lua(client, source, session_id=home)) == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]
    assert _recorded_calls(client, home) == ["Session.get -> INVALID_ARGUMENT", "Event.receive -> INVALID_ARGUMENT"]


@pytest.mark.parametrize(
    ("language", "source"),
    [
        (
            Language.LUA,
            "local e = Session.getTimeline(INPUT.sid, {types = {INPUT.point}})\n"
            "return {#e, e[1] and e[1].data.new_state}",
        ),
        (
            Language.JAVASCRIPT,
            "const e = Session.getTimeline(INPUT.sid, {types: [INPUT.point]}); [e.length, e[0] && e[0].data.new_state]",
        ),
        (
            Language.PYTHON,
            "e = Session.getTimeline(INPUT['sid'], {'types': [INPUT['point']]})\n"
            "[len(e), e[0]['data']['new_state'] if e else None]",
        ),
    ],
)
def test_each_lifecycle_transition_is_found_by_its_hook_point_name(
    client: ScriptpoolClient, language: Language, source: str
) -> None:
    session_id = client.create_session("transitions").id
    for op in ("Suspend", "Resume", "Suspend", "Resume", "Complete"):
        call(client, op, S.SessionRef(session_id=session_id))
    found = {
        point: result_of(client.run(language, source, inputs={"sid": session_id, "point": point}))
        for point in ("session.suspended", "session.resumed", "session.completed", "session.state_changed")
    }
    assert found == {
        "session.suspended": [2, "suspended"],
        "session.resumed": [2, "active"],
        "session.completed": [1, "completed"],
        "session.state_changed": [5, "suspended"],
    }
