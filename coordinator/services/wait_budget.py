"""How long a waiting call (SubmitJob/WaitJob with a wait, Event.Receive, HookService.Poll) may wait."""

from __future__ import annotations

import grpc

DEADLINE_MARGIN_SECONDS = 0.25
"""A wait ends this long before the call's own deadline, so its answer still reaches the caller.
Redis ends a blocked XREAD late by up to one tick of its timer (`hz` 10: 100 ms), and a wait is made
of such blocks; 0.05 s was seen to miss the deadline."""


def wait_budget(asked_seconds: float, maximum_seconds: float, context: grpc.ServicerContext) -> float:
    """What the call asked, at most the server's maximum, ending `DEADLINE_MARGIN_SECONDS` before its
    deadline (0 when the deadline is closer than that)."""
    budget = min(asked_seconds, maximum_seconds)
    remaining = context.time_remaining()
    if remaining is not None:
        budget = min(budget, max(0.0, remaining - DEADLINE_MARGIN_SECONDS))
    return budget
