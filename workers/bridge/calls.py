"""The one interface the five globals' handlers (Session, Artifact, State, Hook, Event) work through.

A handler turns one script call (`op`, its plain arguments) into coordinator calls and a plain
answer. It sees the job's bridge only as `BridgeCalls`: the coordinator's stubs, `unary` to make
one call with the job's credential (on the job's call stream when it has one), the job's current
session, the time a call may still take, the job's artifact byte budgets and its event book (its
hooks, subscriptions and event counts). Nothing else of
`CoordinatorBridge` (workers/bridge/host.py) is theirs to touch; a test checks that no handler module
uses a private name of the bridge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from scriptpool.v1 import artifacts_pb2_grpc, events_pb2_grpc, sessions_pb2_grpc, state_pb2_grpc
from scriptpool.values import PlainValue
from scriptpool.workers.bridge.event_book import EventBook


class BridgeCalls(Protocol):
    """What a global's handler may use of the job's bridge."""

    sessions: sessions_pb2_grpc.SessionServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    state: state_pb2_grpc.StateServiceStub
    events: events_pb2_grpc.EventServiceStub
    current_session: str
    """The job's current session id ("" when it has none); `Session.setCurrent` changes it."""
    content_bytes_limit: int | None
    """The most artifact content one read may hand the script (its memory limit), None for no bound."""
    event_book: EventBook
    """The job's hooks, event subscriptions and event counts (workers/bridge/event_book.py)."""

    def unary(self, method: Callable[..., Any], request: Any) -> Any:
        """One coordinator call (a stub's method and its request, or request iterator for a
        client-streaming call) with the job's credential and the time the job has left."""
        ...

    def call_time_left(self) -> float:
        """Seconds one call may take from now: the call timeout, capped by the job's wall deadline."""
        ...

    def charge_artifact_bytes(self, size: int, op: str) -> None:
        """Count `size` bytes against the job's `artifact_bytes` limit, or refuse (RESOURCE_EXHAUSTED)."""
        ...


Handler = Callable[[BridgeCalls, str, list[PlainValue]], PlainValue]
"""One global operation: (the bridge, the operation's name as the script called it, its arguments)."""

Handlers = Mapping[str, Handler]

__all__ = ["BridgeCalls", "Handler", "Handlers"]
