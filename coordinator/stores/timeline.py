"""A session's timeline: an ordered log in a Redis Stream, `sp:session:{id}:timeline`.

Entries: lifecycle transitions, jobs started/finished, every global operation a job performs (name,
outcome), saves and loads. Each has an id (the stream id), timestamp, type, description, job_id and
a data map. Lifecycle changes are also appended to the session owner's event stream
(`sp:events:{principal}`, proto/scriptpool/core/event_streams.py) under their hook-point names, for the Event/Hook
services to deliver.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence

from redis import Redis
from redis.client import Pipeline

from scriptpool.coordinator.stores import lua
from scriptpool.core.event_streams import append_event
from scriptpool.core.job_records import TIMELINE_MAX, hash_fields, text
from scriptpool.core.keys import timeline_key
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import common_pb2, sessions_pb2
from scriptpool.values import PlainValue, from_value_map, to_value_map

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def entry_fields(
    kind: str, description: str, job_id: str = "", data: Mapping[str, PlainValue] | None = None
) -> dict[str, bytes | str]:
    return {
        "type": kind,
        "description": description,
        "job_id": job_id,
        "ts": repr(time.time()),
        "data": to_value_map(dict(data or {})).SerializeToString(),
    }


@functools.lru_cache(maxsize=1024)
def global_call_data(op: str, outcome: str) -> bytes:
    """The `data` of a `global_call` entry: a serialized ValueMap {op, outcome}."""
    return to_value_map({"op": op, "outcome": outcome}).SerializeToString()


def append(
    target: Redis | Pipeline,
    session_id: str,
    kind: str,
    description: str,
    *,
    job_id: str = "",
    data: Mapping[str, PlainValue] | None = None,
) -> None:
    target.xadd(timeline_key(session_id), entry_fields(kind, description, job_id, data), maxlen=TIMELINE_MAX)  # type: ignore[arg-type]


LUA_RECORD_CALL = lua.script("timeline_record_call", TIMELINE_MAX=TIMELINE_MAX)


class CallRecord:
    """One global call that an operation records itself, inside its own Lua script.

    `lua_args` gives the arguments `LUA_RECORD_CALL` reads; after the script has run, the operation
    sets `written` so the `@recorded` wrapper does not append a second entry (even when the script's
    verdict then becomes an error). Calls by clients, or by jobs without a session, are not recorded.
    """

    __slots__ = ("job_id", "op", "session_id", "written")

    def __init__(self, op: str, job_id: str, session_id: str) -> None:
        self.op = op
        self.job_id = job_id
        self.session_id = session_id if job_id else ""
        self.written = False

    def lua_args(self, outcomes: Sequence[str]) -> list[bytes | str]:
        if not self.session_id:
            return [""]
        args: list[bytes | str] = [timeline_key(self.session_id), self.job_id, repr(time.time()), self.op]
        for outcome in outcomes:
            args += [outcome, global_call_data(self.op, outcome)]
        return args


def emit_event(
    target: Redis | Pipeline, name: str, session_id: str, job_id: str = "", data: Mapping[str, PlainValue] | None = None
) -> None:
    """An event for the owner of `session_id` (looked up when the pipeline runs: emit before deleting)."""
    fields = entry_fields(name, name, job_id, data)
    fields["session_id"] = session_id
    append_event(target, "", session_id, fields)


TRANSITION_HOOK_POINTS = {
    "suspended": "session.suspended",
    "active": "session.resumed",
    "completed": "session.completed",
}
"""A state transition is recorded as one `session.state_changed` entry; asking for the hook point
of the transition (`types = {"session.suspended"}`) finds it too."""


def _transition_wanted(kind: str, fields: Mapping[str, bytes], wanted: set[str]) -> bool:
    if kind != "session.state_changed":
        return False
    new_state = from_value_map(common_pb2.ValueMap.FromString(fields["data"])).get("new_state")
    return isinstance(new_state, str) and TRANSITION_HOOK_POINTS.get(new_state, "") in wanted


def read(
    redis: Redis, session_id: str, request: sessions_pb2.GetTimelineRequest, max_scan: int = 10_000
) -> sessions_pb2.Timeline:
    """A page of the timeline after `request.after`. Filtering by type may skip entries: it reads in
    batches until the page is full, the stream ends, or `max_scan` entries were read; then
    `next_after` is where to go on from (also when the page ended short at `max_scan`)."""
    limit = request.limit or DEFAULT_PAGE
    if limit > MAX_PAGE:
        raise InvalidArgument(f"limit {limit} is above the maximum {MAX_PAGE}")
    start = f"({request.after}" if request.after else "-"
    wanted = set(request.types)
    timeline = sessions_pb2.Timeline()
    scanned = 0
    last_read = ""
    ended = False
    while len(timeline.entries) < limit and scanned < max_scan:
        count = min(limit, max_scan - scanned)
        try:
            batch = redis.xrange(timeline_key(session_id), min=start, max="+", count=count) or []
        except Exception as exc:  # a malformed `after` id
            raise InvalidArgument(f"after: {request.after!r} is not a timeline entry id") from exc
        for entry_id, raw in batch:
            scanned += 1
            last_read = text(entry_id)
            start = f"({last_read}"
            fields = hash_fields(raw)
            kind = fields["type"].decode()
            if wanted and kind not in wanted and not _transition_wanted(kind, fields, wanted):
                continue
            timeline.entries.append(
                sessions_pb2.TimelineEntry(
                    id=last_read,
                    timestamp=float(fields["ts"]),
                    type=kind,
                    description=fields["description"].decode(),
                    job_id=fields["job_id"].decode(),
                    data=common_pb2.ValueMap.FromString(fields["data"]),
                )
            )
            if len(timeline.entries) == limit:
                break
        if len(batch) < count:
            ended = True
            break
    if len(timeline.entries) == limit:
        timeline.next_after = timeline.entries[-1].id
    elif not ended and last_read:
        timeline.next_after = last_read  # stopped at max_scan: the caller goes on from here
    return timeline
