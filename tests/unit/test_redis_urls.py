"""The Redis URL grammar (`proto/scriptpool/core/redis_urls.py`): what a `redis+sentinel://` URL
means, which password goes where, and the one-line refusals."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from scriptpool.core.durability import ReplicaAck
from scriptpool.core.redis_urls import (
    DEFAULT_SENTINEL_PORT,
    SentinelTarget,
    open_client,
    parse_sentinel_url,
    redacted,
    sentinel_of,
    sibling_client,
)
from scriptpool.errors import InvalidArgument


def test_hosts_service_and_db() -> None:
    target = parse_sentinel_url("redis+sentinel://s1:26380,s2,10.0.0.3:5000/mymaster/3")
    assert target == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", DEFAULT_SENTINEL_PORT), ("10.0.0.3", 5000)), service="mymaster", db=3
    )


def test_db_defaults_to_0_and_a_trailing_slash_is_fine() -> None:
    assert parse_sentinel_url("redis+sentinel://s1/svc").db == 0
    assert parse_sentinel_url("redis+sentinel://s1/svc/").db == 0


def test_userinfo_is_the_data_nodes_and_the_query_the_sentinels() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://app:data%40pw@s1:26379/svc/1?sentinel_password=sent%26pw&sentinel_username=watch"
        "&sentinel_timeout=0.5"
    )
    assert (target.username, target.password) == ("app", "data@pw")
    assert (target.sentinel_username, target.sentinel_password) == ("watch", "sent&pw")
    assert target.sentinel_timeout == 0.5


def test_a_password_without_a_user() -> None:
    target = parse_sentinel_url("redis+sentinel://:secret@s1/svc")
    assert (target.username, target.password) == (None, "secret")
    assert target.sentinel_password is None


def test_ipv6_sentinels() -> None:
    target = parse_sentinel_url("redis+sentinel://[::1]:26379,[fe80::2]/svc")
    assert target.sentinels == (("::1", 26379), ("fe80::2", DEFAULT_SENTINEL_PORT))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://s1:26379", "expected redis+sentinel://"),
        ("redis+sentinel:///svc", "expected redis+sentinel://"),
        ("redis+sentinel://s1:0/svc", "port must be 1-65535"),
        ("redis+sentinel://s1:x/svc", "port must be 1-65535"),
        ("redis+sentinel://s1,:26379/svc", "has no host"),
        ("redis+sentinel://s1/svc/one", "database must be a number"),
        ("redis+sentinel://s1/svc?password=x", "unknown parameter 'password'"),
        ("redis+sentinel://s1/svc?sentinel_password=a&sentinel_password=b", "more than once"),
        ("redis+sentinel://s1/svc?sentinel_timeout=0", "sentinel_timeout must be"),
        ("redis+sentinel://s1/svc?sentinel_timeout=soon", "sentinel_timeout must be"),
    ],
)
def test_bad_sentinel_urls_say_why_in_one_line(url: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_sentinel_url(url)
    message = str(refused.value)
    assert why in message and message.startswith("bad Redis URL") and "\n" not in message


def test_passwords_never_appear_in_the_refusal() -> None:
    with pytest.raises(InvalidArgument) as refused:
        open_client("redis+sentinel://:datapw@s1:bad/svc?sentinel_password=sentpw")
    assert "datapw" not in str(refused.value) and "sentpw" not in str(refused.value)


def test_redacted_hides_both_passwords() -> None:
    url = "redis+sentinel://u:datapw@s1/svc?sentinel_password=sentpw&sentinel_timeout=1"
    assert redacted(url) == "redis+sentinel://u:***@s1/svc?sentinel_password=***&sentinel_timeout=1"
    assert redacted("redis://:pw@h:1/0?password=x") == "redis://:***@h:1/0?password=***"


def test_plain_urls_are_redis_pys_and_bad_ones_are_one_line() -> None:
    client = open_client("redis://127.0.0.1:1/2")
    try:
        assert sentinel_of(client) is None
        assert client.connection_pool.connection_kwargs["db"] == 2
    finally:
        client.close()
    with pytest.raises(InvalidArgument, match="bad Redis URL"):
        open_client("http://127.0.0.1:6379")
    with pytest.raises(InvalidArgument, match="no Redis URL"):
        open_client("")


def test_a_sentinel_client_carries_both_credentials_and_its_siblings_follow_the_same_sentinels() -> None:
    client = open_client("redis+sentinel://:datapw@127.0.0.1:1,127.0.0.1:2/svc/4?sentinel_password=sentpw")
    sibling = sibling_client(client, socket_timeout=0.5)
    try:
        pool = sentinel_of(client)
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "svc"
        assert pool.connection_kwargs["password"] == "datapw" and pool.connection_kwargs["db"] == 4
        sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
        assert [(s["port"], s["password"]) for s in sentinels] == [(1, "sentpw"), (2, "sentpw")]
        sibling_pool = sentinel_of(sibling)
        assert sibling_pool is not None and sibling_pool.sentinel_manager is pool.sentinel_manager
        assert sibling_pool.connection_kwargs["socket_timeout"] == 0.5
    finally:
        sibling.close()
        client.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ReplicaAck(replicas=0, timeout_ms=1000)),
        ({"SCRIPTPOOL_ACK_REPLICAS": "2"}, ReplicaAck(replicas=2, timeout_ms=1000)),
        (
            {"SCRIPTPOOL_ACK_REPLICAS": "1", "SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS": "250"},
            ReplicaAck(replicas=1, timeout_ms=250),
        ),
    ],
)
def test_ack_replicas_from_the_environment(env: dict[str, str], expected: ReplicaAck) -> None:
    assert ReplicaAck.from_env(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"SCRIPTPOOL_ACK_REPLICAS": "-1"},
        {"SCRIPTPOOL_ACK_REPLICAS": "one"},
        {"SCRIPTPOOL_ACK_REPLICAS": "101"},
        {"SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS": "0"},
        {"SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS": "60001"},
    ],
)
def test_bad_ack_replicas_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_ACK_REPLICAS"):
        ReplicaAck.from_env(env)
