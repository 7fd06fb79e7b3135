"""The script-side Event.* operations: `emit(name, data)` (alias `publish`), `subscribe(pattern)`,
`receive(subscription, timeout_ms)`, `unsubscribe(subscription)` as EventService calls, and
`listSubscriptions()` and `getStats()` from the job's event book (workers/bridge/event_book.py).

`receive` waits at most the asked time (default 0: answer at once), never past the job's call
timeout or its wall deadline, and returns the event as a table/object
`{id, name, event_type, session_id, job_id, timestamp, timestamp_unix, data}` (`event_type` is the
name, as rs-llmspell calls it; `timestamp` an ISO-8601 string, ADR 0011), or nil when none came.
`unsubscribe` answers false for an id that is unknown or already removed. `Event.on(pattern, fn)`
arrives here without its function (the engine keeps it and runs it after later calls, see
docs/architecture.md#events): only the subscription crosses the wire.
"""

from __future__ import annotations

import math
import re

import grpc

from scriptpool.core.script_times import with_times
from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.grpc_errors import from_rpc_error
from scriptpool.v1 import events_pb2
from scriptpool.values import PlainValue, from_value, to_value
from scriptpool.workers.bridge.args import string_arg
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers

MAX_RECEIVE_MS = 60_000
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _emit(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    name = string_arg(args[0] if args else None, f"{op}: name")
    if not name:
        raise InvalidArgument(f"{op}: an event name is required")
    data = args[1] if len(args) > 1 else None
    bridge.unary(bridge.events.Emit, events_pb2.EmitEventRequest(name=name, data=to_value(data)))
    bridge.event_book.published += 1
    return True


def subscribe_on_wire(bridge: BridgeCalls, op: str, pattern: str) -> str:
    subscription: events_pb2.Subscription = bridge.unary(
        bridge.events.Subscribe, events_pb2.SubscribeRequest(pattern=pattern)
    )
    return subscription.subscription_id


def _subscribe(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    pattern = string_arg(args[0] if args else None, f"{op}: pattern") or "*"
    subscription_id = subscribe_on_wire(bridge, op, pattern)
    bridge.event_book.subscriptions[subscription_id] = pattern
    return subscription_id


def _subscription_id(value: PlainValue, op: str) -> str:
    if isinstance(value, dict):  # a subscription record, or a hook handle (its id is a subscription id)
        for key in ("subscription_id", "hook_id"):
            if isinstance(value.get(key), str):
                return str(value[key])
    subscription_id = string_arg(value, f"{op}: subscription")
    if not subscription_id:
        raise InvalidArgument(f"{op}: a subscription id (from Event.subscribe) is required")
    return subscription_id


def receive_on_wire(bridge: BridgeCalls, subscription_id: str, timeout_ms: int) -> events_pb2.Event | None:
    answer: events_pb2.ReceiveResponse = bridge.unary(
        bridge.events.Receive, events_pb2.ReceiveRequest(subscription_id=subscription_id, timeout_ms=timeout_ms)
    )
    return answer.event if answer.received else None


def _receive(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    subscription_id = _subscription_id(args[0] if args else None, op)
    asked = args[1] if len(args) > 1 and args[1] is not None else 0
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 0 <= asked < math.inf:
        raise InvalidArgument(f"{op}: timeout_ms must be a finite number of milliseconds >= 0")
    room_ms = (bridge.call_time_left() - 0.25) * 1000  # the answer must still come back in time
    timeout_ms = int(max(0.0, min(asked, MAX_RECEIVE_MS, room_ms)))  # (no float(): an int may be huge)
    event = receive_on_wire(bridge, subscription_id, timeout_ms)
    if event is None:
        return None
    bridge.event_book.received += 1
    plain: dict[str, PlainValue] = {
        "id": event.id,
        "name": event.name,
        "event_type": event.name,
        "session_id": event.session_id,
        "job_id": event.job_id,
    }
    with_times(plain, timestamp=event.timestamp)
    plain["data"] = from_value(event.data)
    return plain


def unsubscribe_on_wire(bridge: BridgeCalls, subscription_id: str) -> bool:
    """Remove the subscription; False if the coordinator knows no such subscription of this principal
    (never made, already removed, or expired)."""
    if not _UUID.match(subscription_id):
        return False
    try:
        bridge.unary(bridge.events.Unsubscribe, events_pb2.Subscription(subscription_id=subscription_id))
    except grpc.RpcError as exc:
        if isinstance(from_rpc_error(exc), NotFound):
            return False
        raise
    return True


def _unsubscribe(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    value = args[0] if args else None
    if value is not None and not isinstance(value, (str, dict)):
        return False
    subscription_id = _subscription_id(value, op)
    book = bridge.event_book
    known = book.subscriptions.pop(subscription_id, None) is not None
    known = book.hooks.pop(subscription_id, None) is not None or known
    return unsubscribe_on_wire(bridge, subscription_id) or known


def _list_subscriptions(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    book = bridge.event_book
    return [{"id": i, "pattern": p, "language": book.language} for i, p in book.subscriptions.items()]


def _stats(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    book = bridge.event_book
    active = len(book.subscriptions)
    return {
        "event_bus_stats": {
            "events_processed": book.published + book.received,
            "events_published": book.published,
            "events_received": book.received,
            "rate_limit_violations": 0,
        },
        "bridge_stats": {
            "active_subscriptions": active,
            "active_hooks": len(book.hooks),
            "subscriptions_by_language": {book.language: active} if active else {},
        },
    }


HANDLERS: Handlers = {
    "Event.on": _subscribe,  # the wire half of Event.on(pattern, fn): the engine keeps `fn`
    "Event.emit": _emit,
    "Event.subscribe": _subscribe,
    "Event.receive": _receive,
    "Event.unsubscribe": _unsubscribe,
    "Event.listSubscriptions": _list_subscriptions,
    "Event.getStats": _stats,
}

__all__ = ["HANDLERS", "receive_on_wire", "subscribe_on_wire", "unsubscribe_on_wire"]
