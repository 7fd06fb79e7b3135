"""The script-side Event.* operations: `emit(name, data)` (alias `publish`), `subscribe(pattern)`,
`receive(subscription, timeout_ms)` and `unsubscribe(subscription)`, as EventService calls.

`receive` waits at most the asked time (default 0: answer at once), never past the job's call
timeout or its wall deadline, and returns the event as a table/object
`{id, name, session_id, job_id, timestamp, data}`, or nil when none came. `Event.on(pattern, fn)`
arrives here without their function (the engine keeps it and runs it
after later calls, see docs/architecture.md#events): only the subscription crosses the wire.
"""

from __future__ import annotations

import math

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import events_pb2
from scriptpool.values import PlainValue, from_value, to_value
from scriptpool.workers.bridge.args import string_arg
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers

MAX_RECEIVE_MS = 60_000


def _emit(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    name = string_arg(args[0] if args else None, f"{op}: name")
    if not name:
        raise InvalidArgument(f"{op}: an event name is required")
    data = args[1] if len(args) > 1 else None
    bridge.unary(bridge.events.Emit, events_pb2.EmitEventRequest(name=name, data=to_value(data)))
    return True


def subscribe(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    pattern = string_arg(args[0] if args else None, f"{op}: pattern") or "*"
    subscription: events_pb2.Subscription = bridge.unary(
        bridge.events.Subscribe, events_pb2.SubscribeRequest(pattern=pattern)
    )
    return subscription.subscription_id


def _subscription_id(value: PlainValue, op: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("subscription_id"), str):
        return str(value["subscription_id"])
    subscription_id = string_arg(value, f"{op}: subscription")
    if not subscription_id:
        raise InvalidArgument(f"{op}: a subscription id (from Event.subscribe) is required")
    return subscription_id


def _receive(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    subscription_id = _subscription_id(args[0] if args else None, op)
    asked = args[1] if len(args) > 1 and args[1] is not None else 0
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 0 <= asked < math.inf:
        raise InvalidArgument(f"{op}: timeout_ms must be a finite number of milliseconds >= 0")
    room_ms = (bridge.call_time_left() - 0.25) * 1000  # the answer must still come back in time
    timeout_ms = int(max(0.0, min(asked, MAX_RECEIVE_MS, room_ms)))  # (no float(): an int may be huge)
    answer: events_pb2.ReceiveResponse = bridge.unary(
        bridge.events.Receive, events_pb2.ReceiveRequest(subscription_id=subscription_id, timeout_ms=timeout_ms)
    )
    if not answer.received:
        return None
    event = answer.event
    return {
        "id": event.id,
        "name": event.name,
        "session_id": event.session_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
        "data": from_value(event.data),
    }


def unsubscribe(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    subscription_id = _subscription_id(args[0] if args else None, op)
    bridge.unary(bridge.events.Unsubscribe, events_pb2.Subscription(subscription_id=subscription_id))
    return True


HANDLERS: Handlers = {
    "Event.on": subscribe,  # the wire half of Event.on(pattern, fn): the engine keeps `fn`
    "Event.emit": _emit,
    "Event.subscribe": subscribe,
    "Event.receive": _receive,
    "Event.unsubscribe": unsubscribe,
}

__all__ = ["HANDLERS", "subscribe", "unsubscribe"]
