"""The per-principal State bound (`max_principal_state_bytes`): the `global` and session scopes of a
principal together, counted in `sp:principal:{p}:state-bytes` by the State scripts, Session.delete
and snapshot load. Store-level tests on the real Redis with a small bound."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis import Redis
from redis.client import Pipeline

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores import state_codec
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.coordinator.stores.state import StateStore
from scriptpool.core.job_records import hash_fields
from scriptpool.core.keys import global_state_key, job_state_key, session_state_key, snapshot_bytes_key, state_bytes_key
from scriptpool.core.lean_redis import LeanPool
from scriptpool.errors import InvalidArgument, ResourceExhausted
from scriptpool.v1 import sessions_pb2, state_pb2
from scriptpool.values import PlainValue, to_value
from tests.conftest import TEST_QUEUE, Stack

BOUND = 200


@dataclass
class Stores:
    sessions: SessionStore
    snapshots: SnapshotStore
    state: StateStore


@pytest.fixture
def stores(redis_client: Redis) -> Iterator[Stores]:
    lean = LeanPool(redis_client)
    sessions = SessionStore(redis_client, 1000, lean=lean)
    yield Stores(
        sessions,
        SnapshotStore(sessions, max_principal_state_bytes=BOUND),
        StateStore(redis_client, max_principal_bytes=BOUND, lean=lean),
    )
    lean.close()


def _caller() -> Caller:
    return Caller(principal=f"sq-{uuid.uuid4().hex[:12]}")


def _session(stores: Stores, caller: Caller) -> str:
    return stores.sessions.create(caller, sessions_pb2.CreateSessionRequest(name="quota")).id


def _set(stores: Stores, caller: Caller, scope: str, key: str, value: PlainValue) -> None:
    stores.state.set(caller, state_pb2.SetStateRequest(scope=scope, key=key, value=to_value(value)))


def _of(size: int) -> str:
    """A string whose stored value is `size` bytes (the tag, the protobuf header, the text)."""
    value = "x" * (size - 3 if size <= 130 else size - 4)  # (a length past 127 takes two bytes)
    assert len(state_codec.encode(to_value(value), "value", 1 << 20)) == size
    return value


def _held(redis: Redis, caller: Caller) -> int:
    return int(redis.get(state_bytes_key(caller.principal)) or 0)


def _scope_bytes(redis: Redis, key: str) -> int:
    """A scope's `""` field, checked against its real content."""
    fields = hash_fields(redis.hgetall(key))
    counted = int(fields.pop("", b"0"))
    assert counted == sum(len(k) + len(v) for k, v in fields.items())
    return counted


def test_at_the_bound_ok_one_byte_past_refused_and_nothing_written(stores: Stores, redis_client: Redis) -> None:
    caller = _caller()
    session_id = _session(stores, caller)
    _set(stores, caller, "global", "g", _of(98))  # 1 + 98 bytes
    _set(stores, caller, f"session:{session_id}", "s", _of(99))  # 1 + 99 bytes: 199 held
    _set(stores, caller, f"session:{session_id}", "t", None)  # null deletes: nothing there, nothing changes
    assert _held(redis_client, caller) == 199
    _set(stores, caller, "global", "g", _of(99))  # one byte more: exactly the bound
    assert _held(redis_client, caller) == BOUND
    before = {
        key: redis_client.hgetall(key) for key in (global_state_key(caller.principal), session_state_key(session_id))
    }
    with pytest.raises(ResourceExhausted, match=f"quota state_bytes .*: {BOUND} bytes in use, limit {BOUND} "):
        _set(stores, caller, f"session:{session_id}", "s", _of(100))  # one byte past
    with pytest.raises(ResourceExhausted, match="max_principal_state_bytes"):
        _set(stores, caller, "global", "x", 1)
    with pytest.raises(ResourceExhausted, match="max_principal_state_bytes"):
        stores.state.compare_and_set(
            caller,
            state_pb2.CompareAndSetRequest(
                scope="global", key="g", expected=to_value(_of(99)), new_value=to_value(_of(100))
            ),
        )
    after = {key: redis_client.hgetall(key) for key in before}
    assert after == before and _held(redis_client, caller) == BOUND


def test_an_integer_increment_that_grows_past_the_bound_is_undone(stores: Stores, redis_client: Redis) -> None:
    caller = _caller()
    _set(stores, caller, "global", "pad", _of(194))  # 3 + 194 bytes
    _set(stores, caller, "global", "n", 9)  # 1 + 1: 199 held

    def increment(by: int) -> None:
        stores.state.increment(caller, state_pb2.IncrementStateRequest(scope="global", key="n", by=to_value(by)))

    increment(1)  # "10": the bound exactly
    assert _held(redis_client, caller) == BOUND
    increment(-1)  # "9": shrinks
    increment(1)
    with pytest.raises(ResourceExhausted, match="max_principal_state_bytes"):
        increment(90)  # "100": one byte past
    assert redis_client.hget(global_state_key(caller.principal), "n") == b"10"
    assert _scope_bytes(redis_client, global_state_key(caller.principal)) == _held(redis_client, caller) == BOUND


def test_deleting_keys_and_sessions_frees_room(stores: Stores, redis_client: Redis) -> None:
    caller = _caller()
    session_id = _session(stores, caller)
    _set(stores, caller, f"session:{session_id}", "s", _of(99))  # 100 bytes
    _set(stores, caller, "global", "g", _of(99))  # 100 bytes: the bound
    with pytest.raises(ResourceExhausted):
        _set(stores, caller, "global", "h", 1)
    stores.state.delete(caller, "global", "g")
    assert _held(redis_client, caller) == 100
    _set(stores, caller, "global", "h", _of(98))  # room again: 99 bytes
    with pytest.raises(ResourceExhausted):
        _set(stores, caller, "global", "i", 1)
    stores.sessions.delete(caller, session_id)  # its State scope goes, and its bytes with it
    assert _held(redis_client, caller) == 99
    assert not redis_client.exists(session_state_key(session_id))
    _set(stores, caller, "global", "i", _of(99))


def test_the_count_is_the_sum_of_the_scopes_after_a_mixed_sequence(stores: Stores, redis_client: Redis) -> None:
    """Property-style: a seeded random run of every operation, refusals included, over `global`, two
    sessions and a job scope (not counted), with deletes, saves and loads; after each step the
    principal's count is the sum of its scopes' `""` fields, and never above the bound."""
    caller = _caller()
    sessions = [_session(stores, caller) for _ in range(2)]
    job = Caller(principal=caller.principal, job_id=str(uuid.uuid4()), session_id=sessions[0])
    rng = random.Random(13)
    values: list[PlainValue] = [1, 9, -5, 10**12, 0.5, "x", "y" * 40, {"a": [1, 2]}, True, None]
    refused = 0
    for step in range(600):
        scope = rng.choice(["global", f"session:{sessions[0]}", f"session:{sessions[1]}", "job"])
        who = job if scope == "job" else caller
        key = rng.choice("abcdef")
        op = rng.randrange(10)
        try:
            if op < 4:
                _set(stores, who, scope, key, rng.choice(values))
            elif op < 6:
                by = rng.choice([1, 7, 10**9, -(10**9), 0.25])
                stores.state.increment(who, state_pb2.IncrementStateRequest(scope=scope, key=key, by=to_value(by)))
            elif op < 7:
                stores.state.compare_and_set(
                    who,
                    state_pb2.CompareAndSetRequest(
                        scope=scope,
                        key=key,
                        expected=to_value(rng.choice(values)),
                        new_value=to_value(rng.choice(values)),
                    ),
                )
            elif op < 8:
                stores.state.delete(who, scope, key)
            elif op < 9:
                stores.snapshots.save(caller, rng.choice(sessions))
            elif step % 5 == 0:
                stores.snapshots.load(caller, rng.choice(sessions))
            elif step % 7 == 0:
                stores.sessions.delete(caller, sessions[0])
                sessions[0] = _session(stores, caller)
                job = Caller(principal=caller.principal, job_id=job.job_id, session_id=sessions[0])
        except ResourceExhausted:
            refused += 1
        except Exception as error:  # a number that is not one, or a load before any save
            assert "not a number" in str(error) or "no saved snapshot" in str(error) or "overflow" in str(error)
        scopes = [global_state_key(caller.principal)] + [session_state_key(s) for s in sessions]
        total = sum(_scope_bytes(redis_client, key) for key in scopes)
        assert _held(redis_client, caller) == total <= BOUND, f"step {step}"
    assert refused > 0  # the run did reach the bound
    assert _scope_bytes(redis_client, job_state_key(job.job_id)) >= 0


def test_a_snapshot_load_past_the_bound_is_refused(stores: Stores, redis_client: Redis) -> None:
    caller = _caller()
    session_id = _session(stores, caller)
    _set(stores, caller, f"session:{session_id}", "s", _of(99))  # 100 bytes
    stores.snapshots.save(caller, session_id)
    stores.state.delete(caller, f"session:{session_id}", "s")
    _set(stores, caller, "global", "g", _of(100))  # 101 bytes: the snapshot's 100 no longer fit
    session_before = redis_client.hgetall(f"sp:session:{session_id}")
    refusal = "quota state_bytes .*: 101 bytes in use, limit 200 .*100 more would pass it; .loading snapshot"
    with pytest.raises(ResourceExhausted, match=refusal):
        stores.snapshots.load(caller, session_id)
    assert not redis_client.exists(session_state_key(session_id))
    assert redis_client.hgetall(f"sp:session:{session_id}") == session_before
    assert _held(redis_client, caller) == 101
    _set(stores, caller, "global", "g", _of(99))  # 100 bytes: now it fits exactly
    stores.snapshots.load(caller, session_id)
    assert _scope_bytes(redis_client, session_state_key(session_id)) == 100
    assert _held(redis_client, caller) == BOUND
    _set(stores, caller, f"session:{session_id}", "s", 1)  # shrinking is always allowed
    stores.snapshots.load(caller, session_id)  # and loading back what it held before
    assert _held(redis_client, caller) == BOUND


def test_a_save_racing_a_session_delete_leaves_no_snapshot_charged(
    stores: Stores, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session.delete used to read the session's snapshots, then unlink them in a second step: a save
    in between stayed, charged to the principal. The handshake runs a save exactly there: when delete
    opens its transaction (after its reads, before it writes)."""
    caller = _caller()
    session_id = _session(stores, caller)
    _set(stores, caller, f"session:{session_id}", "s", _of(51))
    stores.snapshots.save(caller, session_id)
    opened = redis_client.pipeline

    def pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        if transaction:
            monkeypatch.setattr(redis_client, "pipeline", opened)
            stores.snapshots.save(caller, session_id)  # snapshot 2, between delete's steps
        return opened(transaction=transaction, shard_hint=shard_hint)

    monkeypatch.setattr(redis_client, "pipeline", pipeline)
    stores.sessions.delete(caller, session_id)
    assert redis_client.pipeline == opened  # the handshake ran
    assert not list(redis_client.scan_iter(f"sp:session:{session_id}*", count=1000))
    assert int(redis_client.get(snapshot_bytes_key(caller.principal)) or 0) == 0
    assert _held(redis_client, caller) == 0


def test_the_setting_is_checked() -> None:
    assert Settings().max_principal_state_bytes == 1024**3
    with pytest.raises(InvalidArgument, match="max_principal_state_bytes must be at least 1"):
        Settings(max_principal_state_bytes=0)


def test_a_coordinator_applies_the_setting_over_grpc(
    redis_server: PrivateRedis, stack: Stack, redis_client: Redis
) -> None:
    """The setting reaches a real coordinator's State service: RESOURCE_EXHAUSTED over gRPC, nothing written."""
    settings = Settings(
        redis_url=redis_server.url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_principal_state_bytes=BOUND
    )
    small = start_coordinator(settings)
    principal, key = stack.new_api_key()
    try:
        with ScriptpoolClient(f"127.0.0.1:{small.port}", key) as client:

            def put(name: str, size: int) -> None:
                client.state.set(state_pb2.SetStateRequest(scope="global", key=name, value=to_value(_of(size))))

            put("a", 99)
            put("b", 99)  # 200: the bound
            with pytest.raises(ResourceExhausted, match=f"quota state_bytes .*: {BOUND} bytes in use, limit {BOUND} "):
                put("c", 3)
            assert redis_client.hlen(global_state_key(principal)) == 3  # a, b and the byte count: no c
    finally:
        small.stop(grace=1)
