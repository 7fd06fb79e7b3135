"""HookService for clients: register for hook points and poll their firings.

A hook point is an event name (`session.created`, `artifact.stored`, `state.changed`, ...;
`scriptpool.sandbox.catalog.HOOK_POINTS`, fired by the coordinator; or one of rs-llmspell's,
`RS_HOOK_POINTS`, fired by any emit of that name), so a registration is an event subscription to that name
(coordinator/stores/events.py), listed per principal in `sp:hooks:{principal}`. `Poll` drains every
registration's new firings, at most `max_poll_firings` per call (the rest stay for the next Poll),
waiting up to `timeout_seconds` for the first (blocked on the principal's stream, not polling it).
One Poll reads at most `max_event_scan` stream entries across all its hooks (each hook gets a
share; a hook that needs less leaves the rest to the next), so it may return no firings early
while its hooks are behind a long run of other events: the next Poll continues after them. Scripts have their own
`Hook.register(point, fn)`, which runs `fn` in the script (docs/architecture.md#events); this
service is for clients' API keys.
"""

from __future__ import annotations

import time

import grpc
from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.wait_budget import wait_budget
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.events import EventStore
from scriptpool.coordinator.stores.not_found import hook_not_found
from scriptpool.core.job_records import hash_fields
from scriptpool.core.keys import hooks_key
from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.sandbox.catalog import HOOK_POINTS, RS_HOOK_POINTS
from scriptpool.v1 import common_pb2, events_pb2, events_pb2_grpc

MAX_HOOKS_PER_PRINCIPAL = 100


@grpc_service(events_pb2.DESCRIPTOR.services_by_name["HookService"])
class HookServicer(events_pb2_grpc.HookServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        events: EventStore,
        max_wait_seconds: float,
        max_poll_firings: int,
        waiting: WaitingCalls,
    ) -> None:
        self.auth = auth
        self.waiting = waiting
        self.events = events
        self.max_wait_seconds = max_wait_seconds
        self.max_poll_firings = max_poll_firings
        """Firings one Poll returns (settings.max_poll_firings); the rest wait for the next Poll."""

    @property
    def redis(self) -> Redis:
        return self.events.redis

    def _client(self, context: grpc.ServicerContext, what: str) -> Caller:
        caller = self.auth.caller(context)
        caller.require_client(f"HookService.{what} (a script registers hooks with Hook.register)")
        return caller

    def Register(
        self, request: events_pb2.RegisterHookRequest, context: grpc.ServicerContext
    ) -> events_pb2.HookRegistration:
        caller = self._client(context, "Register")
        if request.hook_point not in HOOK_POINTS and request.hook_point not in RS_HOOK_POINTS:
            raise InvalidArgument(
                f"unknown hook point {request.hook_point[:60]!r}; one of: {', '.join(HOOK_POINTS)}, "
                f"or an rs-llmspell point: {', '.join(RS_HOOK_POINTS)}"
            )
        # counted and added in the subscription's own script: concurrent Registers cannot pass the limit
        subscription = self.events.subscribe(
            caller, request.hook_point, hooks_key(caller.principal), MAX_HOOKS_PER_PRINCIPAL
        )
        return events_pb2.HookRegistration(hook_id=subscription.subscription_id, hook_point=request.hook_point)

    def Unregister(self, request: events_pb2.HookRef, context: grpc.ServicerContext) -> common_pb2.Empty:
        caller = self._client(context, "Unregister")
        if not self.redis.hdel(hooks_key(caller.principal), request.hook_id):
            raise hook_not_found(request.hook_id)  # another principal's hook: the same answer (ADR 0017)
        try:
            self.events.unsubscribe(caller, request.hook_id)
        except NotFound:
            pass  # its subscription had expired already
        return common_pb2.Empty()

    def List(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> events_pb2.HookList:
        caller = self._client(context, "List")
        hooks = [events_pb2.HookRegistration(hook_id=i, hook_point=p) for i, p in self._registrations(caller).items()]
        return events_pb2.HookList(hooks=sorted(hooks, key=lambda h: (h.hook_point, h.hook_id)))

    def Poll(self, request: events_pb2.PollHooksRequest, context: grpc.ServicerContext) -> events_pb2.HookFirings:
        caller = self._client(context, "Poll")  # (timeout_seconds is checked finite, >= 0: request_checks)
        if request.timeout_seconds <= 0:
            return self._poll(caller, request, context)
        with self.waiting.hold(caller, blocks_on_redis=True):
            return self._poll(caller, request, context)

    def _poll(
        self, caller: Caller, request: events_pb2.PollHooksRequest, context: grpc.ServicerContext
    ) -> events_pb2.HookFirings:
        give_up = time.monotonic() + wait_budget(request.timeout_seconds, self.max_wait_seconds, context)
        firings = events_pb2.HookFirings()
        hook_ids = list(self._registrations(caller))
        budget = self.events.max_scan  # stream entries this call may read, across every hook and pass
        while True:
            tip = self.events.tip(caller.principal)
            for place, hook_id in enumerate(hook_ids):
                wanted = self.max_poll_firings - len(firings.firings)
                if wanted <= 0 or budget <= 0:
                    break
                share = max(1, budget // (len(hook_ids) - place))  # what earlier hooks left goes on
                events, read = self.events.receive_many(caller, hook_id, wanted, share)
                budget -= read
                firings.firings.extend(events_pb2.HookFiring(hook_id=hook_id, context=_context(e)) for e in events)
            if firings.firings or budget <= 0 or time.monotonic() >= give_up or not context.is_active():
                return firings
            if not self.events.wait_past(caller.principal, tip, give_up, context.is_active):  # blocks, no polling
                return firings
            budget -= 1

    def _registrations(self, caller: Caller) -> dict[str, str]:
        """hook id -> point, without the ones whose subscription expired (an hour unused)."""
        key = hooks_key(caller.principal)
        found = {hook_id: point.decode() for hook_id, point in hash_fields(self.redis.hgetall(key)).items()}
        live = {}
        for hook_id, point in found.items():
            if self.events.exists(hook_id):
                live[hook_id] = point
            else:
                self.redis.hdel(key, hook_id)
        return live


def _context(event: events_pb2.Event) -> events_pb2.HookContext:
    context = events_pb2.HookContext(
        hook_point=event.name, session_id=event.session_id, job_id=event.job_id, timestamp=event.timestamp
    )
    if event.data.HasField("map_value"):
        fields = event.data.map_value.fields
        context.data.CopyFrom(event.data.map_value)
        for name in ("artifact_id", "old_state", "new_state"):
            if name in fields and fields[name].HasField("string_value"):
                setattr(context, name, fields[name].string_value)
    return context


__all__ = ["HookServicer"]
