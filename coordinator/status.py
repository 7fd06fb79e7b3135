"""The one place domain errors become gRPC statuses.

`grpc_service` wraps every RPC method of a servicer class: the request is checked first
(`scriptpool.coordinator.request_checks`: doubles finite and in range, values not too deep); a ScriptpoolError
aborts with its code and message; losing Redis, and Redis answering that it is loading its data
(`LOADING`, after a restart) or busy running a script (`BUSY`), is UNAVAILABLE (retryable); anything
else is logged with a reference and answered INTERNAL without host details.
Methods of the service that the class does not implement answer UNIMPLEMENTED, naming the method.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scriptpool.coordinator.interceptors import WrappingInterceptor
from scriptpool.coordinator.metrics import REDIS_ERRORS
from scriptpool.coordinator.request_checks import check_request
from scriptpool.core.repeated_log import RepeatedProblem
from scriptpool.errors import InvalidArgument, ScriptpoolError

log = logging.getLogger(__name__)
REDIS_UNAVAILABLE_LOG = RepeatedProblem(log, "Redis unavailable")
"""Calls answered UNAVAILABLE while Redis is out of reach: logged once, then counted."""

T = TypeVar("T")


REDIS_UNREACHABLE = "the coordinator cannot reach Redis right now; retry shortly"
REDIS_LOADING = "Redis is loading its data into memory (it was just restarted); retry in a few seconds"
REDIS_BUSY = "Redis is busy running a long script and answers nothing else until it ends; retry shortly"


def redis_unavailable(exc: BaseException) -> str | None:
    """What to tell a caller when `exc` is Redis being out of reach for now (a retry will do), else
    None. redis-py raises `BusyLoadingError` (a ConnectionError) for `LOADING`, but the lean client
    (`scriptpool.core.lean_redis`) and script calls raise it as a plain ResponseError, as redis-py does `BUSY`."""
    if isinstance(exc, BusyLoadingError) or (isinstance(exc, ResponseError) and str(exc).startswith("LOADING")):
        return REDIS_LOADING
    if isinstance(exc, ResponseError) and str(exc).startswith("BUSY "):
        return REDIS_BUSY
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return REDIS_UNREACHABLE
    return None


def abort_for(context: grpc.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, ScriptpoolError):
        context.abort(grpc.StatusCode[exc.code], exc.message)
    unavailable = redis_unavailable(exc)
    if unavailable is not None:
        REDIS_UNAVAILABLE_LOG.happened(exc)
        REDIS_ERRORS.inc()
        context.abort(grpc.StatusCode.UNAVAILABLE, unavailable)
    ref = uuid.uuid4().hex[:12]
    log.error("internal error ref=%s", ref, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in the coordinator (ref {ref}); see its log")


def _already_aborted(context: grpc.ServicerContext) -> bool:
    code = context.code()  # type: ignore[attr-defined]
    return code is not None and code != grpc.StatusCode.OK


class MalformedRequest:
    """What a request message that does not parse becomes (`LenientRequests`): its handler answers
    INVALID_ARGUMENT instead of grpcio's INTERNAL "Exception deserializing request!"."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request is not a valid {self.type_name} message (malformed, not UTF-8 where text is "
            "expected, or nested deeper than protobuf parses)"
        )


def _lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_class = getattr(deserialize, "__self__", None)
    type_name = getattr(getattr(message_class, "DESCRIPTOR", None), "name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return MalformedRequest(type_name)

    return parse


OWN_METHODS = "/scriptpool.v1."


class LenientRequests(WrappingInterceptor):
    """Every method's request parser hands a malformed message to the handler as a `MalformedRequest`."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.request_deserializer is None or not method.startswith(OWN_METHODS):
            return handler  # (health and reflection: their handlers are not ours to wrap)
        lenient: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
            request_deserializer=_lenient(handler.request_deserializer)
        )
        return lenient


def _checked(request: Any) -> Any:
    """The request as a handler may take it: a malformed one is refused, a message checked, and a
    stream of messages checked as each arrives."""
    if isinstance(request, MalformedRequest):
        raise request.error()
    if isinstance(request, Message):
        check_request(request)
        return request
    return _checked_stream(request)


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request)


def _wrap_unary(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, _checked(request), context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            abort_for(context, exc)

    return wrapper


def _wrap_stream(method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, _checked(request), context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            abort_for(context, exc)

    return wrapper


def _unimplemented(full_name: str) -> Callable[..., Any]:
    def method(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{full_name} is part of the scriptpool API but not implemented by this coordinator version yet",
        )

    return method


def grpc_service(descriptor: ServiceDescriptor) -> Callable[[type[T]], type[T]]:
    """Class decorator: error mapping on every RPC the class defines, UNIMPLEMENTED for the rest."""

    def decorate(cls: type[T]) -> type[T]:
        for method in descriptor.methods:
            own = cls.__dict__.get(method.name)
            full_name = f"{descriptor.name}.{method.name}"
            if own is None:
                setattr(cls, method.name, _unimplemented(full_name))
            elif method.server_streaming:
                setattr(cls, method.name, _wrap_stream(own))
            else:
                setattr(cls, method.name, _wrap_unary(own))
        return cls

    return decorate
