"""The hot-path Lua script runner against a real redis-server: replies, errors, NOSCRIPT, reconnects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.core.lean_redis import (
    LeanPool,
    LeanScript,
    _pack_in_python,
    pack_command,
    read,
    subscribe,
    transaction,
)

ECHO = "return ARGV"
TYPES = """
if ARGV[1] == 'nil' then return nil end
if ARGV[1] == 'int' then return tonumber(ARGV[2]) end
if ARGV[1] == 'status' then return {ok = 'fine'} end
if ARGV[1] == 'error' then return redis.error_reply('ERR refused: ' .. ARGV[2]) end
if ARGV[1] == 'nested' then return {1, {KEYS[1], false}, 'x'} end
return redis.call('GET', KEYS[1])
"""


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    with PrivateRedis() as server:
        client = Redis.from_url(server.url)
        yield client
        client.close()


@pytest.fixture
def pool(redis: Redis) -> Iterator[LeanPool]:
    lean = LeanPool(redis)
    yield lean
    lean.close()


def test_replies_of_every_type(redis: Redis, pool: LeanPool) -> None:
    script = LeanScript(redis, pool, TYPES)
    assert script.pool.supported
    redis.set("lean:k", b"\x00\xffbinary\r\n")
    assert script(["lean:k"], ["get"]) == b"\x00\xffbinary\r\n"
    assert script(["lean:missing"], ["get"]) is None
    assert script([], ["nil"]) is None
    assert script([], ["int", "-42"]) == -42
    assert script([], ["status"]) == b"fine"
    assert script(["k"], ["nested"]) == [1, [b"k", None], b"x"]
    echo = LeanScript(redis, script.pool, ECHO)
    assert echo([], ["a", b"b", 3, 1.5, "é"]) == [b"a", b"b", b"3", b"1.5", "é".encode()]


def test_error_replies_raise_response_error(redis: Redis, pool: LeanPool) -> None:
    script = LeanScript(redis, pool, TYPES)
    with pytest.raises(ResponseError, match="refused: no"):
        script([], ["error", "no"])
    assert script([], ["int", "7"]) == 7  # the connection is still in step


def test_a_flushed_script_is_loaded_again(redis: Redis, pool: LeanPool) -> None:
    script = LeanScript(redis, pool, ECHO)
    redis.script_flush()
    assert script([], ["x"]) == [b"x"]
    assert redis.script_exists(script.sha) == [True]


def test_a_killed_connection_fails_one_call_at_most_then_reconnects(redis: Redis, pool: LeanPool) -> None:
    script = LeanScript(redis, pool, ECHO)
    assert script([], ["1"]) == [b"1"]
    redis.client_kill_filter(_type="normal", skipme=True)
    try:
        first = script([], ["2"])
    except RedisConnectionError:
        first = None
    assert first in (None, [b"2"])
    assert script([], ["3"]) == [b"3"]


def test_pack_command_is_binary_safe() -> None:
    assert pack_command("GET", b"a\r\nb") == b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n"
    with pytest.raises(TypeError):
        pack_command("SET", "k", True)


def test_connections_it_cannot_speak_go_through_redis_py(redis: Redis, pool: LeanPool) -> None:
    """TLS and other custom connection classes: the same script, the same replies, via redis-py."""
    pool.supported = False
    script = LeanScript(redis, pool, TYPES)
    redis.set("lean:k2", b"v")
    assert script(["lean:k2"], ["get"]) == b"v"
    assert script(["k"], ["nested"]) == [1, [b"k", None], b"x"]
    with pytest.raises(ResponseError, match="refused"):
        script([], ["error", "x"])


def test_a_transaction_applies_every_command_and_returns_their_replies(redis: Redis, pool: LeanPool) -> None:
    redis.delete("lean:tx:h", "lean:tx:l")
    replies = transaction(pool, [("HSET", "lean:tx:h", "a", "1", "b", b"\x00"), ("RPUSH", "lean:tx:l", "x", "y")])
    assert replies == [2, 2]
    assert redis.hgetall("lean:tx:h") == {b"a": b"1", b"b": b"\x00"} and redis.llen("lean:tx:l") == 2


def test_a_failing_command_raises_and_the_connection_stays_in_step(redis: Redis, pool: LeanPool) -> None:
    redis.set("lean:tx:s", "a string")
    with pytest.raises(ResponseError, match="WRONGTYPE"):  # fails when run: the others still ran (Redis)
        transaction(pool, [("HSET", "lean:tx:s", "f", "v"), ("SET", "lean:tx:after", "1")])
    assert redis.get("lean:tx:after") == b"1"
    redis.delete("lean:tx:never")
    with pytest.raises(ResponseError):  # refused when queued: nothing runs (EXECABORT)
        transaction(pool, [("SET", "lean:tx:never", "1"), ("NOSUCHCOMMAND", "x")])
    assert redis.get("lean:tx:never") is None
    assert transaction(pool, [("PING",)]) == [b"PONG"]  # still in step


def test_a_read_survives_a_killed_connection(redis: Redis, pool: LeanPool) -> None:
    redis.hset("lean:read:h", mapping={"a": "1"})
    assert read(pool, "HGETALL", "lean:read:h") == [b"a", b"1"]
    redis.client_kill_filter(_type="normal", skipme=True)
    assert read(pool, "HGETALL", "lean:read:h") == [b"a", b"1"]  # a read is simply retried
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        read(pool, "GET", "lean:read:h")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False), st.sampled_from(["ä", "日本"])),
        min_size=1,
        max_size=12,
    )
)
def test_hiredis_packs_every_argument_exactly_as_the_python_packer(args: list[Any]) -> None:
    assert pack_command(*args) == _pack_in_python(args)


def test_arguments_redis_has_no_form_for_are_refused() -> None:
    with pytest.raises(TypeError, match="booleans"):
        pack_command("SET", "k", True)


def test_the_packed_float_reads_back_as_the_same_float(redis: Redis) -> None:
    pool = LeanPool(redis)
    try:
        for value in (0.1, 1 / 3, 1732492799.123456, -2.5e-300, 1e22):
            read(pool, "SET", "float-key", value)
            stored = read(pool, "GET", "float-key")
            assert isinstance(stored, bytes) and float(stored) == value
    finally:
        pool.close()


def test_a_subscription_yields_its_start_each_message_idle_ticks_and_fails_loudly_when_cut(redis: Redis) -> None:
    pool = LeanPool(redis)
    messages = subscribe(pool, "lean-channel", 0.2)
    try:
        assert next(messages) == b""  # subscribed: a message published from now on is not missed
        redis.publish("lean-channel", b"first")
        redis.publish("other-channel", b"not ours")
        redis.publish("lean-channel", "second")
        assert next(messages) == b"first"
        assert next(messages) == b"second"
        assert next(messages) is None  # 0.2 s without a message
        redis.client_kill_filter(_type="pubsub")
        with pytest.raises(RedisConnectionError):
            while next(messages) is None:
                pass
    finally:
        messages.close()
        pool.close()
