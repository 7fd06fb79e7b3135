"""JobCallService: a running job's global calls on one stream, each run as its unary RPC.

A message on the stream costs well under a unary call in grpcio (no new call, no headers, no
per-call completion queue), which is what a script making many global calls pays for. Nothing else
changes: every message is dispatched to the same servicer method the unary RPC would reach, with a
context whose metadata is the stream's, so authentication (the job credential, checked per message,
refused once the job has ended), access checks, validation, timeline records and error statuses are
those of the unary call. Only job credentials may open a stream, and at most `max_streams` are
open at once (each holds a server thread while its job runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.metrics import UNKNOWN_METHOD, record_call
from scriptpool.coordinator.services.slots import Slots
from scriptpool.coordinator.status import grpc_service
from scriptpool.errors import PermissionDenied
from scriptpool.v1 import calls_pb2, calls_pb2_grpc

Route = tuple[Callable[[Any, Any], Message], type[Message]]
_STATUS = {code.value[0]: code for code in grpc.StatusCode}
"""A reply's numeric status code -> its StatusCode."""


class CallAborted(Exception):
    """A handler aborted one call on the stream; its status goes into that call's reply."""


class _CallContext:
    """The context one streamed call's handler sees: the stream's metadata and deadline, and its own
    status (a handler's `abort` ends this call only, never the stream)."""

    def __init__(self, stream: grpc.ServicerContext, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._stream = stream
        self._metadata = metadata
        self._code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._stream.time_remaining()

    def is_active(self) -> bool:
        return self._stream.is_active()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self.details = code, details
        raise CallAborted(details)


def unary_routes(services: Sequence[tuple[ServiceDescriptor, object]]) -> dict[str, Route]:
    """Full method name -> (bound servicer method, request class) for every unary-unary method."""
    routes: dict[str, Route] = {}
    for descriptor, servicer in services:
        for method in descriptor.methods:
            if method.client_streaming or method.server_streaming:
                continue
            routes[f"/{descriptor.full_name}/{method.name}"] = (
                getattr(servicer, method.name),
                GetMessageClass(method.input_type),
            )
    return routes


@grpc_service(calls_pb2.DESCRIPTOR.services_by_name["JobCallService"])
class JobCallServicer(calls_pb2_grpc.JobCallServiceServicer):
    def __init__(self, auth: Authenticator, routes: dict[str, Route], max_streams: int) -> None:
        self.auth = auth
        self.routes = routes
        self.slots = Slots(max_streams, "job call streams", "make unary calls instead (workers do so by themselves)")

    def Calls(
        self, request_iterator: Iterator[calls_pb2.JobCall], context: grpc.ServicerContext
    ) -> Iterator[calls_pb2.JobCallReply]:
        caller = self.auth.caller(context)
        if not caller.is_job:
            raise PermissionDenied(
                "JobCallService.Calls carries a running job's global calls and needs its job credential; "
                "clients call the Session, Artifact, State and Event services directly"
            )
        with self.slots.hold():
            metadata = tuple(context.invocation_metadata())
            try:
                for call in request_iterator:
                    yield self._one(call, context, metadata)
            except grpc.RpcError:
                if context.is_active():
                    raise
                # the worker cancelled the stream or lost its channel (e.g. it was killed): nobody to answer

    def _one(
        self, call: calls_pb2.JobCall, stream: grpc.ServicerContext, metadata: Sequence[tuple[str, str | bytes]]
    ) -> calls_pb2.JobCallReply:
        started = time.perf_counter()
        reply = self._answer(call, stream, metadata)
        # counted as the unary call it stands for; a method name no route has is the caller's: `unknown`
        method = call.method if call.method in self.routes else UNKNOWN_METHOD
        record_call(method, _STATUS[reply.code], time.perf_counter() - started)
        return reply

    def _answer(
        self, call: calls_pb2.JobCall, stream: grpc.ServicerContext, metadata: Sequence[tuple[str, str | bytes]]
    ) -> calls_pb2.JobCallReply:
        reply = calls_pb2.JobCallReply(call_id=call.call_id)
        route = self.routes.get(call.method)
        if route is None:
            reply.code = grpc.StatusCode.UNIMPLEMENTED.value[0]
            reply.message = f"{call.method!r} is not a unary method of the Session, Artifact, State or Event services"
            return reply
        method, request_class = route
        try:
            request = request_class.FromString(call.request)
        except DecodeError:
            reply.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            reply.message = f"the request of {call.method} is not a valid {request_class.DESCRIPTOR.name}"
            return reply
        context = _CallContext(stream, metadata)
        try:
            reply.response = method(request, context).SerializeToString()
        except CallAborted:
            code = context.code() or grpc.StatusCode.INTERNAL
            reply.code = code.value[0]
            reply.message = context.details
        return reply


__all__ = ["JobCallServicer", "unary_routes"]
