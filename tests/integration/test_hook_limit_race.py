"""HookService.Register's limit holds under concurrent calls: the count and the add are one script.

It used to count the principal's hooks, then subscribe and add the hook in later steps: Registers
that all counted before any added went past the limit. The handshake holds every Register at the
start of its subscription step until all of them are there, which is exactly that interleaving."""

from __future__ import annotations

import threading
import uuid
from typing import Any, cast

import grpc
import pytest
from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.hooks import MAX_HOOKS_PER_PRINCIPAL, HookServicer
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.stores.events import EventStore
from scriptpool.v1 import events_pb2

RACERS = 8


class _OneCaller:
    def __init__(self, caller: Caller) -> None:
        self.the_caller = caller

    def caller(self, context: grpc.ServicerContext) -> Caller:
        return self.the_caller


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class _Context:
    """The parts of a servicer context that Register and the status wrapper use."""

    def code(self) -> None:
        return None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


def test_concurrent_registers_stop_at_exactly_the_limit(redis_client: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    caller = Caller(principal=f"hooks-{uuid.uuid4().hex[:12]}")
    events = EventStore(redis_client)
    hooks = HookServicer(cast(Authenticator, _OneCaller(caller)), events, 30, 1000, WaitingCalls(8, 8, 8))
    context = cast(Any, _Context())
    request = events_pb2.RegisterHookRequest(hook_point="session.created")
    for _ in range(MAX_HOOKS_PER_PRINCIPAL - 1):
        hooks.Register(request, context)

    all_there = threading.Barrier(RACERS, timeout=30)
    subscribe = events.subscribe

    def subscribe_together(*args: Any, **kwargs: Any) -> events_pb2.Subscription:
        all_there.wait()  # every racer has done whatever Register does before this step
        return subscribe(*args, **kwargs)

    monkeypatch.setattr(events, "subscribe", subscribe_together)
    outcomes: list[str] = []

    def register() -> None:
        try:
            hooks.Register(request, context)
            outcomes.append("ok")
        except _Aborted as refused:
            assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"at most {MAX_HOOKS_PER_PRINCIPAL} hooks" in str(refused)
            outcomes.append("refused")

    racers = [threading.Thread(target=register) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert sorted(outcomes) == ["ok"] + ["refused"] * (RACERS - 1)
    assert redis_client.hlen(f"sp:hooks:{caller.principal}") == MAX_HOOKS_PER_PRINCIPAL
    assert redis_client.zcard(f"sp:principal:{caller.principal}:eventsubs") == MAX_HOOKS_PER_PRINCIPAL  # none half-made
