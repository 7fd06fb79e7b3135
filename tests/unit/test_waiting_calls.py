"""The waiting-call budget's three caps, each at its edge, and every slot given back."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.errors import ResourceExhausted

A, B, C = Caller("a"), Caller("b"), Caller("c")


def test_one_principal_holds_at_most_its_share_and_others_still_wait() -> None:
    waiting = WaitingCalls(limit=10, per_principal=3, event_waits=10)
    with ExitStack() as held:
        for _ in range(3):
            held.enter_context(waiting.hold(A))
        with pytest.raises(ResourceExhausted, match="principal already holds 3 waiting calls"):
            held.enter_context(waiting.hold(A))
        held.enter_context(waiting.hold(B))  # another principal is not refused
        assert (waiting.held_by("a"), waiting.held_by("b"), waiting.taken) == (3, 1, 4)
    assert (waiting.held_by("a"), waiting.taken) == (0, 0)


def test_the_total_is_shared_by_every_principal() -> None:
    waiting = WaitingCalls(limit=4, per_principal=3, event_waits=4)
    with ExitStack() as held:
        for caller in (A, A, B, B):
            held.enter_context(waiting.hold(caller))
        with pytest.raises(ResourceExhausted, match=r"holds 4 waiting calls \(max_waiting_calls 4\)"):
            held.enter_context(waiting.hold(C))
    with waiting.hold(C):  # all given back
        assert waiting.taken == 1


def test_waits_on_redis_have_a_smaller_cap_of_their_own() -> None:
    waiting = WaitingCalls(limit=10, per_principal=10, event_waits=2)
    with ExitStack() as held:
        held.enter_context(waiting.hold(A, blocks_on_redis=True))
        held.enter_context(waiting.hold(B, blocks_on_redis=True))
        with pytest.raises(ResourceExhausted, match=r"max_event_waits 2"):
            held.enter_context(waiting.hold(C, blocks_on_redis=True))
        held.enter_context(waiting.hold(C))  # a wait that does not block on Redis still fits
        assert (waiting.event_waits, waiting.taken) == (2, 3)
    assert (waiting.event_waits, waiting.taken) == (0, 0)


def test_a_refused_wait_takes_nothing() -> None:
    waiting = WaitingCalls(limit=1, per_principal=1, event_waits=1)
    with waiting.hold(A):
        for caller in (A, B):
            with pytest.raises(ResourceExhausted):
                with waiting.hold(caller, blocks_on_redis=True):
                    pass  # pragma: no cover
        assert (waiting.taken, waiting.event_waits, waiting.held_by("b")) == (1, 0, 0)
