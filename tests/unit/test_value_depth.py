"""The value depth limit (`scriptpool.values.MAX_DEPTH`) is one number every hop can carry.

protobuf parses with a recursion limit of 100 message levels, and each nesting level of a Value costs
2 (a list: Value, ValueList) or 3 (a map: Value, ValueMap, its entry). A limit of 64 levels was
documented while a 49-level list returned by a script failed to parse in the worker
(sandbox_violation). These tests put a value of exactly MAX_DEPTH maps into every message that can
carry a Value (the child's frames, every RPC's request and response, the job records in Redis) and
parse it as each hop does; one level more is refused with INVALID_ARGUMENT where values enter.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from scriptpool.coordinator.request_checks import check_request
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2, events_pb2, jobs_pb2, state_pb2
from scriptpool.values import MAX_DEPTH, PlainValue, to_value

PROTO_MODULES = ("artifacts", "calls", "common", "events", "jobs", "sandbox", "sessions", "state")
VALUE_TYPES = {"scriptpool.v1.Value", "scriptpool.v1.ValueMap", "scriptpool.v1.ValueList"}


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested(levels: int, kind: str) -> PlainValue:
    value: PlainValue = 1
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


def _value_bytes(levels: int, kind: str) -> bytes:
    """A Value nesting `levels` lists or maps, serialized by hand (building it could not check anything)."""
    data = common_pb2.Value(int_value=1).SerializeToString()
    for _ in range(levels):
        if kind == "list":
            data = _field(7, _field(1, data))
        else:
            data = _field(8, _field(1, _field(1, b"k") + _field(2, data)))
    return data


def _as(held: str, value: bytes) -> bytes:
    """A Value's bytes as the type a field holds (a ValueMap holds it under one key)."""
    if held == "scriptpool.v1.Value":
        return value
    if held == "scriptpool.v1.ValueMap":
        return _field(1, _field(1, b"k") + _field(2, value))
    return _field(1, value)  # ValueList


def _envelopes(descriptor: Descriptor, seen: tuple[str, ...] = ()) -> Iterator[tuple[list[int], str, str]]:
    """Every path of field numbers from `descriptor` to a field holding a Value type (and that type)."""
    for fd in descriptor.fields:
        held: Descriptor | None = fd.message_type
        if held is None or held.full_name in seen:
            continue
        numbers = [fd.number]
        if held.GetOptions().map_entry:
            numbers.append(2)
            held = held.fields_by_name["value"].message_type
            if held is None:
                continue
        if held.full_name in VALUE_TYPES:
            yield numbers, held.full_name, fd.full_name
        else:
            for rest, kind, name in _envelopes(held, (*seen, descriptor.full_name)):
                yield numbers + rest, kind, name


def _all_carriers() -> Iterator[tuple[str, type[Message], list[int], str]]:
    for module_name in PROTO_MODULES:
        module = importlib.import_module(f"scriptpool.v1.{module_name}_pb2")
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            if descriptor.full_name in VALUE_TYPES:
                continue
            for numbers, held, name in _envelopes(descriptor):
                yield f"{descriptor.name}:{name}", GetMessageClass(descriptor), numbers, held


CARRIERS = list(_all_carriers())


def test_there_are_carriers_to_check() -> None:
    names = {name.split(":")[0] for name, *_ in CARRIERS}
    assert {"ChildFrame", "WorkerFrame", "ListJobsResponse", "HookFirings", "SetStateRequest"} <= names


@pytest.mark.parametrize("kind", ["map", "list"])
def test_every_message_carries_a_value_of_max_depth(kind: str) -> None:
    for name, message_class, numbers, held in CARRIERS:
        data = _as(held, _value_bytes(MAX_DEPTH - (held != "scriptpool.v1.Value"), kind))
        for number in reversed(numbers):
            data = _field(number, data)
        message_class.FromString(data)  # raises DecodeError if a hop could not parse it
        assert name


def _empty_innermost(levels: int) -> PlainValue:
    value: PlainValue = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_to_value_takes_max_depth_and_refuses_one_more() -> None:
    """Containers count, empty or not: `[[]]` is 2 levels, like `[[1]]`."""
    to_value(nested(MAX_DEPTH, "map"))
    to_value(_empty_innermost(MAX_DEPTH))
    for too_deep in (nested(MAX_DEPTH + 1, "map"), _empty_innermost(MAX_DEPTH + 1)):
        with pytest.raises(InvalidArgument, match=f"nested deeper than {MAX_DEPTH} levels"):
            to_value(too_deep)


def _raw_value(levels: int) -> common_pb2.Value:
    return common_pb2.Value.FromString(_value_bytes(levels, "list"))


def test_the_coordinator_refuses_a_value_one_level_too_deep_in_any_request() -> None:
    inputs = common_pb2.ValueMap(fields={"k": _raw_value(MAX_DEPTH - 1)})
    check_request(jobs_pb2.SubmitJobsRequest(jobs=[jobs_pb2.SubmitJobRequest(inputs=inputs)]))
    check_request(state_pb2.SetStateRequest(value=_raw_value(MAX_DEPTH)))
    check_request(events_pb2.EmitEventRequest(data=_raw_value(MAX_DEPTH)))
    too_deep = common_pb2.ValueMap(fields={"k": _raw_value(MAX_DEPTH)})
    with pytest.raises(InvalidArgument, match=r"SubmitJobsRequest.jobs.inputs is nested more than 32 levels"):
        check_request(jobs_pb2.SubmitJobsRequest(jobs=[jobs_pb2.SubmitJobRequest(inputs=too_deep)]))
    with pytest.raises(InvalidArgument, match=r"SetStateRequest.value is nested more than 32"):
        check_request(state_pb2.SetStateRequest(value=_raw_value(MAX_DEPTH + 1)))
    with pytest.raises(InvalidArgument, match=r"EmitEventRequest.data is nested more than 32"):
        check_request(events_pb2.EmitEventRequest(data=_raw_value(MAX_DEPTH + 1)))


def test_field_ranges_cover_every_double_a_request_holds() -> None:
    """A new double field in a request gets a range in FIELD_RANGES (else it is only checked finite)."""
    from scriptpool.coordinator.request_checks import FIELD_RANGES, _plan
    from scriptpool.coordinator.server import SERVICE_NAMES

    doubles: set[str] = set()
    for module_name in PROTO_MODULES:
        module = importlib.import_module(f"scriptpool.v1.{module_name}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name not in SERVICE_NAMES:
                continue
            for method in service.methods:
                doubles |= _doubles(_plan(method.input_type))
    assert doubles == set(FIELD_RANGES)


def _doubles(plan: object) -> set[str]:
    found = {fd.full_name for fd in plan.doubles}  # type: ignore[attr-defined]
    for _, _, sub_plan in plan.messages:  # type: ignore[attr-defined]
        found |= _doubles(sub_plan)
    return found
