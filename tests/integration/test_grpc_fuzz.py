"""Fuzz target: every RPC of the coordinator's API with random and boundary requests (issue 13, item 5).

For each method of every scriptpool service, requests are drawn from its message type: every field
may be set to a boundary value (NaN, +-inf, -0.0, the largest uint64, the smallest int64, unknown
enum numbers, empty and 100 000-character strings, odd Unicode, deep values), or the request is raw
bytes (noise, text fields that are not UTF-8 such as an encoded lone surrogate, nesting deeper than
protobuf parses). Each call must answer before its deadline with OK or a status a person can act
on (never INTERNAL, UNKNOWN or UNAVAILABLE), and the coordinator must still answer a normal call
after each. Hypothesis runs derandomized with a fixed number of examples, against a real
coordinator on loopback (with a short maximum wait, so that legal waits end quickly).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores.api_keys import ALL_SCOPES
from scriptpool.v1 import (
    admin_pb2,
    artifacts_pb2,
    calls_pb2,
    common_pb2,
    events_pb2,
    jobs_pb2,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2,
)
from scriptpool.values import to_value

FUZZ = settings(
    max_examples=1000, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)  # fmt: skip
CALL_DEADLINE_SECONDS = 10.0
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
STREAMS_UNTIL_CANCELLED = {"/scriptpool.v1.EventService/Stream"}  # (ends at its deadline, by design)

METHODS: list[tuple[str, MethodDescriptor]] = [
    (f"/{service.full_name}/{method.name}", method)
    for module in (jobs_pb2, sessions_pb2, artifacts_pb2, state_pb2, events_pb2, calls_pb2, admin_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]

# ------------------------------------------------------------------ boundary values per field type
D = FieldDescriptor
FLOATS = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-3, -1.0, 1e308, 5e-324]) | st.floats()
NUMBERS: dict[int, st.SearchStrategy[Any]] = {
    D.TYPE_DOUBLE: FLOATS,
    D.TYPE_FLOAT: st.sampled_from([math.nan, math.inf, 0.0, -1.0]),
    D.TYPE_INT32: st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]),
    D.TYPE_SINT32: st.sampled_from([0, -1, 2**31 - 1, -(2**31)]),
    D.TYPE_INT64: st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    D.TYPE_SINT64: st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
    D.TYPE_UINT32: st.sampled_from([0, 1, 1000, 1001, 2**32 - 1]),
    D.TYPE_UINT64: st.sampled_from([0, 1, 2**63, 2**64 - 1]),
    D.TYPE_FIXED64: st.sampled_from([0, 2**64 - 1]),
    D.TYPE_BOOL: st.booleans(),
}
STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", "x" * 100_000, "\x00", "ünï ✓ \U0001f600", "\U0010ffff", "../../etc/passwd", "*", "global",
         "session", "2026-01-31T12:00:00Z", "lua", "return 1"]
    ),
    st.builds(lambda: str(uuid.uuid4())),
)  # fmt: skip
BYTES = st.binary(max_size=50) | st.just(b"x" * 100_000)
SCALAR_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), FLOATS, st.text(max_size=10),
    st.binary(max_size=10),
)  # fmt: skip
PLAIN_VALUES = st.recursive(
    SCALAR_VALUES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)


def _deep_value(levels: int) -> common_pb2.Value:
    value = common_pb2.Value(int_value=1)
    for _ in range(levels):
        value = common_pb2.Value(list_value=common_pb2.ValueList(items=[value]))
    return value


VALUES = st.one_of(PLAIN_VALUES.map(to_value), st.sampled_from([32, 33, 45]).map(_deep_value))


def _value_map(value: common_pb2.Value) -> common_pb2.ValueMap:
    return common_pb2.ValueMap(fields={"k": value})


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == D.TYPE_STRING:
        return STRINGS
    if fd.type == D.TYPE_BYTES:
        return BYTES
    if fd.type == D.TYPE_ENUM and fd.enum_type is not None:
        return st.sampled_from([v.number for v in fd.enum_type.values] + [99, -1])
    return NUMBERS[fd.type]


def _single(fd: FieldDescriptor, budget: int) -> st.SearchStrategy[Any] | None:
    held: Descriptor | None = fd.message_type
    if held is None:
        return _scalar(fd)
    if held.full_name == "scriptpool.v1.Value":
        return VALUES
    if held.full_name == "scriptpool.v1.ValueMap":
        return VALUES.map(_value_map)
    if budget <= 0:
        return None
    return messages(held, budget - 1)


def messages(descriptor: Descriptor, budget: int = 2) -> st.SearchStrategy[Message]:
    message_class = GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_strategy = _single(fd.message_type.fields_by_name["value"], budget)
            if value_strategy is not None:
                optional[fd.name] = st.dictionaries(_scalar(key_fd), value_strategy, max_size=3)
            continue
        one = _single(fd, budget)
        if one is None:
            continue
        optional[fd.name] = st.lists(one, max_size=3) if fd.is_repeated else one
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: _build(message_class, fields))


def _build(message_class: type[Message], fields: dict[str, Any]) -> Message:
    message = message_class()
    for name, value in fields.items():
        held = getattr(message, name)
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, Message):
                        held[key].CopyFrom(item)
                    else:
                        held[key] = item
            elif isinstance(value, list):
                if value and isinstance(value[0], Message):
                    held.extend(value)
                else:
                    held.extend(value)
            elif isinstance(value, Message):
                held.CopyFrom(value)
            else:
                setattr(message, name, value)
        except (ValueError, TypeError):
            pass  # a value this field cannot hold (protobuf refuses it here already): leave it unset
    return message


# ------------------------------------------------------------------ raw requests
def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _first_string_field(descriptor: Descriptor) -> int:
    return next((fd.number for fd in descriptor.fields if fd.type == D.TYPE_STRING), 1)


def raw_requests(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    number = _first_string_field(descriptor)
    lone_surrogate = b"\xed\xa0\x80"  # U+D800 as UTF-8 would encode it: not valid UTF-8
    not_utf8 = _varint(number << 3 | 2) + _varint(3) + lone_surrogate
    deep = b""
    for _ in range(120):  # nested groups of length-delimited fields deeper than protobuf parses
        deep = _varint(number << 3 | 2) + _varint(len(deep)) + deep
    return st.one_of(st.binary(max_size=200), st.sampled_from([not_utf8, deep, b"\xff" * 10, b""]))


def requests_for(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    return st.one_of(
        messages(method.input_type).map(lambda m: m.SerializeToString()),
        raw_requests(method.input_type),
    )


# ------------------------------------------------------------------ the coordinator under fuzz
@pytest.fixture(scope="module")
def fuzzed(redis_server: PrivateRedis) -> Iterator[tuple[RunningCoordinator, grpc.Channel, str]]:
    settings_ = Settings(
        redis_url=redis_server.url, listen="127.0.0.1:0", queue=f"fuzz-{uuid.uuid4().hex[:8]}", max_wait_seconds=1
    )
    running = start_coordinator(settings_)
    key = running.auth.create_api_key(f"fuzz-{uuid.uuid4().hex[:8]}", scopes=ALL_SCOPES)  # (AdminService too)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield running, channel, key
    finally:
        channel.close()
        running.stop(grace=0)


def _call(channel: grpc.Channel, path: str, method: MethodDescriptor, requests: list[bytes], key: str) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    options: dict[str, Any] = {"metadata": metadata, "timeout": CALL_DEADLINE_SECONDS}
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path, None, None)(iter(requests), **options))
    elif method.client_streaming:
        channel.stream_unary(path, None, None)(iter(requests), **options)
    elif method.server_streaming:
        list(channel.unary_stream(path, None, None)(requests[0], **options))
    else:
        channel.unary_unary(path, None, None)(requests[0], **options)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, MethodDescriptor, list[bytes]]:
    path, method = draw(st.sampled_from(METHODS))
    count = draw(
        st.integers(min_value=0 if method.client_streaming else 1, max_value=3 if method.client_streaming else 1)
    )
    return path, method, [draw(requests_for(method)) for _ in range(count)]


def test_every_method_is_fuzzed() -> None:
    assert len(METHODS) >= 59  # every RPC of the seven services


@FUZZ
@given(call=calls())
def test_no_request_crashes_or_hangs_the_coordinator(
    fuzzed: tuple[RunningCoordinator, grpc.Channel, str], call: tuple[str, MethodDescriptor, list[bytes]]
) -> None:
    _, channel, key = fuzzed
    path, method, requests = call
    try:
        _call(channel, path, method, requests, key)
    except grpc.RpcError as exc:
        code = exc.code()
        assert code not in REFUSED, (path, code, exc.details())
        if path not in STREAMS_UNTIL_CANCELLED:
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, (path, exc.details())
    # the coordinator still answers a normal call
    sessions = sessions_pb2_grpc.SessionServiceStub(channel)
    listed = sessions.List(
        sessions_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=10
    )
    assert listed is not None
