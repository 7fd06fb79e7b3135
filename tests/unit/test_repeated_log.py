"""A problem that repeats is logged once, then counted: one line per interval, one when it is over."""

from __future__ import annotations

import logging

import pytest

from scriptpool.core.repeated_log import RepeatedProblem


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_counted_not_logged_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    problem = RepeatedProblem(logging.getLogger("test.repeated"), "Redis unavailable", every_seconds=30, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        for _ in range(50):  # 50 failures within 5 s: one line
            problem.happened("Connection refused")
            clock.now += 0.1
        clock.now += 30
        problem.happened("Connection refused")  # the interval has passed: one line with the count
        clock.now += 1
        problem.over()
        problem.happened("again")  # a new episode is logged at once
    assert [r.getMessage() for r in caplog.records] == [
        "Redis unavailable: Connection refused",
        "Redis unavailable: Connection refused (50 more times in the last 35s)",
        "Redis unavailable: over after 51 occurrences in 36.0s",
        "Redis unavailable: again",
    ]


def test_over_without_a_problem_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        RepeatedProblem(logging.getLogger("test.repeated"), "x").over()
    assert caplog.records == []
