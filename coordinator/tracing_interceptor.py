"""The coordinator's span for each RPC it serves, when tracing is on (docs/adr/0014-logs-and-tracing.md).

Each scriptpool method's handler runs inside `scriptpool.core.tracing.server_span`, continuing the
`traceparent` its caller sent (a worker's bridge sends its job span's). `JobCallService.Calls` is
left alone: it carries many calls, and `coordinator/services/job_calls.py` makes a span for each.
Health and reflection are not traced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from scriptpool.coordinator.status import OWN_METHODS
from scriptpool.core import tracing
from scriptpool.v1 import calls_pb2

CALLS_METHOD = f"/{calls_pb2.DESCRIPTOR.services_by_name['JobCallService'].full_name}/Calls"


def _traced_unary(method: str, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def traced(request: Any, context: grpc.ServicerContext) -> Any:
        with tracing.server_span(method, tuple(context.invocation_metadata())):
            return behaviour(request, context)

    return traced


def _traced_stream(method: str, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
    def traced(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with tracing.server_span(method, tuple(context.invocation_metadata())):
            yield from behaviour(request, context)

    return traced


class TracingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = continuation(handler_call_details)
        if handler is not None and method.startswith(OWN_METHODS) and method != CALLS_METHOD:
            handler = self._traced(method, handler)
        self._handlers[method] = handler
        return handler

    @staticmethod
    def _traced(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        replace = handler._replace  # type: ignore[attr-defined]
        traced: grpc.RpcMethodHandler[Any, Any]
        if handler.unary_unary is not None:
            traced = replace(unary_unary=_traced_unary(method, handler.unary_unary))
        elif handler.stream_unary is not None:
            traced = replace(stream_unary=_traced_unary(method, handler.stream_unary))
        elif handler.unary_stream is not None:
            traced = replace(unary_stream=_traced_stream(method, handler.unary_stream))
        elif handler.stream_stream is not None:
            traced = replace(stream_stream=_traced_stream(method, handler.stream_stream))
        else:
            return handler
        return traced


__all__ = ["TracingInterceptor"]
