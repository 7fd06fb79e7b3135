"""The bridge: turns a sandboxed script's global calls into gRPC calls to the coordinator.

Runs in the worker process (never in the sandbox child). Every call carries the job's credential,
which the coordinator checks; the child never sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from scriptpool.errors import InvalidArgument, Unimplemented
from scriptpool.v1 import common_pb2, sessions_pb2, sessions_pb2_grpc
from scriptpool.values import PlainValue, to_value_map

from workers.rpc_errors import from_rpc_error
from workers.session_values import session_to_plain

CREATE_FIELDS = ("name", "description", "tags", "metadata", "parent_session_id")
LIST_FIELDS = ("state", "tags", "name", "metadata", "parent_session_id", "limit", "cursor", "sort")


def _options(args: list[PlainValue], op: str, allowed: tuple[str, ...]) -> dict[str, PlainValue]:
    if not args or args[0] is None:
        return {}
    first = args[0]
    if isinstance(first, list) and not first:
        return {}
    if not isinstance(first, dict):
        raise InvalidArgument(f"{op}: expected a table of options, got {type(first).__name__}")
    unknown = sorted(set(first) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{op}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return first


def _string(value: PlainValue, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
    return value


def _strings(value: PlainValue, what: str) -> list[str]:
    if value is None or value == {}:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return [str(v) for v in value]


def _map(value: PlainValue, what: str) -> common_pb2.ValueMap:
    if value is None or value == []:
        return common_pb2.ValueMap()
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a table/map, got {type(value).__name__}")
    return to_value_map(value)


def _session_id(args: list[PlainValue], op: str) -> str:
    if not args:
        raise InvalidArgument(f"{op}: a session id is required")
    first = args[0]
    if isinstance(first, dict) and isinstance(first.get("id"), str):
        return str(first["id"])
    return _string(first, f"{op}: session id")


class CoordinatorBridge:
    """GlobalHost for the worker side of one job."""

    def __init__(
        self,
        channel: grpc.Channel,
        credential: str,
        session_id: str,
        deadline: float,
        call_timeout_seconds: float = 30.0,
    ) -> None:
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self._sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        self._deadline = deadline
        self._call_timeout = call_timeout_seconds
        self.current_session = session_id

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        handler = _HANDLERS.get(op)
        if handler is None:
            raise Unimplemented(f"{op} is not available in this version of scriptpool")
        try:
            return handler(self, op, args)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _rpc(self, method: Callable[..., Any], request: Any) -> Any:
        timeout = max(0.001, min(self._call_timeout, self._deadline - time.monotonic()))
        return method(request, metadata=self._metadata, timeout=timeout)

    # ---------------------------------------------------------------- Session
    def session_create(self, op: str, args: list[PlainValue]) -> PlainValue:
        opts = _options(args, op, CREATE_FIELDS)
        request = sessions_pb2.CreateSessionRequest(
            name=_string(opts.get("name"), f"{op}: name"),
            description=_string(opts.get("description"), f"{op}: description"),
            tags=_strings(opts.get("tags"), f"{op}: tags"),
            metadata=_map(opts.get("metadata"), f"{op}: metadata"),
            parent_session_id=_string(opts.get("parent_session_id"), f"{op}: parent_session_id"),
        )
        session: sessions_pb2.Session = self._rpc(self._sessions.Create, request)
        return session.id

    def session_get(self, op: str, args: list[PlainValue]) -> PlainValue:
        request = sessions_pb2.SessionRef(session_id=_session_id(args, op))
        return session_to_plain(self._rpc(self._sessions.Get, request))

    def session_list(self, op: str, args: list[PlainValue]) -> PlainValue:
        opts = _options(args, op, LIST_FIELDS)
        request = sessions_pb2.ListSessionsRequest(
            tags=_strings(opts.get("tags"), f"{op}: tags"),
            name=_string(opts.get("name"), f"{op}: name"),
            metadata=_map(opts.get("metadata"), f"{op}: metadata"),
            parent_session_id=_string(opts.get("parent_session_id"), f"{op}: parent_session_id"),
            sort=_string(opts.get("sort"), f"{op}: sort"),
        )
        state = opts.get("state")
        if state is not None:
            name = "SESSION_STATE_" + _string(state, f"{op}: state").upper()
            if name not in sessions_pb2.SessionState.keys() or name == "SESSION_STATE_UNSPECIFIED":
                raise InvalidArgument(f"{op}: state must be active, suspended, completed or failed")
            request.state = sessions_pb2.SessionState.Value(name)
        limit = opts.get("limit")
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise InvalidArgument(f"{op}: limit must be a non-negative integer")
            request.page.limit = limit
        request.page.cursor = _string(opts.get("cursor"), f"{op}: cursor")
        response: sessions_pb2.ListSessionsResponse = self._rpc(self._sessions.List, request)
        return [session_to_plain(s) for s in response.sessions]

    def session_get_current(self, op: str, args: list[PlainValue]) -> PlainValue:
        return self.current_session or None

    def session_set_current(self, op: str, args: list[PlainValue]) -> PlainValue:
        if not args or args[0] is None:
            self.current_session = ""
            return None
        session_id = _session_id(args, op)
        self._rpc(self._sessions.Get, sessions_pb2.SessionRef(session_id=session_id))  # must exist and be readable
        self.current_session = session_id
        return session_id


_HANDLERS: dict[str, Callable[[CoordinatorBridge, str, list[PlainValue]], PlainValue]] = {
    "Session.create": CoordinatorBridge.session_create,
    "Session.get": CoordinatorBridge.session_get,
    "Session.list": CoordinatorBridge.session_list,
    "Session.getCurrent": CoordinatorBridge.session_get_current,
    "Session.setCurrent": CoordinatorBridge.session_set_current,
}

__all__ = ["CoordinatorBridge"]
