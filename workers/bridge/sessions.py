"""The script-side Session.* operations: script values in, SessionService calls out.

A session is named by its id or by the table/object `get` returns (`{id = ...}`); operations on a
session take the job's current session when the id is left out (`Session.setCurrent`).
"""

from __future__ import annotations

import time

from scriptpool.core.script_times import with_times
from scriptpool.core.session_values import session_to_plain
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.catalog import HOOK_POINTS
from scriptpool.v1 import common_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value_map, to_value
from scriptpool.workers.bridge.args import UINT32_MAX, kind, page_value
from scriptpool.workers.bridge.args import count_arg as _count
from scriptpool.workers.bridge.args import string_arg as _string
from scriptpool.workers.bridge.args import strings_arg as _strings
from scriptpool.workers.bridge.args import time_arg as _time
from scriptpool.workers.bridge.args import value_map_arg as _map
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers

AWAIT_REPLAY_OP = "Session.awaitReplay"  # not a script global: used by the engines' replay callbacks
AWAIT_REPLAY_SECONDS = 1.0
CREATE_FIELDS = ("name", "description", "tags", "metadata", "parent_session_id")
TIME_FILTERS = ("created_after", "created_before", "updated_after", "updated_before")
LIST_FIELDS = ("state", "status", "tags", "name", "metadata", "parent_session_id", "limit", "cursor", "sort",
               *TIME_FILTERS)  # fmt: skip


def _options(args: list[PlainValue], op: str, allowed: tuple[str, ...]) -> dict[str, PlainValue]:
    if not args or args[0] is None:
        return {}
    first = args[0]
    if isinstance(first, list) and not first:
        return {}
    if not isinstance(first, dict):
        raise InvalidArgument(f"{op}: expected a table of options, got {kind(first)}")
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


def session_create(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    opts = _options(args, op, CREATE_FIELDS)
    request = sessions_pb2.CreateSessionRequest(
        name=_string(opts.get("name"), f"{op}: name"),
        description=_string(opts.get("description"), f"{op}: description"),
        tags=_strings(opts.get("tags"), f"{op}: tags"),
        metadata=_map(opts.get("metadata"), f"{op}: metadata"),
        parent_session_id=_string(opts.get("parent_session_id"), f"{op}: parent_session_id"),
    )
    session: sessions_pb2.Session = bridge.unary(bridge.sessions.Create, request)
    return session.id


def session_get(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    request = sessions_pb2.SessionRef(session_id=_session_id(args, op))
    return session_to_plain(bridge.unary(bridge.sessions.Get, request))


def session_list(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
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
            getattr(request, name).CopyFrom(to_value(_time(opts[name], f"{op}: {name}")))
    state = _state_filter(opts, op)
    if state is not None:
        name = "SESSION_STATE_" + state.upper()
        if name not in sessions_pb2.SessionState.keys() or name == "SESSION_STATE_UNSPECIFIED":
            raise InvalidArgument(f"{op}: state (status) must be active, suspended, completed or failed")
        request.state = sessions_pb2.SessionState.Value(name)
    request.page.limit = _count(opts.get("limit"), f"{op}: limit", UINT32_MAX)
    request.page.cursor = _string(opts.get("cursor"), f"{op}: cursor")
    response: sessions_pb2.ListSessionsResponse = bridge.unary(bridge.sessions.List, request)
    return page_value([session_to_plain(s) for s in response.sessions], response.next_cursor)


def _state_filter(opts: dict[str, PlainValue], op: str) -> str | None:
    """`state`, or rs-llmspell's `status` (the same values); both given must agree."""
    state = _string(opts.get("state"), f"{op}: state") or None
    status = _string(opts.get("status"), f"{op}: status") or None
    if state is not None and status is not None and state != status:
        raise InvalidArgument(f"{op}: state {state!r} and status {status!r} disagree (status is state's other name)")
    return state or status


def _target(bridge: BridgeCalls, args: list[PlainValue], op: str) -> str:
    """The session an operation acts on: its first argument, else the job's current session."""
    if args and args[0] is not None:
        return _session_id(args, op)
    if not bridge.current_session:
        raise InvalidArgument(f"{op}: a session id is required (this job has no current session)")
    return bridge.current_session


def _ref(bridge: BridgeCalls, args: list[PlainValue], op: str) -> sessions_pb2.SessionRef:
    return sessions_pb2.SessionRef(session_id=_target(bridge, args, op))


def session_transition(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    method = {"Session.suspend": bridge.sessions.Suspend, "Session.resume": bridge.sessions.Resume,
              "Session.complete": bridge.sessions.Complete}[op]  # fmt: skip
    return session_to_plain(bridge.unary(method, _ref(bridge, args, op)))


def session_delete(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    bridge.unary(bridge.sessions.Delete, _ref(bridge, args, op))
    return True


def session_get_metadata(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    return from_value_map(bridge.unary(bridge.sessions.GetMetadata, _ref(bridge, args, op)))


def session_update_metadata(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    updates = args[1] if len(args) > 1 else None
    if not isinstance(updates, dict):
        raise InvalidArgument(f"{op}: updates must be a table/map of metadata keys")
    request = sessions_pb2.UpdateMetadataRequest(session_id=_target(bridge, args, op), updates=_map(updates, op))
    return from_value_map(bridge.unary(bridge.sessions.UpdateMetadata, request))


def session_get_tags(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    return list(bridge.unary(bridge.sessions.GetTags, _ref(bridge, args, op)).tags)


def session_set_tags(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    tags = _strings(args[1] if len(args) > 1 else None, f"{op}: tags")
    request = sessions_pb2.SetTagsRequest(session_id=_target(bridge, args, op), tags=tags)
    return list(bridge.unary(bridge.sessions.SetTags, request).tags)


def session_save(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    return int(bridge.unary(bridge.sessions.Save, _ref(bridge, args, op)).snapshot)


def session_load(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    snapshot = _count(args[1] if len(args) > 1 else None, f"{op}: snapshot (nil for the latest)")
    request = sessions_pb2.LoadSessionRequest(session_id=_target(bridge, args, op), snapshot=snapshot)
    return session_to_plain(bridge.unary(bridge.sessions.Load, request))


def session_save_all(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    return dict(bridge.unary(bridge.sessions.SaveAll, common_pb2.Empty()).snapshots)


def session_restore_recent(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    if not args or args[0] is None:
        raise InvalidArgument(f"{op}: count must be an integer")
    count = _count(args[0], f"{op}: count", UINT32_MAX)
    request = sessions_pb2.RestoreRecentRequest(count=count)
    return list(bridge.unary(bridge.sessions.RestoreRecent, request).session_ids)


def session_can_replay(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    return bool(bridge.unary(bridge.sessions.CanReplay, _ref(bridge, args, op)).replayable)


def session_replay(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    opts = _options(args[1:], op, ("speed",))
    speed = opts.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or isinstance(speed, bool):
        raise InvalidArgument(f"{op}: speed must be a number")
    request = sessions_pb2.ReplayRequest(session_id=_target(bridge, args, op), speed=float(speed))
    return str(bridge.unary(bridge.sessions.Replay, request).replay_session_id)


def session_get_timeline(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """A page of the timeline; `cursor` (the previous page's `next_cursor`) is another name for `after`."""
    opts = _options(args[1:], op, ("after", "cursor", "limit", "types"))
    limit = _count(opts.get("limit"), f"{op}: limit", UINT32_MAX)
    after = _string(opts.get("after"), f"{op}: after")
    cursor = _string(opts.get("cursor"), f"{op}: cursor")
    if after and cursor and after != cursor:
        raise InvalidArgument(f"{op}: after and cursor disagree (cursor is another name for after)")
    request = sessions_pb2.GetTimelineRequest(
        session_id=_target(bridge, args, op),
        after=after or cursor,
        limit=limit,
        types=_strings(opts.get("types"), f"{op}: types"),
    )
    timeline = bridge.unary(bridge.sessions.GetTimeline, request)
    entries: list[PlainValue] = [
        {"id": e.id, "timestamp": e.timestamp, "type": e.type, "description": e.description,
         "job_id": e.job_id or None, "data": from_value_map(e.data)}
        for e in timeline.entries
    ]  # fmt: skip
    return page_value(entries, timeline.next_after)


def session_await_replay(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """Internal to the engines' Session.replay callbacks: the replay's timeline entries after
    `after`, waiting up to ~1 s for new ones; `finished` once the replay has ended."""
    replay_id = _string(args[0] if args else None, f"{op}: replay id")
    after = _string(args[1] if len(args) > 1 else None, f"{op}: after")
    give_up = time.monotonic() + AWAIT_REPLAY_SECONDS
    while True:
        request = sessions_pb2.GetTimelineRequest(session_id=replay_id, after=after, limit=100)
        entries = bridge.unary(bridge.sessions.GetTimeline, request).entries
        if entries or time.monotonic() >= give_up or bridge.call_time_left() <= 0:
            break
        time.sleep(0.05)
    return {
        "entries": [
            with_times({"id": e.id, "type": e.type, "hook": e.type in HOOK_POINTS, "job_id": e.job_id or None,
                        "data": from_value_map(e.data)}, timestamp=e.timestamp)
            for e in entries
        ],
        "finished": any(e.type == "replay.finished" for e in entries),
    }  # fmt: skip


def session_get_replay_metadata(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    meta = bridge.unary(bridge.sessions.GetReplayMetadata, _ref(bridge, args, op))
    return {
        "replayable": meta.replayable, "job_count": meta.job_count, "event_count": meta.event_count,
        "first_event": meta.first_event, "last_event": meta.last_event, "duration": meta.duration,
        "replays": list(meta.replays),
    }  # fmt: skip


def session_get_current(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    current: sessions_pb2.CurrentSession = bridge.unary(bridge.sessions.GetCurrent, common_pb2.Empty())
    bridge.current_session = current.session_id
    return current.session_id or None


def session_set_current(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    session_id = "" if not args or args[0] is None else _session_id(args, op)
    request = sessions_pb2.SetCurrentSessionRequest(session_id=session_id)
    current: sessions_pb2.CurrentSession = bridge.unary(bridge.sessions.SetCurrent, request)
    bridge.current_session = current.session_id
    return current.session_id or None


HANDLERS: Handlers = {
    "Session.create": session_create,
    "Session.get": session_get,
    "Session.list": session_list,
    "Session.getCurrent": session_get_current,
    "Session.setCurrent": session_set_current,
    "Session.suspend": session_transition,
    "Session.resume": session_transition,
    "Session.complete": session_transition,
    "Session.delete": session_delete,
    "Session.getMetadata": session_get_metadata,
    "Session.updateMetadata": session_update_metadata,
    "Session.getTags": session_get_tags,
    "Session.setTags": session_set_tags,
    "Session.save": session_save,
    "Session.load": session_load,
    "Session.saveAll": session_save_all,
    "Session.restoreRecent": session_restore_recent,
    "Session.canReplay": session_can_replay,
    "Session.replay": session_replay,
    "Session.getTimeline": session_get_timeline,
    "Session.getReplayMetadata": session_get_replay_metadata,
    AWAIT_REPLAY_OP: session_await_replay,
}

__all__ = ["AWAIT_REPLAY_OP", "HANDLERS"]
