"""Every global call a running job makes is appended to its session's timeline, with its outcome.

`@recorded("Session.get")` on a servicer method authenticates the caller, calls the method with the
`Caller` instead of the gRPC context, and records the call for job callers (clients are not
recorded). The servicer provides `auth` and `timeline_redis`.

`@recorded("State.get", records_itself=True)` also hands the method a `timeline.CallRecord`: the
method appends the entry in the same Redis script as its work (one round trip instead of two) and
marks it written. Whatever fails before that script ran (validation) is still recorded here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from redis import Redis

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import timeline
from scriptpool.errors import ScriptpoolError

R = TypeVar("R")


def record_job_call(redis: Redis, caller: Caller, op: str, outcome: str) -> None:
    if caller.is_job and caller.session_id:
        timeline.append(
            redis, caller.session_id, "global_call", f"{op} -> {outcome}", job_id=caller.job_id,
            data={"op": op, "outcome": outcome},
        )  # fmt: skip


def recorded(
    op: str, *, records_itself: bool = False, with_context: bool = False
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """`with_context=True` also hands the method the call's context (a method that waits ends its
    wait when the call does)."""

    def decorate(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
            caller = self.auth.caller(context)
            record = timeline.CallRecord(op, caller.job_id, caller.session_id) if records_itself else None
            try:
                if with_context:
                    result = method(self, caller, request, context)
                elif record:
                    result = method(self, caller, request, record)
                else:
                    result = method(self, caller, request)
            except ScriptpoolError as exc:
                if record is None or not record.written:
                    record_job_call(self.timeline_redis, caller, op, exc.code)
                raise
            if record is None or not record.written:
                record_job_call(self.timeline_redis, caller, op, "OK")
            return result

        return wrapper

    return decorate
