"""Bounds on the work one call can cause in the event and artifact paths, whatever the principal
holds: each test runs a store (or servicer) on the real Redis through a connection that counts the
reply elements Redis sends back (test_call_bounds.py), so reading more than the bound shows up as a
count, not as a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from redis import Redis
from scriptpool.v1 import common_pb2, events_pb2

from coordinator.auth import Authenticator, Caller
from coordinator.services.hooks import HookServicer
from coordinator.stores.events import EventStore

from .test_call_bounds import ReplyCounter, counting_redis

ENTRY_ELEMENTS = 15
"""Reply elements one emitted event's stream entry costs: its id and 7 field-value pairs."""


@pytest.fixture
def counter() -> ReplyCounter:
    return ReplyCounter()


@pytest.fixture
def counted(redis_client: Redis, counter: ReplyCounter) -> Iterator[Redis]:
    client = counting_redis(redis_client, counter)
    yield client
    client.close()


def _caller() -> Caller:
    return Caller(principal=f"e-{uuid.uuid4().hex[:12]}")


def _emit(events: EventStore, caller: Caller, name: str, count: int = 1) -> None:
    for n in range(count):
        events.emit(caller, name, common_pb2.Value(int_value=n), "")


def test_a_receive_reads_at_most_max_event_scan_entries(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    writer = EventStore(redis_client)
    reader = EventStore(counted, max_scan=100)
    caller = _caller()
    subscription = reader.subscribe(caller, "wanted")
    _emit(writer, caller, "noise", 1000)
    _emit(writer, caller, "wanted")
    counter.reset()
    assert reader.receive(caller, subscription.subscription_id, 0) is None
    # 100 entries and a few small replies, not the 1,001 entries waiting
    assert 100 * ENTRY_ELEMENTS <= counter.elements < 100 * ENTRY_ELEMENTS + 50
    calls = 1
    event = None
    while event is None:
        event = reader.receive(caller, subscription.subscription_id, 0)
        calls += 1
    assert event.name == "wanted" and calls == 11  # each call continued where the last one stopped
    assert reader.receive(caller, subscription.subscription_id, 0) is None  # delivered once


@pytest.mark.parametrize(("noise", "calls"), [(99, 1), (100, 2)])
def test_a_receive_finds_a_match_at_the_edge_of_its_scan(redis_client: Redis, noise: int, calls: int) -> None:
    events = EventStore(redis_client, max_scan=100)
    caller = _caller()
    subscription = events.subscribe(caller, "wanted")
    _emit(events, caller, "noise", noise)
    _emit(events, caller, "wanted")
    answers = [events.receive(caller, subscription.subscription_id, 0) for _ in range(calls)]
    assert [a is not None for a in answers] == [False] * (calls - 1) + [True]


def test_a_stream_wakeup_reads_at_most_max_event_scan_entries(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    writer = EventStore(redis_client)
    reader = EventStore(counted, max_scan=100)
    caller = _caller()
    wakeups = 0

    def still_wanted() -> bool:
        nonlocal wakeups
        wakeups += 1
        if wakeups == 1:  # the stream has started (its position is taken): now the backlog comes
            _emit(writer, caller, "noise", 1000)
            _emit(writer, caller, "wanted")
            counter.reset()
        return True

    stream = reader.follow(caller, "wanted", still_wanted)
    event = next(stream)
    assert event.name == "wanted"
    assert wakeups == 11  # ten wakeups of 100 entries, then the one that found it
    assert counter.elements < 1001 * ENTRY_ELEMENTS + 11 * 10


class _OneCaller:
    def __init__(self, caller: Caller) -> None:
        self.the_caller = caller

    def caller(self, context: grpc.ServicerContext) -> Caller:
        return self.the_caller


class _Context:
    def time_remaining(self) -> float | None:
        return None


def _hooks(events: EventStore, caller: Caller) -> tuple[HookServicer, grpc.ServicerContext]:
    auth = cast(Authenticator, _OneCaller(caller))
    return HookServicer(auth, events, max_wait_seconds=30, max_poll_firings=1000), cast(Any, _Context())


def test_a_hook_poll_reads_at_most_max_event_scan_entries_across_its_hooks(
    redis_client: Redis, counted: Redis, counter: ReplyCounter
) -> None:
    caller = _caller()
    writer = EventStore(redis_client)
    hooks, context = _hooks(EventStore(counted, max_scan=300), caller)
    for _ in range(3):
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), context)
    _emit(writer, caller, "noise", 1000)
    _emit(writer, caller, "state.changed")
    counter.reset()
    first = hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0), context)
    assert list(first.firings) == []
    # 3 hooks x 100 entries (a share each) and small replies: not 3 x 1,001 entries
    assert 300 * ENTRY_ELEMENTS <= counter.elements < 300 * ENTRY_ELEMENTS + 100
    fired: list[str] = []
    polls = 1
    while len(fired) < 3:
        fired += [f.hook_id for f in hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0), context).firings]
        polls += 1
    assert len(set(fired)) == 3 and polls == 11  # each hook fired once, continuing where it stopped


def test_an_idle_hook_poll_blocks_instead_of_polling(counted: Redis, counter: ReplyCounter) -> None:
    caller = _caller()
    hooks, context = _hooks(EventStore(counted, max_scan=300), caller)
    for _ in range(3):
        hooks.Register(events_pb2.RegisterHookRequest(hook_point="state.changed"), context)
    counter.reset()
    assert list(hooks.Poll(events_pb2.PollHooksRequest(timeout_seconds=0.5), context).firings) == []
    # one pass over the 3 hooks (about 6 replies each) and one blocking read: the old loop made a
    # pass every 0.1 s
    assert counter.replies < 30
