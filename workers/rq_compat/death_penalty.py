"""`AlarmDeathPenalty`: RQ's SIGALRM job timeout, with its signal handler installed once per process.

RQ's `UnixSignalDeathPenalty` installs a SIGALRM handler before every job and puts the default
back after it; Python's `signal.signal` wrapper converts enums both ways each time, which showed as
~3 % of a worker's CPU per trivial job. This penalty behaves the same inside the `with` block (the
alarm is armed for the job's timeout and raises RQ's exception with RQ's message when it fires;
leaving the block disarms it) but keeps one process-wide handler that raises only while a penalty
is armed. An alarm that fires after its block was left is dropped, where RQ's would have met the
default action (the process ends). `tests/unit/test_death_penalty.py` covers both.
"""

from __future__ import annotations

import signal
from _signal import getsignal as c_getsignal  # type: ignore[import-not-found]
from types import FrameType
from typing import Any, ClassVar

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty


class AlarmDeathPenalty(UnixSignalDeathPenalty):
    armed: ClassVar[AlarmDeathPenalty | None] = None
    """The penalty whose alarm is set, if any (one at a time, as with RQ's: an alarm replaces the last)."""

    def __init__(self, timeout: int, exception: type[BaseException] = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)  # type: ignore[no-untyped-call]

    def setup_death_penalty(self) -> None:
        if c_getsignal(signal.SIGALRM) is not _on_alarm:  # the C getter: no enum conversion
            signal.signal(signal.SIGALRM, _on_alarm)
        AlarmDeathPenalty.armed = self
        signal.alarm(self._timeout)

    def cancel_death_penalty(self) -> None:
        signal.alarm(0)
        AlarmDeathPenalty.armed = None


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    armed = AlarmDeathPenalty.armed
    if armed is not None:
        armed.handle_death_penalty(signum, frame)  # type: ignore[no-untyped-call]


__all__ = ["AlarmDeathPenalty"]
