"""Fuzz target: the worker side of the child <-> worker frame protocol (issue 13, item 5).

A fake child (a real `sleep` process for the supervisor to signal and reap, and our end of the
socketpair) writes random and boundary frames: raw bytes, length headers at and past the maximum,
well-formed frames whose bodies are random, and well-formed ChildFrames with odd contents (unknown
outcomes, deep values, huge call ids, odd text). The supervisor must classify every run (a normal
outcome or sandbox_violation), never raise, and never hang: each run ends when the fake child's
stream does. Hypothesis runs derandomized with a fixed number of examples.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox import framing
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
from scriptpool.v1 import common_pb2, sandbox_pb2
from scriptpool.workers.supervision.children import SandboxChild
from scriptpool.workers.supervision.supervisor import ChildRun, supervise

FUZZ = settings(
    max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class EchoHost:
    """Answers every call with its first argument (a value the supervisor must send back)."""

    def __init__(self) -> None:
        self.calls = 0

    def call(self, op: str, args: list[object]) -> object:
        self.calls += 1
        return args[0] if args else None


def _spec(wall_time_ms: int = DEFAULT_LIMITS.wall_time_ms) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=Language.LUA.to_proto(), source="return 1")
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, getattr(DEFAULT_LIMITS, name))
    spec.limits.wall_time_ms = wall_time_ms
    return spec


@pytest.fixture(scope="module")
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:  # reaped by the supervisor: tell Popen so it does not warn
        if proc.returncode is None:
            proc.returncode = -9


def _run_fake_child(data: bytes, procs: list[subprocess.Popen[bytes]], wall_time_ms: int, read: bool) -> ChildRun:
    """Supervise a fake child that writes `data` then ends its stream (reading, or not, what it gets)."""
    proc = subprocess.Popen(["sleep", "60"])
    procs.append(proc)
    worker_end, child_end = socket.socketpair()
    child = SandboxChild(pid=proc.pid, sock=worker_end, forked_at=time.monotonic())

    def fake_child() -> None:
        try:
            child_end.sendall(data)
            child_end.shutdown(socket.SHUT_WR)
            while read and child_end.recv(1 << 16):
                pass
        except OSError:
            pass  # the supervisor closed its end (it killed the "child")

    writer = threading.Thread(target=fake_child, daemon=True)
    writer.start()
    try:
        return supervise(child, _spec(wall_time_ms), EchoHost())  # type: ignore[arg-type]
    finally:
        child_end.close()
        writer.join(timeout=10)
        assert not writer.is_alive()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# ------------------------------------------------------------------ strategies
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


def _value(plain: object) -> common_pb2.Value:
    from scriptpool.values import to_value

    return to_value(plain)


@st.composite
def child_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["output", "call", "result", "empty"]))
    frame = sandbox_pb2.ChildFrame()
    if kind == "output":
        frame.output = draw(st.text(max_size=200))
    elif kind == "call":
        frame.call.call_id = draw(st.sampled_from([0, 1, UINT64_MAX]))
        frame.call.op = draw(st.sampled_from(["State.get", "", "Nope.nope", "x" * 300]))
        for plain in draw(st.lists(VALUES, max_size=3)):
            frame.call.args.add().CopyFrom(_value(plain))
    elif kind == "result":
        frame.result.outcome = draw(st.sampled_from([0, 1, 2, 5, 99, 2**31 - 1, -1]))  # type: ignore[assignment]  # (known and unknown)
        frame.result.result.CopyFrom(_value(draw(VALUES)))
        frame.result.message = draw(st.text(max_size=50))
        frame.result.cpu_time_ms = draw(st.sampled_from([0, UINT64_MAX]))
        frame.result.peak_memory_bytes = draw(st.sampled_from([0, UINT64_MAX]))
    return _frame(frame.SerializeToString())


BOUNDARY_HEADERS = st.sampled_from(
    [
        struct.pack(">I", framing.MAX_FRAME_BYTES),  # at the maximum, then the stream ends
        struct.pack(">I", framing.MAX_FRAME_BYTES + 1),  # one past
        struct.pack(">I", UINT32_MAX),
        struct.pack(">I", 0),  # an empty ChildFrame
        b"\x00\x00",  # half a header
    ]
)


def _deep_value_frame(levels: int) -> bytes:
    data = common_pb2.Value(int_value=1).SerializeToString()
    for _ in range(levels):  # a list per level, by hand (protobuf would refuse to build it)
        data = b"\x3a" + _varint(len(b"\x0a" + _varint(len(data)) + data)) + b"\x0a" + _varint(len(data)) + data
    result = b"\x12" + _varint(len(data)) + data  # ChildResult.result = 2
    return _frame(b"\x1a" + _varint(len(result)) + result)  # ChildFrame.result = 3


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


STREAMS = st.one_of(
    st.binary(max_size=300),  # noise
    st.lists(st.binary(max_size=60).map(_frame), max_size=5).map(b"".join),  # framed noise
    st.lists(child_frames(), min_size=1, max_size=6).map(b"".join),  # frames a child could send
    st.tuples(st.lists(child_frames(), max_size=3).map(b"".join), BOUNDARY_HEADERS).map(b"".join),
    st.sampled_from([_deep_value_frame(n) for n in (1, 32, 47, 200)]),
)
KNOWN = set(Outcome)


def test_frame_shapes_are_what_the_child_sends() -> None:
    """(The hand-built frames above parse as the child's own: the fuzz reaches past the framing.)"""
    frame = sandbox_pb2.ChildFrame.FromString(_deep_value_frame(3)[4:])
    assert frame.WhichOneof("body") == "result"
    assert frame.result.result.list_value.items[0].list_value.items[0].HasField("list_value")


@FUZZ
@given(data=STREAMS)
def test_any_stream_from_a_child_is_classified_without_escaping_or_hanging(
    sleepers: list[subprocess.Popen[bytes]], data: bytes
) -> None:
    run = _run_fake_child(data, sleepers, DEFAULT_LIMITS.wall_time_ms, read=True)
    assert run.outcome in KNOWN
    assert run.outcome is not Outcome.INTERNAL_ERROR or "signal" in run.message or "without" in run.message


def test_a_malformed_frame_is_a_sandbox_violation(sleepers: list[subprocess.Popen[bytes]]) -> None:
    for data in (_frame(b"\xff\xff\xff"), struct.pack(">I", framing.MAX_FRAME_BYTES + 1), _deep_value_frame(200)):
        run = _run_fake_child(data, sleepers, DEFAULT_LIMITS.wall_time_ms, read=True)
        assert run.outcome is Outcome.SANDBOX_VIOLATION, data[:8]


def test_a_result_with_an_unknown_outcome_is_a_sandbox_violation(sleepers: list[subprocess.Popen[bytes]]) -> None:
    frame = sandbox_pb2.ChildFrame()
    frame.result.outcome = 99  # type: ignore[assignment]
    run = _run_fake_child(_frame(frame.SerializeToString()), sleepers, DEFAULT_LIMITS.wall_time_ms, read=True)
    assert run.outcome is Outcome.SANDBOX_VIOLATION


def test_a_child_that_never_reads_its_replies_cannot_stall_the_worker(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """Calls whose replies overflow the socket while the child reads none: the worker's send waits
    no longer than the job's wall time (before, it blocked for good)."""
    frame = sandbox_pb2.ChildFrame()
    frame.call.op = "State.get"
    frame.call.args.add().bytes_value = b"x" * 60_000  # echoed back: 60 kB per reply
    data = _frame(frame.SerializeToString()) * 40
    run = _run_fake_child(data, sleepers, wall_time_ms=500, read=False)
    assert run.outcome is Outcome.WALL_TIME_EXCEEDED
