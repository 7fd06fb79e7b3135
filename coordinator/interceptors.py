"""A server interceptor that wraps each registered method's handler once and keeps the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


class WrappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Subclasses say how to wrap a method's handler (`wrap`); the wrapped handler is kept by method
    name. Only methods the server has are kept (a bounded map): for any other `missing` is called
    and gRPC answers UNIMPLEMENTED."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        raise NotImplementedError

    def missing(self, method: str) -> None:
        """A call to a method the server does not have."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None:
            return known
        handler = continuation(handler_call_details)
        if handler is None:
            self.missing(method)
            return None
        wrapped = self.wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped
