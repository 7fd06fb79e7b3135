"""Attacks on State through the real stack: a job reaching another principal's state, crafted scope
strings that might build another Redis key, oversized keys, the scope's reserved counter field. Each
asserts the exact refusal, that nothing was written anywhere, and that the worker still runs jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.core.keys import global_state_key, session_state_key
from scriptpool.languages import Language
from scriptpool.v1 import state_pb2
from scriptpool.values import to_value
from tests.conftest import Stack
from tests.integration.helpers import assert_worker_healthy, result_of


@pytest.fixture
def victim(stack: Stack) -> Iterator[tuple[str, str, ScriptpoolClient]]:
    """Another principal with a session and some state in both scopes."""
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as other:
        session_id = other.create_session("victim").id
        for scope in ("global", f"session:{session_id}"):
            other.state.set(state_pb2.SetStateRequest(scope=scope, key="secret", value=to_value("s3cr3t")))
        yield principal, session_id, other


def _state_keys(redis: Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Every State scope's hash and its contents. Other keys can hold the word too (the artifact word
    index of another test's session: `sp:session:{id}:artifacts:word:statement`, a set): skipped."""
    keys = sorted(redis.scan_iter("sp:*state*", count=1000))
    return {k: redis.hgetall(k) for k in keys if redis.type(k) == b"hash"}  # type: ignore[misc]


OPS = {
    "get": "State.get(S, 'secret')",
    "set": "State.set(S, 'secret', 'pwned')",
    "delete": "State.delete(S, 'secret')",
    "list": "State.list(S)",
    "increment": "State.increment(S, 'n', 1)",
    "compare_and_set": "State.compareAndSet(S, 'secret', 's3cr3t', 'pwned')",
}


@pytest.mark.parametrize("op", list(OPS))
def test_job_cannot_touch_another_principals_session_state(
    client: ScriptpoolClient, redis_client: Redis, victim: tuple[str, str, ScriptpoolClient], op: str
) -> None:
    _, session_id, _ = victim
    before = _state_keys(redis_client)
    source = f"local S = 'session:{session_id}' local ok, e = pcall(function() return {OPS[op]} end) return e.code"
    assert result_of(client.run(Language.LUA, source, timeout=60)) == "NOT_FOUND"
    assert _state_keys(redis_client) == before
    assert_worker_healthy(client)


def test_global_scope_is_the_callers_own(
    client: ScriptpoolClient, redis_client: Redis, victim: tuple[str, str, ScriptpoolClient]
) -> None:
    principal, _, other = victim
    source = "State.set('global', 'secret', 'pwned'); [State.get('global', 'secret'), State.list('global')]"
    assert result_of(client.run(Language.JAVASCRIPT, source, timeout=60)) == ["pwned", ["secret"]]
    answer = other.state.get(state_pb2.StateKey(scope="global", key="secret"))
    assert answer.value == to_value("s3cr3t")
    assert redis_client.hget(global_state_key(principal), "secret") is not None


CRAFTED_SCOPES = [
    "global:../x",
    "global/../principal:victim",
    "Global",
    " global",
    "global\x00",
    "session:*",
    "session:",
    "session:../../principal:victim:state",
    "session:7f1f5b1e-4f7e-4b7a-9a51-0f6a3c1d2e3f:snapshot:1",
    "session:7F1F5B1E-4F7E-4B7A-9A51-0F6A3C1D2E3F",
    "job:someone-elses-job",
    "sp:principal:victim:state",
    "x" * 100_000,
]


@pytest.mark.parametrize("scope", CRAFTED_SCOPES, ids=range(len(CRAFTED_SCOPES)))
def test_crafted_scope_strings_are_refused(client: ScriptpoolClient, redis_client: Redis, scope: str) -> None:
    before = _state_keys(redis_client)
    source = "local ok, e = pcall(State.set, INPUT.scope, 'k', 1) return {ok, e.code, e.message}"
    result = result_of(client.run(Language.LUA, source, inputs={"scope": scope}, timeout=60))
    assert isinstance(result, list)
    ok, code, message = result
    assert (ok, code) == (False, "INVALID_ARGUMENT")
    assert isinstance(message, str) and len(message) < 300  # a long scope is not echoed back
    assert _state_keys(redis_client) == before


@pytest.mark.parametrize(
    ("key", "why"), [("", "empty (the reserved counter field)"), ("k" * 100_000, "huge")], ids=["empty", "huge"]
)
def test_bad_keys_are_refused(client: ScriptpoolClient, redis_client: Redis, key: str, why: str) -> None:
    before = _state_keys(redis_client)
    source = "local ok, e = pcall(State.set, 'global', INPUT.key, 1) return {ok, e.code, #e.message < 300}"
    assert result_of(client.run(Language.LUA, source, inputs={"key": key}, timeout=60)) == [
        False, "INVALID_ARGUMENT", True
    ], why  # fmt: skip
    assert _state_keys(redis_client) == before


def test_session_state_of_a_deleted_session_cannot_be_recreated(client: ScriptpoolClient, redis_client: Redis) -> None:
    session_id = client.create_session("short-lived").id
    source = f"""
    local S = 'session:{session_id}'
    State.set(S, 'k', 1)
    Session.delete('{session_id}')
    local ok, e = pcall(State.set, S, 'k', 2)
    return e.code"""
    assert result_of(client.run(Language.LUA, source, timeout=60)) == "NOT_FOUND"
    assert not redis_client.exists(session_state_key(session_id))
