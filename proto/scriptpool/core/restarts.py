"""When a supervisor (`scriptpool up`, the worker pool) may start a dead child again.

The first restart comes after a short pause; while the child keeps dying soon after each start the
pause doubles, up to `MAX_RESTART_PAUSE_SECONDS`, so a child that cannot start (a broken config, a
full disk) costs one attempt every 30 s instead of a busy loop. A child that ran for
`HEALTHY_AFTER_SECONDS` before dying starts again after the first pause.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_RESTART_PAUSE_SECONDS = 0.5
MAX_RESTART_PAUSE_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0


@dataclass
class Restarts:
    """One child's restart schedule, on the monotonic clock."""

    started_at: float
    pause: float = 0.0
    not_before: float = 0.0
    waiting: bool = False
    """Dead and not started again yet."""
    count: int = 0

    def died(self, now: float) -> float:
        """Note the death seen at `now`; returns the pause before the next start."""
        if now - self.started_at >= HEALTHY_AFTER_SECONDS or self.pause == 0.0:
            self.pause = FIRST_RESTART_PAUSE_SECONDS
        else:
            self.pause = min(MAX_RESTART_PAUSE_SECONDS, self.pause * 2)
        self.not_before = now + self.pause
        self.waiting = True
        return self.pause

    def due(self, now: float) -> bool:
        return self.waiting and now >= self.not_before

    def started(self, now: float) -> None:
        self.started_at = now
        self.waiting = False
        self.count += 1
