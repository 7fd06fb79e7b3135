"""`AlarmDeathPenalty` times a block out as RQ's `UnixSignalDeathPenalty` does, with one handler per
process, and drops an alarm that fires after its block was left."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from scriptpool.workers.rq_compat.death_penalty import AlarmDeathPenalty
from scriptpool.workers.rq_compat.lean_rq import LeanSimpleWorker


@pytest.fixture(autouse=True)
def _restore_sigalrm() -> Iterator[None]:
    before = signal.getsignal(signal.SIGALRM)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)
    AlarmDeathPenalty.armed = None


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@pytest.mark.parametrize("penalty", [UnixSignalDeathPenalty, AlarmDeathPenalty])
def test_a_block_past_its_timeout_gets_rqs_exception_and_message(penalty: type[UnixSignalDeathPenalty]) -> None:
    with pytest.raises(JobTimeoutException, match=r"Task exceeded maximum timeout value \(1 seconds\)"):
        with penalty(1, JobTimeoutException, job_id="j"):
            _spin(3)


def test_each_use_arms_its_own_timeout_and_leaving_disarms_it() -> None:
    for _ in range(3):
        with AlarmDeathPenalty(5, JobTimeoutException, job_id="j"):
            assert AlarmDeathPenalty.armed is not None
            assert 0 < signal.alarm(5) <= 5  # alarm() answers the seconds left on the armed one
        assert AlarmDeathPenalty.armed is None
        assert signal.alarm(0) == 0
    with pytest.raises(JobTimeoutException):
        with AlarmDeathPenalty(1, JobTimeoutException, job_id="j"):
            _spin(3)


def test_a_stray_alarm_after_the_block_is_dropped() -> None:
    with AlarmDeathPenalty(5, JobTimeoutException, job_id="j"):
        pass
    signal.setitimer(signal.ITIMER_REAL, 0.05)  # a SIGALRM nobody armed a penalty for
    _spin(0.3)  # RQ's default action here would have ended the process


def test_lean_workers_use_it() -> None:
    assert LeanSimpleWorker.death_penalty_class is AlarmDeathPenalty
