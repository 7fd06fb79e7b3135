"""A job's global calls on one JobCallService stream, the fast path of the bridge.

The bridge makes a job's first global call as an ordinary unary RPC; from the second on it sends
them as messages on one stream opened for the job (`JobCallService.Calls`, the job credential in its
metadata), which costs well under a unary call each. The coordinator runs each message as the unary
RPC it names, so nothing but the transport differs. The stream is closed when the job ends.

If the stream cannot be used (the coordinator is at its stream cap, or older and lacks the
service) the first message says so before anything ran, and the bridge makes unary calls for the
rest of the job. A stream that breaks later fails the call in flight like a unary call would
(UNAVAILABLE) and is not used again. A call on the stream has no timeout of its own: the stream's
deadline is the job's wall deadline (plus a margin), and the supervisor ends the job at its deadline.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from scriptpool.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    calls_pb2,
    calls_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)

STREAM_MARGIN_SECONDS = 5.0
FALL_BACK_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED)
"""Statuses that refuse the stream itself, before any message ran: use unary calls instead."""


class StreamedCallError(grpc.RpcError):
    """One call on the stream ended with a non-OK status: the unary call's RpcError, as it were
    (`scriptpool.grpc_errors.from_rpc_error` reads both alike)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class StreamRefused(Exception):
    """The coordinator would not serve the stream; nothing was run. Make the call unary."""


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class CallStream:
    """One job's open stream: `invoke` sends a call and waits for its reply (one call at a time)."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], seconds_left: float) -> None:
        self._requests: queue.SimpleQueue[calls_pb2.JobCall | None] = queue.SimpleQueue()
        stub = calls_pb2_grpc.JobCallServiceStub(channel)
        # grpc's typing has no iterator type for a streaming call's replies
        self._replies: Any = stub.Calls(self._calls(), metadata=metadata, timeout=seconds_left + STREAM_MARGIN_SECONDS)
        self._next_id = 0
        self._answered = 0
        self.usable = True

    def _calls(self) -> Iterator[calls_pb2.JobCall]:
        """What grpc's sending thread reads: each call as `invoke` puts it, until `close` puts None."""
        while (call := self._requests.get()) is not None:
            yield call

    def invoke(self, method: str, request: Message, response_type: type[Message]) -> Message:
        """Run `method` (its full name) with `request`; raises StreamedCallError for a non-OK status,
        StreamRefused when the stream was refused before this first call ran, grpc.RpcError when the
        stream broke (the call's outcome is then unknown, as for a unary call that lost its channel)."""
        self._next_id += 1
        self._requests.put(calls_pb2.JobCall(call_id=self._next_id, method=method, request=request.SerializeToString()))
        try:
            reply = next(self._replies)
        except grpc.RpcError as exc:
            self.usable = False
            if self._answered == 0 and isinstance(exc, grpc.Call) and exc.code() in FALL_BACK_CODES:
                raise StreamRefused(exc.details() or "") from None
            raise
        except StopIteration:
            self.usable = False
            raise StreamedCallError(
                grpc.StatusCode.UNAVAILABLE, "the coordinator ended the job's call stream"
            ) from None
        self._answered += 1
        if reply.call_id != self._next_id:
            self.usable = False
            raise StreamedCallError(grpc.StatusCode.INTERNAL, "the job's call stream answered another call")
        if reply.code:
            raise StreamedCallError(_CODES.get(reply.code, grpc.StatusCode.UNKNOWN), reply.message)
        return response_type.FromString(reply.response)

    def close(self) -> None:
        """End the stream: the coordinator's loop sees the end of the calls and returns. A stream
        that broke or answered out of turn is cancelled instead."""
        broken = not self.usable
        self.usable = False
        self._requests.put(None)
        if broken:
            self._replies.cancel()


class CoordinatorStubs:
    """The coordinator's stubs on one channel (made once per worker), and for each unary method
    the stream can carry: its full name and response class, by the stub's callable."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        self.state = state_pb2_grpc.StateServiceStub(channel)
        self.events = events_pb2_grpc.EventServiceStub(channel)
        self.routes: dict[int, tuple[str, type[Message]]] = {}
        services = (
            (self.sessions, sessions_pb2.DESCRIPTOR.services_by_name["SessionService"]),
            (self.artifacts, artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"]),
            (self.state, state_pb2.DESCRIPTOR.services_by_name["StateService"]),
            (self.events, events_pb2.DESCRIPTOR.services_by_name["EventService"]),
        )
        for stub, service in services:
            for method in service.methods:
                if not (method.client_streaming or method.server_streaming):
                    self.routes[id(getattr(stub, method.name))] = (
                        f"/{service.full_name}/{method.name}",
                        GetMessageClass(method.output_type),
                    )


__all__ = ["CallStream", "CoordinatorStubs", "StreamRefused", "StreamedCallError"]
