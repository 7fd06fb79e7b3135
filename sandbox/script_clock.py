"""The clock a script reads, recorded so a replay reads the same values (ADR 0011).

Every read of a script's wall clock (Lua `os.time()`/`os.date()`, JavaScript `Date.now()`/`new
Date()`/`Date()`, Python `time.time()`, `datetime.now()` and the like) or CPU/monotonic clock (Lua
`os.clock()`, Python `time.monotonic()`/`perf_counter()`/`process_time()`) returns a value that is
recorded, in order, up to `MAX_CLOCK_READS` per job; the job's result keeps them
(`JobResult.clock_reads`). A replay gives the recorded values back in the same order, then the real
clock shifted so it starts where the recorded job's did. With the recorded random seed, a script
that only reads the clock or random numbers therefore replays exactly. Lua and JavaScript do the
same inside their preludes (`lua_prelude.lua`, `js_prelude.js`); this class is Python's, and the
one place the rule is written down.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

MAX_CLOCK_READS = 1024
"""Clock values recorded per job (8 bytes each in the job record); reads past it are not recorded,
and a replay reads the shifted real clock for them."""


class ScriptClock:
    def __init__(self, clock_start: float = 0.0, replay: Sequence[float] = ()) -> None:
        self.offset = clock_start - time.time() if clock_start else 0.0
        self._replay = tuple(replay)
        self._count = 0
        self.reads: list[float] = []

    def _read(self, real: float) -> float:
        index, self._count = self._count, self._count + 1
        value = self._replay[index] if index < len(self._replay) else real
        if len(self.reads) < MAX_CLOCK_READS:
            self.reads.append(value)
        return value

    def wall(self) -> float:
        """Seconds since the epoch, as the script's wall clock reads them."""
        return self._read(time.time() + self.offset)

    def monotonic(self) -> float:
        return self._read(time.monotonic())

    def perf_counter(self) -> float:
        return self._read(time.perf_counter())

    def process_time(self) -> float:
        return self._read(time.process_time())


__all__ = ["MAX_CLOCK_READS", "ScriptClock"]
