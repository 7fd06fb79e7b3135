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

from scriptpool.core.session_values import session_to_plain
from scriptpool.errors import InvalidArgument, ResourceExhausted, ScriptpoolError, Unimplemented
from scriptpool.grpc_errors import from_rpc_error
from scriptpool.sandbox.catalog import SCRIPT_OPS
from scriptpool.v1 import common_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value_map, to_value
from scriptpool.workers import bridge_artifacts, bridge_events, bridge_state
from scriptpool.workers.bridge_args import UINT32_MAX
from scriptpool.workers.bridge_args import count_arg as _count
from scriptpool.workers.bridge_args import string_arg as _string
from scriptpool.workers.bridge_args import strings_arg as _strings
from scriptpool.workers.bridge_args import value_map_arg as _map
from scriptpool.workers.call_stream import CallStream, CoordinatorStubs, StreamRefused

log = logging.getLogger(__name__)
AWAIT_REPLAY_OP = "Session.awaitReplay"  # not a script global: used by the engines' replay callbacks
AWAIT_REPLAY_SECONDS = 1.0
CREATE_FIELDS = ("name", "description", "tags", "metadata", "parent_session_id")
TIME_FILTERS = ("created_after", "created_before", "updated_after", "updated_before")
LIST_FIELDS = ("state", "tags", "name", "metadata", "parent_session_id", "limit", "cursor", "sort", *TIME_FILTERS)


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
        stubs: CoordinatorStubs,
        credential: str,
        session_id: str,
        deadline: float,
        call_timeout_seconds: float = 30.0,
        artifact_bytes_limit: int | None = None,
        content_bytes_limit: int | None = None,
        use_stream: bool = True,
    ) -> None:
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self.artifact_bytes_limit = artifact_bytes_limit
        # Artifact content handed to the script is bounded by its memory limit: reading stops (and
        # the stream is cancelled) as soon as more arrives, so neither the worker nor the child holds it.
        self.content_bytes_limit = content_bytes_limit
        self.artifact_bytes_written = 0
        self._stubs = stubs
        self._sessions = stubs.sessions
        self.artifacts = stubs.artifacts
        self.state = stubs.state
        self.events = stubs.events
        self._use_stream = use_stream
        self._stream: CallStream | None = None
        self._unary_calls = 0
        self._deadline = deadline
        self._call_timeout = call_timeout_seconds
        self.current_session = session_id

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

    def _record_refusal(self, op: str, code: str) -> None:
        """A call refused here, before reaching the coordinator, still goes on the session timeline
        (best effort: the script gets its error whatever happens to the record)."""
        if op not in SCRIPT_OPS:
            return
        try:
            self._rpc(self._sessions.RecordRefusedCall, sessions_pb2.RefusedCall(op=op, code=code))
        except grpc.RpcError as exc:
            log.warning("could not record the refused call %s (%s)", op, exc.code())

    def _rpc(self, method: Callable[..., Any], request: Any) -> Any:
        """One unary operation: on the job's call stream from its second call on (workers/call_stream.py),
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
        for name in TIME_FILTERS:
            if opts.get(name) is not None:
                getattr(request, name).CopyFrom(to_value(opts[name]))
        state = opts.get("state")
        if state is not None:
            name = "SESSION_STATE_" + _string(state, f"{op}: state").upper()
            if name not in sessions_pb2.SessionState.keys() or name == "SESSION_STATE_UNSPECIFIED":
                raise InvalidArgument(f"{op}: state must be active, suspended, completed or failed")
            request.state = sessions_pb2.SessionState.Value(name)
        request.page.limit = _count(opts.get("limit"), f"{op}: limit", UINT32_MAX)
        request.page.cursor = _string(opts.get("cursor"), f"{op}: cursor")
        response: sessions_pb2.ListSessionsResponse = self._rpc(self._sessions.List, request)
        return [session_to_plain(s) for s in response.sessions]

    def _target(self, args: list[PlainValue], op: str) -> str:
        """The session an operation acts on: its first argument, else the job's current session."""
        if args and args[0] is not None:
            return _session_id(args, op)
        if not self.current_session:
            raise InvalidArgument(f"{op}: a session id is required (this job has no current session)")
        return self.current_session

    def _ref(self, args: list[PlainValue], op: str) -> sessions_pb2.SessionRef:
        return sessions_pb2.SessionRef(session_id=self._target(args, op))

    def session_transition(self, op: str, args: list[PlainValue]) -> PlainValue:
        method = {"Session.suspend": self._sessions.Suspend, "Session.resume": self._sessions.Resume,
                  "Session.complete": self._sessions.Complete}[op]  # fmt: skip
        return session_to_plain(self._rpc(method, self._ref(args, op)))

    def session_delete(self, op: str, args: list[PlainValue]) -> PlainValue:
        self._rpc(self._sessions.Delete, self._ref(args, op))
        return True

    def session_get_metadata(self, op: str, args: list[PlainValue]) -> PlainValue:
        return from_value_map(self._rpc(self._sessions.GetMetadata, self._ref(args, op)))

    def session_update_metadata(self, op: str, args: list[PlainValue]) -> PlainValue:
        updates = args[1] if len(args) > 1 else None
        if not isinstance(updates, dict):
            raise InvalidArgument(f"{op}: updates must be a table/map of metadata keys")
        request = sessions_pb2.UpdateMetadataRequest(session_id=self._target(args, op), updates=_map(updates, op))
        return from_value_map(self._rpc(self._sessions.UpdateMetadata, request))

    def session_get_tags(self, op: str, args: list[PlainValue]) -> PlainValue:
        return list(self._rpc(self._sessions.GetTags, self._ref(args, op)).tags)

    def session_set_tags(self, op: str, args: list[PlainValue]) -> PlainValue:
        tags = _strings(args[1] if len(args) > 1 else None, f"{op}: tags")
        request = sessions_pb2.SetTagsRequest(session_id=self._target(args, op), tags=tags)
        return list(self._rpc(self._sessions.SetTags, request).tags)

    def session_save(self, op: str, args: list[PlainValue]) -> PlainValue:
        return int(self._rpc(self._sessions.Save, self._ref(args, op)).snapshot)

    def session_load(self, op: str, args: list[PlainValue]) -> PlainValue:
        snapshot = _count(args[1] if len(args) > 1 else None, f"{op}: snapshot (nil for the latest)")
        request = sessions_pb2.LoadSessionRequest(session_id=self._target(args, op), snapshot=snapshot)
        return session_to_plain(self._rpc(self._sessions.Load, request))

    def session_save_all(self, op: str, args: list[PlainValue]) -> PlainValue:
        return dict(self._rpc(self._sessions.SaveAll, common_pb2.Empty()).snapshots)

    def session_restore_recent(self, op: str, args: list[PlainValue]) -> PlainValue:
        if not args or args[0] is None:
            raise InvalidArgument(f"{op}: count must be an integer")
        count = _count(args[0], f"{op}: count", UINT32_MAX)
        request = sessions_pb2.RestoreRecentRequest(count=count)
        return list(self._rpc(self._sessions.RestoreRecent, request).session_ids)

    def session_can_replay(self, op: str, args: list[PlainValue]) -> PlainValue:
        return bool(self._rpc(self._sessions.CanReplay, self._ref(args, op)).replayable)

    def session_replay(self, op: str, args: list[PlainValue]) -> PlainValue:
        opts = _options(args[1:], op, ("speed",))
        speed = opts.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or isinstance(speed, bool):
            raise InvalidArgument(f"{op}: speed must be a number")
        request = sessions_pb2.ReplayRequest(session_id=self._target(args, op), speed=float(speed))
        return str(self._rpc(self._sessions.Replay, request).replay_session_id)

    def session_get_timeline(self, op: str, args: list[PlainValue]) -> PlainValue:
        opts = _options(args[1:], op, ("after", "limit", "types"))
        limit = _count(opts.get("limit"), f"{op}: limit", UINT32_MAX)
        request = sessions_pb2.GetTimelineRequest(
            session_id=self._target(args, op),
            after=_string(opts.get("after"), f"{op}: after"),
            limit=limit,
            types=_strings(opts.get("types"), f"{op}: types"),
        )
        timeline = self._rpc(self._sessions.GetTimeline, request)
        return [
            {"id": e.id, "timestamp": e.timestamp, "type": e.type, "description": e.description,
             "job_id": e.job_id or None, "data": from_value_map(e.data)}
            for e in timeline.entries
        ]  # fmt: skip

    def session_await_replay(self, op: str, args: list[PlainValue]) -> PlainValue:
        """Internal to the engines' Session.replay callbacks: the replay's timeline entries after
        `after`, waiting up to ~1 s for new ones; `finished` once the replay has ended."""
        replay_id = _string(args[0] if args else None, f"{op}: replay id")
        after = _string(args[1] if len(args) > 1 else None, f"{op}: after")
        give_up = time.monotonic() + AWAIT_REPLAY_SECONDS
        while True:
            request = sessions_pb2.GetTimelineRequest(session_id=replay_id, after=after, limit=100)
            entries = self._rpc(self._sessions.GetTimeline, request).entries
            if entries or time.monotonic() >= give_up or time.monotonic() >= self._deadline:
                break
            time.sleep(0.05)
        return {
            "entries": [
                {"id": e.id, "timestamp": e.timestamp, "type": e.type, "job_id": e.job_id or None,
                 "data": from_value_map(e.data)}
                for e in entries
            ],
            "finished": any(e.type == "replay.finished" for e in entries),
        }  # fmt: skip

    def session_get_replay_metadata(self, op: str, args: list[PlainValue]) -> PlainValue:
        meta = self._rpc(self._sessions.GetReplayMetadata, self._ref(args, op))
        return {
            "replayable": meta.replayable, "job_count": meta.job_count, "event_count": meta.event_count,
            "first_event": meta.first_event, "last_event": meta.last_event, "duration": meta.duration,
            "replays": list(meta.replays),
        }  # fmt: skip

    def session_get_current(self, op: str, args: list[PlainValue]) -> PlainValue:
        current: sessions_pb2.CurrentSession = self._rpc(self._sessions.GetCurrent, common_pb2.Empty())
        self.current_session = current.session_id
        return current.session_id or None

    def session_set_current(self, op: str, args: list[PlainValue]) -> PlainValue:
        session_id = "" if not args or args[0] is None else _session_id(args, op)
        request = sessions_pb2.SetCurrentSessionRequest(session_id=session_id)
        current: sessions_pb2.CurrentSession = self._rpc(self._sessions.SetCurrent, request)
        self.current_session = current.session_id
        return current.session_id or None


_HANDLERS: dict[str, Callable[[CoordinatorBridge, str, list[PlainValue]], PlainValue]] = {
    "Session.create": CoordinatorBridge.session_create,
    "Session.get": CoordinatorBridge.session_get,
    "Session.list": CoordinatorBridge.session_list,
    "Session.getCurrent": CoordinatorBridge.session_get_current,
    "Session.setCurrent": CoordinatorBridge.session_set_current,
    "Session.suspend": CoordinatorBridge.session_transition,
    "Session.resume": CoordinatorBridge.session_transition,
    "Session.complete": CoordinatorBridge.session_transition,
    "Session.delete": CoordinatorBridge.session_delete,
    "Session.getMetadata": CoordinatorBridge.session_get_metadata,
    "Session.updateMetadata": CoordinatorBridge.session_update_metadata,
    "Session.getTags": CoordinatorBridge.session_get_tags,
    "Session.setTags": CoordinatorBridge.session_set_tags,
    "Session.save": CoordinatorBridge.session_save,
    "Session.load": CoordinatorBridge.session_load,
    "Session.saveAll": CoordinatorBridge.session_save_all,
    "Session.restoreRecent": CoordinatorBridge.session_restore_recent,
    "Session.canReplay": CoordinatorBridge.session_can_replay,
    "Session.replay": CoordinatorBridge.session_replay,
    "Session.getTimeline": CoordinatorBridge.session_get_timeline,
    "Session.getReplayMetadata": CoordinatorBridge.session_get_replay_metadata,
    AWAIT_REPLAY_OP: CoordinatorBridge.session_await_replay,
}
_HANDLERS.update(bridge_artifacts.HANDLERS)
_HANDLERS.update(bridge_state.HANDLERS)
_HANDLERS.update(bridge_events.HANDLERS)

__all__ = ["CoordinatorBridge"]
