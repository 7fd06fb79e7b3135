"""EventService: `Event.emit/subscribe/receive/unsubscribe` for scripts and clients, and a live
stream of events for clients. Each principal sees only its own events (coordinator/stores/events.py).

A job's emitted event carries its current session (the one it was submitted with, or the one it
chose with `Session.setCurrent`). Every call a job makes is recorded on its session's timeline.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller, KeyStillValid
from scriptpool.coordinator.services.recording import recorded
from scriptpool.coordinator.services.slots import Slots
from scriptpool.coordinator.services.wait_budget import wait_budget
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.events import EventStore
from scriptpool.coordinator.stores.sessions import job_current_session
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2, events_pb2, events_pb2_grpc


@grpc_service(events_pb2.DESCRIPTOR.services_by_name["EventService"])
class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(
        self, auth: Authenticator, store: EventStore, max_wait_seconds: float, max_streams: int, waiting: WaitingCalls
    ) -> None:
        self.auth = auth
        self.waiting = waiting
        self.store = store
        self.max_wait_seconds = max_wait_seconds
        self.streams = Slots(max_streams, "event streams", "use Subscribe and Receive, or retry later")

    @property
    def timeline_redis(self) -> Redis:
        return self.store.redis

    @recorded("Event.emit")
    def Emit(self, caller: Caller, request: events_pb2.EmitEventRequest) -> common_pb2.Empty:
        self.store.emit(caller, request.name, request.data, self._current_session(caller))
        return common_pb2.Empty()

    @recorded("Event.subscribe")
    def Subscribe(self, caller: Caller, request: events_pb2.SubscribeRequest) -> events_pb2.Subscription:
        return self.store.subscribe(caller, request.pattern, session_id=request.session_id)

    @recorded("Event.receive", with_context=True)
    def Receive(
        self, caller: Caller, request: events_pb2.ReceiveRequest, context: grpc.ServicerContext
    ) -> events_pb2.ReceiveResponse:
        timeout = wait_budget(request.timeout_ms / 1000.0, self.max_wait_seconds, context)
        if timeout > 0:
            with self.waiting.hold(caller, blocks_on_redis=True):
                event = self.store.receive(caller, request.subscription_id, timeout, context.is_active)
        else:
            event = self.store.receive(caller, request.subscription_id, timeout, context.is_active)
        if event is None:
            return events_pb2.ReceiveResponse(received=False)
        return events_pb2.ReceiveResponse(event=event, received=True)

    @recorded("Event.unsubscribe")
    def Unsubscribe(self, caller: Caller, request: events_pb2.Subscription) -> common_pb2.Empty:
        self.store.unsubscribe(caller, request.subscription_id)
        return common_pb2.Empty()

    def Stream(self, request: events_pb2.SubscribeRequest, context: grpc.ServicerContext) -> Iterator[events_pb2.Event]:
        caller = self.auth.caller(context)
        caller.require_client("EventService.Stream")
        if not request.pattern:
            raise InvalidArgument("pattern is required, e.g. '*' for every event")
        key_holds = KeyStillValid(self.auth, caller)  # a revoked or expired key ends the stream within seconds
        with self.streams.hold(), self.waiting.hold(caller):
            yield from self.store.follow(
                caller, request.pattern, lambda: context.is_active() and key_holds(), request.session_id
            )
        key_holds.check()

    def _current_session(self, caller: Caller) -> str:
        return job_current_session(self.store.redis, caller) if caller.is_job else ""


__all__ = ["EventServicer"]
