"""A problem that repeats is logged once, then counted: one line per interval, one when it is over."""

from __future__ import annotations

import logging

import pytest

from scriptpool.core.repeated_log import RepeatedProblem, RepeatedRecords


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


RQ_TEMPLATE = "Worker %s: could not connect to Redis instance: %s retrying in %d seconds..."


def test_a_library_s_repeated_line_passes_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.repeated.library")
    logger.addFilter(RepeatedRecords([RQ_TEMPLATE], every_seconds=30, clock=clock))
    with caplog.at_level(logging.INFO, logger="test.repeated.library"):
        for _ in range(20):  # RQ retries every 2 s: 40 s of outage
            logger.error(RQ_TEMPLATE, "w1", "Connection refused", 2)
            logger.info("another line")  # other lines are not held back
            clock.now += 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("another line") == 20
    assert [m for m in messages if m != "another line"] == [
        "Worker w1: could not connect to Redis instance: Connection refused retrying in 2 seconds...",
        "Worker w1: could not connect to Redis instance: Connection refused retrying in 2 seconds... "
        "(14 more times in the last 30s)",
    ]
