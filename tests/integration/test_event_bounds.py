"""Event retention per principal and subscription caps, each at its edge and checked in Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import start_coordinator
from scriptpool.core.keys import EVENT_RETENTION_KEY, events_key
from scriptpool.errors import ResourceExhausted
from scriptpool.v1 import events_pb2
from scriptpool.values import from_value, to_value
from tests.conftest import Stack

from .helpers import outcome, run_lua

E = events_pb2
NODE_ENTRIES = 100
"""Redis trims a stream (MAXLEN ~) a whole node at a time: up to this many entries above the cap stay."""


@contextmanager
def coordinator(stack: Stack, redis: Redis, **overrides: object) -> Iterator[int]:
    """A second coordinator on the tests' Redis; the retention it writes is restored after."""
    running = start_coordinator(replace(stack.settings, **overrides), redis)  # type: ignore[arg-type]
    try:
        yield running.port
    finally:
        running.stop(grace=1)
        redis.set(EVENT_RETENTION_KEY, stack.settings.max_events_per_principal)


def _emit(client: ScriptpoolClient, name: str, n: int) -> None:
    client.events.emit(E.EmitEventRequest(name=name, data=to_value(n)))


def test_one_principals_emits_cannot_evict_anothers_unread_events(stack: Stack, redis_client: Redis) -> None:
    keep = 200
    (a_name, a_key), (b_name, b_key) = stack.new_api_key(), stack.new_api_key()
    with (
        coordinator(stack, redis_client, max_events_per_principal=keep) as port,
        ScriptpoolClient(f"127.0.0.1:{port}", a_key) as a,
        ScriptpoolClient(f"127.0.0.1:{port}", b_key) as b,
    ):
        subscription = b.events.subscribe(E.SubscribeRequest(pattern="b.*")).subscription_id
        for i in range(keep):
            _emit(b, "b.note", i)
        for i in range(keep * 5):  # far past the retention
            _emit(a, "a.flood", i)
        received = []
        while (got := b.events.receive(E.ReceiveRequest(subscription_id=subscription))).received:
            received.append(from_value(got.event.data))
        assert received == list(range(keep))  # every one of B's unread events, in order
        assert redis_client.xlen(events_key(b_name)) == keep
        assert keep <= redis_client.xlen(events_key(a_name)) <= keep + NODE_ENTRIES  # A's own stream was trimmed
        newest: list[tuple[bytes, dict[bytes, bytes]]] = redis_client.xrevrange(events_key(a_name), count=1)  # type: ignore[assignment]
        assert newest[0][1][b"type"] == b"a.flood"


def test_subscriptions_per_principal_stop_at_the_bound(stack: Stack, redis_client: Redis) -> None:
    principal, key = stack.new_api_key()
    with coordinator(stack, redis_client, max_subscriptions_per_principal=3) as port:
        with ScriptpoolClient(f"127.0.0.1:{port}", key) as client:
            ids = [client.events.subscribe(E.SubscribeRequest(pattern="x")).subscription_id for _ in range(3)]
            with pytest.raises(ResourceExhausted, match=r"quota subscriptions .*: 3 subscriptions in use, limit 3 "):
                client.events.subscribe(E.SubscribeRequest(pattern="x"))
            assert redis_client.zcard(f"sp:principal:{principal}:eventsubs") == 3
            assert len(list(redis_client.scan_iter("sp:eventsub:*", count=10_000))) >= 3
            assert all(redis_client.exists(f"sp:eventsub:{i}") for i in ids)
            client.events.unsubscribe(E.Subscription(subscription_id=ids[0]))
            assert redis_client.zcard(f"sp:principal:{principal}:eventsubs") == 2
            client.events.subscribe(E.SubscribeRequest(pattern="x"))  # room again


def test_a_jobs_subscriptions_stop_at_the_bound(client: ScriptpoolClient, redis_client: Redis, stack: Stack) -> None:
    """One job made 5,000 subscriptions; the default bound is 100 per job."""
    limit = stack.settings.max_subscriptions_per_job
    source = f"""
    local made, code = 0, nil
    for i = 1, {limit + 50} do
      local ok, err = pcall(Event.subscribe, 'x.*')
      if not ok then code = err.code break end
      made = made + 1
    end
    return {{made, code}}
    """
    job = run_lua(client, source)
    assert outcome(job).value == "ok", job.result.message
    assert from_value(job.result.result) == [limit, "RESOURCE_EXHAUSTED"]
    assert redis_client.zcard(f"sp:job:{job.id}:eventsubs") == limit


def test_a_jobs_hooks_count_against_its_subscriptions(client: ScriptpoolClient, stack: Stack) -> None:
    """A hook is a subscription: hooks and subscriptions together stop at the per-job bound, and the
    job's event book (Hook.list, Event.listSubscriptions) holds only what was made."""
    limit = stack.settings.max_subscriptions_per_job
    source = f"""
    Event.subscribe('x.*')
    local made, code = 0, nil
    for i = 1, {limit + 50} do
      local ok, err = pcall(Hook.register, 'BeforeAgentInit', function() end, i % 2 == 0 and 'high' or 'low')
      if not ok then code = err.code break end
      made = made + 1
    end
    return {{made, code, #Hook.list(), #Event.list_subscriptions()}}
    """
    job = run_lua(client, source)
    assert outcome(job).value == "ok", job.result.message
    assert from_value(job.result.result) == [limit - 1, "RESOURCE_EXHAUSTED", limit - 1, 1]
