"""Checks every RPC's request gets before its handler runs, in one place (`scriptpool.coordinator.status`).

- Every `double` field of a request (timeouts, waits, replay speed) must be finite and inside its
  range: NaN passes a `< 0` check and a NaN deadline never arrives, so a waiting call would spin
  past its own deadline. `FIELD_RANGES` gives each field's range; a double field missing from it
  (a new one) is still refused when not finite.
- Every `Value` in a request is at most `scriptpool.values.MAX_DEPTH` levels deep, the depth every
  hop (child frame, gRPC, Redis, back to the script) can carry.

`Value.float_value` is data, not a setting: infinities and NaN round-trip exactly (State, events),
so they are not checked here. Which fields to look at is worked out once per message type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2
from scriptpool.values import MAX_DEPTH

MAX_WAIT_FIELD_SECONDS = 86_400.0
"""The largest wait a request may ask for (a day); the server's `max_wait_seconds` caps it further."""
MAX_REPLAY_SPEED = 1_000.0
"""The largest `ReplayRequest.speed` (a factor on the recorded gaps, each capped by the replay)."""

FIELD_RANGES: dict[str, tuple[float, float]] = {
    "scriptpool.v1.PollHooksRequest.timeout_seconds": (0.0, MAX_WAIT_FIELD_SECONDS),
    "scriptpool.v1.SubmitJobRequest.wait_seconds": (0.0, MAX_WAIT_FIELD_SECONDS),
    "scriptpool.v1.SubmitJobsRequest.wait_seconds": (0.0, MAX_WAIT_FIELD_SECONDS),
    "scriptpool.v1.WaitJobRequest.timeout_seconds": (0.0, MAX_WAIT_FIELD_SECONDS),
    "scriptpool.v1.ReplayRequest.speed": (0.0, MAX_REPLAY_SPEED),
}

_VALUE = common_pb2.Value.DESCRIPTOR.full_name
_VALUE_MAP = common_pb2.ValueMap.DESCRIPTOR.full_name
_VALUE_LIST = common_pb2.ValueList.DESCRIPTOR.full_name
_VALUE_TYPES = (_VALUE, _VALUE_MAP, _VALUE_LIST)


SINGLE, REPEATED, MAP = 0, 1, 2
"""How a message field holds its messages."""


@dataclass
class _Plan:
    """The fields of one message type worth looking at: (name, how held[, the held type's plan])."""

    doubles: list[FieldDescriptor] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)  # Value / ValueMap / ValueList fields
    messages: list[tuple[str, int, _Plan]] = field(default_factory=list)  # sub-messages that hold either

    def empty(self) -> bool:
        return not (self.doubles or self.values or self.messages)


_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor.full_name] = _Plan()  # (placed first: a recursive type ends here)
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_DOUBLE:
            plan.doubles.append(fd)
            continue
        held: Descriptor | None = fd.message_type
        if held is None:
            continue
        how = REPEATED if fd.is_repeated else SINGLE
        if held.GetOptions().map_entry:
            how, held = MAP, held.fields_by_name["value"].message_type
            if held is None:
                continue
        if held.full_name in _VALUE_TYPES:
            plan.values.append((fd.name, how))
        elif not (sub_plan := _plan(held)).empty():
            plan.messages.append((fd.name, how, sub_plan))
    return plan


def _items(message: Message, name: str, how: int) -> list[Message]:
    held = getattr(message, name)
    if how == MAP:
        return list(held.values())
    if how == REPEATED:
        return list(held)
    return [held] if message.HasField(name) else []


def check_request(request: Message) -> None:
    """Raise InvalidArgument naming the first field of `request` out of range or too deep."""
    descriptor: Descriptor = request.DESCRIPTOR  # type: ignore[assignment]
    _check(request, _plan(descriptor), descriptor.name)


def _check(message: Message, plan: _Plan, where: str) -> None:
    for fd in plan.doubles:
        number: float = getattr(message, fd.name)
        low, high = FIELD_RANGES.get(fd.full_name, (-math.inf, math.inf))
        if not math.isfinite(number) or not low <= number <= high:
            span = f"from {low:g} to {high:g}" if math.isfinite(high) else "a finite number"
            raise InvalidArgument(f"{where}.{fd.name} must be {span} (got {number!r})")
    for name, how in plan.values:
        for item in _items(message, name, how):
            if item.ByteSize() >= 2 * (MAX_DEPTH + 1) and _deeper_than(item, MAX_DEPTH):
                raise InvalidArgument(f"{where}.{name} is nested more than {MAX_DEPTH} levels deep (the maximum)")
    for name, how, sub_plan in plan.messages:
        for item in _items(message, name, how):
            _check(item, sub_plan, f"{where}.{name}")


def _deeper_than(message: Message, room: int) -> bool:
    """Whether a Value, ValueMap or ValueList nests more than `room` lists and maps (each is a level).
    (Each level costs at least 2 bytes, so the caller skips values too small to be too deep.)"""
    if isinstance(message, common_pb2.Value):
        kind = message.WhichOneof("kind")
        if kind == "list_value":
            return _deeper_than(message.list_value, room)
        if kind == "map_value":
            return _deeper_than(message.map_value, room)
        return False
    if room == 0:
        return True
    items = message.fields.values() if isinstance(message, common_pb2.ValueMap) else message.items  # type: ignore[attr-defined]
    return any(item.WhichOneof("kind") in _CONTAINERS and _deeper_than(item, room - 1) for item in items)


_CONTAINERS = ("list_value", "map_value")


__all__ = ["FIELD_RANGES", "check_request"]
