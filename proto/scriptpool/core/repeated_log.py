"""One log line for a problem that repeats, not one per occurrence (issue 17).

While Redis is down, every request the coordinator answers UNAVAILABLE and every reconnect attempt
fails: logged one by one, that is several lines a second, burying everything else. `RepeatedProblem`
logs the first occurrence at once, then at most one line per `every_seconds` with how many more
there were, and one line when it is over (how many, for how long). Thread-safe.
`RepeatedRecords` does the same for a library's own log lines (RQ's "could not connect to Redis
instance" from its main loop and its pubsub thread, every 2 seconds while Redis is down), as a
filter on its logger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

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


class RepeatedRecords(logging.Filter):
    """A filter for a logger: records whose message template is one of `templates` pass once, then
    at most once per `every_seconds` (per template), saying how many were held back meanwhile."""

    def __init__(
        self,
        templates: Collection[str],
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._templates = frozenset(templates)
        self._every = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}
        """Template -> (when one last passed, how many were held back since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg
        if not isinstance(template, str) or template not in self._templates:
            return True
        now = self._clock()
        with self._lock:
            passed_at, held = self._seen.get(template, (None, 0))
            if passed_at is not None and now - passed_at < self._every:
                self._seen[template] = (passed_at, held + 1)
                return False
            self._seen[template] = (now, 0)
        if held and passed_at is not None:
            record.msg = f"{template} ({held} more times in the last {now - passed_at:.0f}s)"
        return True


__all__ = ["EVERY_SECONDS", "RepeatedProblem", "RepeatedRecords"]
