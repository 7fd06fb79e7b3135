"""The bridge: turns a sandboxed script's global calls into gRPC calls to the coordinator.

Runs in the worker process (never in the sandbox child). Every call carries the job's credential,
which the coordinator checks; the child never sees it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Error as ProtobufError

from scriptpool.core.tracing import TRACEPARENT
from scriptpool.errors import InvalidArgument, ResourceExhausted, ScriptpoolError, Unimplemented
from scriptpool.grpc_errors import from_rpc_error
from scriptpool.sandbox.catalog import SCRIPT_OPS
from scriptpool.v1 import sessions_pb2
from scriptpool.values import PlainValue
from scriptpool.workers.bridge import artifacts, events, hooks, sessions, state
from scriptpool.workers.bridge.args import SCRIPT_LANGUAGE
from scriptpool.workers.bridge.call_stream import CallStream, CoordinatorStubs, StreamRefused
from scriptpool.workers.bridge.calls import Handlers
from scriptpool.workers.bridge.event_book import EventBook

log = logging.getLogger(__name__)


class CoordinatorBridge:
    """GlobalHost for the worker side of one job."""

    def __init__(
        self,
        stubs: CoordinatorStubs,
        credential: str,
        session_id: str,
        deadline: float,
        call_timeout_seconds: float = 30.0,
        artifact_bytes_limit: int | None = None,
        content_bytes_limit: int | None = None,
        use_stream: bool = True,
        language: str = "",
        traceparent: str = "",
    ) -> None:
        """`traceparent`: the job span's W3C trace context, sent with every call so the coordinator's
        spans for them join the job's trace ("" when not traced)."""
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {credential}"),)
        if traceparent:
            self._metadata += ((TRACEPARENT, traceparent),)
        self.artifact_bytes_limit = artifact_bytes_limit
        # Artifact content handed to the script is bounded by its memory limit: reading stops (and
        # the stream is cancelled) as soon as more arrives, so neither the worker nor the child holds it.
        self.content_bytes_limit = content_bytes_limit
        self.artifact_bytes_written = 0
        self._stubs = stubs
        self.sessions = stubs.sessions
        self.artifacts = stubs.artifacts
        self.state = stubs.state
        self.events = stubs.events
        self._use_stream = use_stream
        self._stream: CallStream | None = None
        self._unary_calls = 0
        self._deadline = deadline
        self._call_timeout = call_timeout_seconds
        self.current_session = session_id
        self.event_book = EventBook(language=language)
        self.language = language

    def charge_artifact_bytes(self, size: int, op: str) -> None:
        """The job's `artifact_bytes` limit: bytes (content and metadata) it may write in total, checked
        before sending."""
        if self.artifact_bytes_limit is not None and self.artifact_bytes_written + size > self.artifact_bytes_limit:
            raise ResourceExhausted(
                f"{op}: this job may write {self.artifact_bytes_limit} bytes of artifacts (content and metadata) "
                f"in total ({self.artifact_bytes_written} written, {size} more asked)"
            )
        self.artifact_bytes_written += size

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        language = SCRIPT_LANGUAGE.set(self.language)
        try:
            handler = _HANDLERS.get(op)
            if handler is None:
                raise Unimplemented(f"{op} is not available in this version of scriptpool")
            return handler(self, op, args)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None  # the coordinator recorded the call and its outcome
        except ScriptpoolError as exc:
            self._record_refusal(op, exc.code)
            raise
        except (ValueError, OverflowError, TypeError, RecursionError, ProtobufError) as exc:
            # An argument no check above foresaw, refused by protobuf or Python while building the
            # request: the script gets a clean refusal, never the host's exception text.
            log.warning("%s: an argument could not be sent (%s)", op, type(exc).__name__, exc_info=exc)
            error = InvalidArgument(f"{op}: an argument is out of range or cannot be represented")
            self._record_refusal(op, error.code)
            raise error from None
        finally:
            SCRIPT_LANGUAGE.reset(language)

    def _record_refusal(self, op: str, code: str) -> None:
        """A call refused here, before reaching the coordinator, still goes on the session timeline
        (best effort: the script gets its error whatever happens to the record)."""
        if op not in SCRIPT_OPS:
            return
        try:
            self.unary(self.sessions.RecordRefusedCall, sessions_pb2.RefusedCall(op=op, code=code))
        except grpc.RpcError as exc:
            log.warning("could not record the refused call %s (%s)", op, exc.code())

    def unary(self, method: Callable[..., Any], request: Any) -> Any:
        """One unary operation: on the job's call stream from its second call on (workers/bridge/call_stream.py),
        else as the unary RPC itself."""
        route = self._stubs.routes.get(id(method))
        stream = self._call_stream() if route is not None else None
        if stream is not None and route is not None:
            try:
                return stream.invoke(route[0], request, route[1])
            except StreamRefused:
                self._use_stream = False  # nothing ran: make this call and the rest unary
        self._unary_calls += 1
        return method(request, metadata=self._metadata, timeout=max(0.001, self.call_time_left()))

    def call_time_left(self) -> float:
        """Seconds one call may take from now: the call timeout, capped by the job's wall deadline."""
        return min(self._call_timeout, self._deadline - time.monotonic())

    def _call_stream(self) -> CallStream | None:
        if self._stream is not None:
            return self._stream if self._stream.usable else None
        if not self._use_stream or self._unary_calls == 0:  # a job making one call never opens one
            return None
        self._stream = CallStream(self._stubs.channel, self._metadata, self._deadline - time.monotonic())
        return self._stream

    def close(self) -> None:
        """The job has ended: close its call stream, if it opened one."""
        if self._stream is not None:
            self._stream.close()


_HANDLERS: Handlers = {
    **sessions.HANDLERS,
    **artifacts.HANDLERS,
    **state.HANDLERS,
    **hooks.HANDLERS,
    **events.HANDLERS,
}

__all__ = ["CoordinatorBridge"]
