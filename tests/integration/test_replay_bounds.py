"""Session.replay cannot amplify a job's work (docs/adr/0004-bounded-replay.md): one replay per job,
replayed jobs cannot replay, their limits are capped by the replaying job's, a replay re-runs at most
`max_replay_jobs` jobs, a principal runs at most `max_running_replays_per_principal` at once, and no
coordinator thread is held per replay."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import texts
from scriptpool.core.keys import job_key, session_jobs_key
from scriptpool.errors import ResourceExhausted
from scriptpool.languages import Language
from scriptpool.v1 import jobs_pb2, sessions_pb2
from scriptpool.values import from_value_map
from tests.conftest import TEST_QUEUE, Stack

from .helpers import outcome, result_of, run_lua

S = sessions_pb2

# Replays its own current session twice, following each replay to its end (on_progress), and
# returns each attempt's outcome: "ok" or the error code.
SELF_REPLAY = """
local codes = {}
for i = 1, 2 do
  local ok, err = pcall(Session.replay, Session.getCurrent(), {speed = 0, on_progress = function(p) end})
  codes[i] = ok and "ok" or err.code
end
return codes
"""


def _jobs_of(redis: Redis, principal: str) -> list[str]:
    """Every job record of `principal` in Redis, found through its sessions' job indexes."""
    found = []
    for session_id in texts(redis.zrange(f"sp:principal:{principal}:sessions", 0, -1)):
        for job_id in texts(redis.zrange(session_jobs_key(session_id), 0, -1)):
            if redis.hget(job_key(job_id), "principal") == principal.encode():
                found.append(job_id)
    return found


def _replayed_jobs(client: ScriptpoolClient, replay_id: str) -> list[jobs_pb2.Job]:
    listed = client._call(client._jobs.ListJobs, jobs_pb2.ListJobsRequest(session_id=replay_id))
    return sorted(listed.jobs, key=lambda job: job.created_at)


def test_a_self_replaying_script_does_not_amplify(
    client: ScriptpoolClient, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    principal = principal_and_key[0]
    session_id = client.create_session("self replay").id
    assert outcome(run_lua(client, "return 1", session_id=session_id)).value == "ok"
    # B replays [A] and follows it to the end; its second replay is past the one a job may start
    assert result_of(run_lua(client, SELF_REPLAY, session_id=session_id)) == ["ok", "RESOURCE_EXHAUSTED"]
    # C replays [A, B]: the replayed B runs SELF_REPLAY again, and both of its replays are refused
    assert result_of(run_lua(client, SELF_REPLAY, session_id=session_id)) == ["ok", "RESOURCE_EXHAUSTED"]
    replays = list(client.sessions.get_replay_metadata(S.SessionRef(session_id=session_id)).replays)
    assert len(replays) == 2
    replayed_b = _replayed_jobs(client, replays[1])[1]
    assert result_of(replayed_b) == ["PERMISSION_DENIED", "PERMISSION_DENIED"]
    # exactly A, B, C and the replayed A; A, B: six jobs in Redis, every one of them finished
    jobs = _jobs_of(redis_client, principal)
    assert len(jobs) == 6
    assert all(redis_client.hget(job_key(job_id), "status") == b"finished" for job_id in jobs)
    assert redis_client.hget(job_key(replayed_b.id), "replayed") == b"1"


def test_replayed_jobs_get_no_more_than_the_replaying_jobs_limits(client: ScriptpoolClient) -> None:
    session_id = client.create_session("capped").id
    recorded = client.run(Language.LUA, "return 1", session_id=session_id, limits={"cpu_time_ms": 4000})
    assert outcome(recorded).value == "ok" and recorded.limits.cpu_time_ms == 4000
    source = f"return Session.replay('{session_id}', {{speed = 0, on_progress = function(p) end}})"
    replay_id = result_of(client.run(Language.LUA, source, limits={"cpu_time_ms": 1000, "max_global_calls": 50}))
    assert isinstance(replay_id, str)
    (replayed,) = _replayed_jobs(client, replay_id)
    assert replayed.limits.cpu_time_ms == 1000 and replayed.limits.max_global_calls == 50
    # a client's replay keeps the recorded limits
    client_replay = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0)).replay_session_id
    wait_for_replay(client, client_replay)
    assert _replayed_jobs(client, client_replay)[0].limits.cpu_time_ms == 4000


def wait_for_replay(client: ScriptpoolClient, replay_id: str) -> None:
    """Until the replay's status is no longer `running` (it is written once, when the replay ends)."""
    give_up = time.monotonic() + 60
    while from_value_map(client.get_session(replay_id).metadata).get("status") == "running":
        assert time.monotonic() < give_up, "replay did not finish"
        time.sleep(0.05)


def test_replays_hold_no_coordinator_thread_and_are_capped_per_principal(
    client: ScriptpoolClient, stack: Stack
) -> None:
    session_id = client.create_session("slow replay").id
    for _ in range(2):
        assert outcome(run_lua(client, "return 1", session_id=session_id)).value == "ok"
    # the recorded gap times 1000, capped at 60 s: each replay runs its first job, then waits
    limit = stack.settings.max_running_replays_per_principal
    started = [
        client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=1000)).replay_session_id
        for _ in range(limit)
    ]
    assert len(set(started)) == limit
    with pytest.raises(ResourceExhausted, match="already runs 4 replays"):
        client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=1000))
    names = [thread.name for thread in threading.enumerate()]
    assert [name for name in names if name.startswith("replay-")] == []
    assert names.count("replays") == 1
    meta = client.sessions.get_replay_metadata(S.SessionRef(session_id=session_id))
    assert list(meta.replays) == started  # the refused one made no session


def test_a_replay_reruns_at_most_max_replay_jobs(stack: Stack, principal_and_key: tuple[str, str]) -> None:
    second = start_coordinator(
        Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_replay_jobs=2)
    )
    try:
        with ScriptpoolClient(f"127.0.0.1:{second.port}", principal_and_key[1]) as client:
            session_id = client.create_session("two jobs").id
            for _ in range(2):
                assert outcome(client.run(Language.LUA, "return 1", session_id=session_id)).value == "ok"
            at_bound = client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0))
            wait_for_replay(client, at_bound.replay_session_id)
            assert len(_replayed_jobs(client, at_bound.replay_session_id)) == 2
            assert outcome(client.run(Language.LUA, "return 1", session_id=session_id)).value == "ok"
            with pytest.raises(ResourceExhausted, match="3 recorded jobs; a replay re-runs at most 2"):
                client.sessions.replay(S.ReplayRequest(session_id=session_id, speed=0))
    finally:
        second.stop(grace=0)
