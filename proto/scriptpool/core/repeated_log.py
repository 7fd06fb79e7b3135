"""One log line for a problem that repeats, not one per occurrence (issue 17).

While Redis is down, every request the coordinator answers UNAVAILABLE and every reconnect attempt
fails: logged one by one, that is several lines a second, burying everything else. `RepeatedProblem`
logs the first occurrence at once, then at most one line per `every_seconds` with how many more
there were, and one line when it is over (how many, for how long). Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

EVERY_SECONDS = 30.0


class RepeatedProblem:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._every = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._unlogged = 0
        self._first = 0.0
        self._logged_at = 0.0

    def happened(self, detail: object) -> None:
        """One more occurrence (`detail`: what this one said)."""
        now = self._clock()
        with self._lock:
            self._count += 1
            if self._count == 1:
                self._first = self._logged_at = now
                self._log.warning("%s: %s", self._what, detail)
            elif now - self._logged_at >= self._every:
                self._log.warning(
                    "%s: %s (%d more times in the last %.0fs)",
                    self._what,
                    detail,
                    self._unlogged + 1,
                    now - self._logged_at,
                )
                self._logged_at, self._unlogged = now, 0
            else:
                self._unlogged += 1

    def over(self) -> None:
        """It stopped happening (the next occurrence is logged at once again)."""
        with self._lock:
            if self._count == 0:
                return
            count, lasted = self._count, self._clock() - self._first
            self._count = self._unlogged = 0
        self._log.warning("%s: over after %d occurrences in %.1fs", self._what, count, lasted)


__all__ = ["EVERY_SECONDS", "RepeatedProblem"]
