"""The restart schedule of `scriptpool up`'s children: a short first pause, doubling while a child
keeps dying young, capped, and back to the first pause after a healthy run."""

from __future__ import annotations

from scriptpool.core.restarts import (
    FIRST_RESTART_PAUSE_SECONDS,
    HEALTHY_AFTER_SECONDS,
    MAX_RESTART_PAUSE_SECONDS,
    Restarts,
)


def test_a_child_dying_young_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    restarts = Restarts(started_at=0.0)
    now = 1.0
    pauses = []
    for _ in range(10):
        pause = restarts.died(now)
        pauses.append(pause)
        assert not restarts.due(now + pause / 2) and restarts.due(now + pause)
        now += pause
        restarts.started(now)
        now += 1.0  # dies one second after each start
    assert pauses[0] == FIRST_RESTART_PAUSE_SECONDS
    assert pauses[1] == 2 * FIRST_RESTART_PAUSE_SECONDS
    assert max(pauses) == MAX_RESTART_PAUSE_SECONDS == pauses[-1]
    assert restarts.count == 10


def test_a_child_that_ran_long_enough_starts_again_after_the_first_pause() -> None:
    restarts = Restarts(started_at=0.0)
    for now in (1.0, 2.0, 3.0):
        restarts.died(now)
        restarts.started(now)
    assert restarts.pause > FIRST_RESTART_PAUSE_SECONDS
    assert restarts.died(3.0 + HEALTHY_AFTER_SECONDS) == FIRST_RESTART_PAUSE_SECONDS


def test_nothing_is_due_while_the_child_lives() -> None:
    restarts = Restarts(started_at=0.0)
    assert not restarts.due(1e9)
