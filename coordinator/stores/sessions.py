"""Sessions in Redis.

sp:session:{id}               hash: id principal name description state tags(json) metadata(ValueMap)
                                    parent created_at updated_at [created_by_job retention_seconds]
sp:principal:{p}:sessions     zset: session id -> updated_at
sp:sessions:expiring          zset: job-created session id -> when its retention ends (scriptpool.core.job_records)

A session made for a job submitted without one is marked with that job (`created_by_job`) and its
retention. When the job ends, the finish script (proto/scriptpool/core/job_records.py) completes it and, if the
retention is not 0, lists it in `sp:sessions:expiring`; the coordinator's sweeper deletes it then
through `delete` like any other (coordinator/session_expiry.py), so every count and quota goes down.
A later job submitted into it, or a snapshot loaded into it, removes the mark: it is then the
principal's own session and stays. Sessions a client or a script creates are never marked.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import lua, timeline
from scriptpool.coordinator.stores.not_found import refused, session_not_found
from scriptpool.coordinator.stores.quotas import capped, exceeded
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.timeline import LUA_RECORD_CALL, CallRecord
from scriptpool.coordinator.stores.validation import (
    MAX_DESCRIPTION,
    MAX_NAME,
    check_metadata,
    check_tags,
    check_text,
    check_uuid,
    parse_cursor,
)
from scriptpool.core.job_records import SESSION_JOB_FIELD, SESSION_RETENTION_FIELD, hash_fields, text, texts
from scriptpool.core.keys import (
    EXPIRING_SESSIONS_KEY,
    job_key,
    principal_sessions_key,
    quota_key,
    saved_key,
    session_access_key,
    session_key,
    shared_sessions_key,
    snapshot_bytes_key,
    state_bytes_key,
)
from scriptpool.core.lean_redis import LeanPool, LeanScript, read, read_many
from scriptpool.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from scriptpool.v1 import common_pb2, sessions_pb2
from scriptpool.values import PlainValue

DEFAULT_PAGE = 100
MAX_PAGE = 1000
SORT_FIELDS = ("updated_at", "created_at", "name")

# transition name -> (states it may start from, state it leads to, hook point)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "suspend": (("active",), "suspended", "session.suspended"),
    "resume": (("suspended",), "active", "session.resumed"),
    "complete": (("active", "suspended"), "completed", "session.completed"),
}

_TRANSITION = lua.script("sessions_transition")


_SESSION_KEY_SUFFIXES = (
    ":timeline",  # coordinator/stores/timeline.py
    ":jobs",  # proto/scriptpool/core/job_records.py
    ":replays",  # coordinator/stores/replay.py
    ":state",  # coordinator/stores/state.py
    ":artifact-bytes",  # coordinator/stores/artifacts.py (the rest of its keys go with its artifacts)
    ":artifact-names",
    ":artifacts",
    ":artifacts:created",
    ":artifacts:size",
    ":grants",  # coordinator/stores/session_access.py (each grantee's index entry goes in `delete`)
    ":audit",
)


def session_keys(session_id: str) -> list[str]:
    """Every key of a session but its snapshots (`snapshot_key`) and its artifacts' type, tag and
    word sets (emptied, so gone, as its artifacts are deleted): what `delete` removes. A store that
    adds a key under `sp:session:{id}:` adds its suffix here (tests/integration/test_call_bounds.py
    checks that a deleted session leaves no key behind)."""
    return [session_key(session_id)] + [session_key(session_id) + suffix for suffix in _SESSION_KEY_SUFFIXES]


JOB_CURRENT_FIELD = "current_session"
"""The field of a job's record (`sp:job:{id}`) holding the session it chose with `Session.setCurrent`."""


def job_current_session(redis: Redis, caller: Caller) -> str:
    """A job's current session: the one it was submitted with, until it calls `Session.setCurrent`."""
    chosen = redis.hget(job_key(caller.job_id), JOB_CURRENT_FIELD)
    return caller.session_id if chosen is None else text(chosen)


def _decode(raw: object) -> sessions_pb2.Session:
    text = hash_fields(raw)
    session = sessions_pb2.Session(
        id=text["id"].decode(),
        name=text.get("name", b"").decode(),
        description=text.get("description", b"").decode(),
        state=sessions_pb2.SessionState.Value("SESSION_STATE_" + text["state"].decode().upper()),
        tags=json.loads(text.get("tags", b"[]")),
        metadata=common_pb2.ValueMap.FromString(text.get("metadata", b"")),
        parent_session_id=text.get("parent", b"").decode(),
        principal=text["principal"].decode(),
        created_at=float(text["created_at"]),
        updated_at=float(text["updated_at"]),
    )
    return session


@dataclass(frozen=True, slots=True)
class NewSession:
    """A checked session not yet written: what `create` returns and the hash fields it stores."""

    session: sessions_pb2.Session
    fields: dict[str, str | bytes]


_GET_RECORDED = LUA_RECORD_CALL + lua.script("sessions_get_recorded")
GET_OUTCOMES = ("OK", "NOT_FOUND")

_UNLINK = lua.script("sessions_unlink")


def _build(principal: str, name: str, description: str, tags: list[str], metadata: bytes, parent: str) -> NewSession:
    now = time.time()
    session = sessions_pb2.Session(
        id=str(uuid.uuid4()), name=name, description=description, state=sessions_pb2.SESSION_STATE_ACTIVE,
        tags=tags, metadata=common_pb2.ValueMap.FromString(metadata), parent_session_id=parent,
        principal=principal, created_at=now, updated_at=now,
    )  # fmt: skip
    fields: dict[str, str | bytes] = {
        "id": session.id,
        "principal": principal,
        "name": name,
        "description": description,
        "state": "active",
        "tags": json.dumps(tags),
        "metadata": metadata,
        "parent": parent,
        "created_at": repr(now),
        "updated_at": repr(now),
    }
    return NewSession(session, fields)


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        max_sessions_per_principal: int,
        lean: LeanPool | None = None,
        max_list_scan: int = 10_000,
        max_timeline_scan: int = 10_000,
        max_snapshots: int = 20,
        job_session_retention_seconds: int = 0,
        access: SessionAccess | None = None,
    ) -> None:
        self.redis = redis
        self.access = access if access is not None else SessionAccess(redis)
        """Grants on sessions (ADR 0021): who besides the owner may do what."""
        self.job_session_retention_seconds = job_session_retention_seconds
        """How long a session made for a job stays after that job ended (0 = for good), as
        settings.job_session_retention_seconds."""
        self.max_sessions = max_sessions_per_principal
        self.max_list_scan = max_list_scan
        """Sessions one `list` call reads (settings.max_list_scan)."""
        self.max_timeline_scan = max_timeline_scan
        """Timeline entries one `getTimeline` call reads (settings.max_timeline_scan)."""
        self.max_snapshots = max_snapshots
        """Snapshots a session keeps (settings.max_snapshots_per_session): the ones `delete` removes."""
        self._transition = redis.register_script(_TRANSITION)
        self.lean = lean if lean is not None else LeanPool(redis)
        self._get_recorded = LeanScript(redis, self.lean, _GET_RECORDED)
        self._unlink = redis.register_script(_UNLINK)
        self.delete_hooks: list[Callable[[str], None]] = []
        """Called with the session id before a session is deleted (its artifacts go first)."""

    def create(self, caller: Caller, request: sessions_pb2.CreateSessionRequest) -> sessions_pb2.Session:
        new = self.prepare(caller, request)
        pipe = self.redis.pipeline(transaction=True)
        self.write(pipe, new, caller.job_id)
        pipe.execute()
        return new.session

    def _session_count(self, principal: str) -> int:
        key = principal_sessions_key(principal)
        count = read(self.lean, "ZCARD", key) if self.lean.supported else self.redis.zcard(key)
        assert isinstance(count, int)
        return count

    def prepare(self, caller: Caller, request: sessions_pb2.CreateSessionRequest) -> NewSession:
        """Check a new session and build it; `write` stores it, in the caller's transaction (a job
        submitted without a session gets one in the same MULTI as the job itself)."""
        name = check_text(request.name, "name", MAX_NAME)
        description = check_text(request.description, "description", MAX_DESCRIPTION)
        tags = check_tags(list(request.tags))
        metadata = check_metadata(request.metadata)
        parent = request.parent_session_id
        if parent:
            self.get(caller, parent, "Session.create")  # must exist and be the caller's (owner only)
        self.check_room(caller.principal, 1)
        return _build(caller.principal, name, description, tags, metadata, parent)

    def prepare_for_jobs(self, caller: Caller, names: Sequence[str]) -> list[NewSession]:
        """New sessions for jobs submitted without one, named `names` (short and fixed: nothing else
        to check); the principal's room for all of them is checked in one read."""
        self.check_room(caller.principal, len(names))
        return [_build(caller.principal, name, "", [], b"", "") for name in names]

    def check_room(self, principal: str, wanted: int) -> None:
        """RESOURCE_EXHAUSTED unless `principal` may hold `wanted` more sessions (its `sessions` quota:
        its override capped by `max_sessions`), read in one round trip."""
        count, override = read_many(
            self.lean,
            self.redis,
            [("ZCARD", principal_sessions_key(principal)), ("HGET", quota_key(principal), "sessions")],
        )
        assert isinstance(count, int)
        assert override is None or isinstance(override, bytes)
        limit = capped(override, self.max_sessions)
        if count + wanted > limit:
            raise exceeded(principal, "sessions", limit, count, wanted, "delete some first")

    def unknown(self, caller: Caller, session_ids: Collection[str]) -> set[str]:
        """The ids among `session_ids` that are not sessions of the caller, read in one round trip
        (each id must already be a checked UUID)."""
        ids = list(session_ids)
        owners = read_many(
            self.lean, self.redis, [("HGET", session_key(session_id), "principal") for session_id in ids]
        )
        mine = caller.principal.encode()
        unknown = set()
        for session_id, owner in zip(ids, owners, strict=True):
            if owner != mine:  # jobs run only in their owner's sessions, whatever was granted (ADR 0021)
                unknown.add(session_id)
                if isinstance(owner, bytes):
                    refused(caller, "session", session_id, owner.decode())
                    self.access.audit(self.redis, session_id, caller, "Job.submit", False, "owner only")
        return unknown

    def write(self, pipe: Pipeline, new: NewSession, job_id: str = "", *, for_job: str = "") -> None:
        """Add the session's writes to `pipe`. `for_job`: the id of the job it is made for (a job
        submitted without a session): the session is marked as that job's, to end with it."""
        session_id, name = new.session.id, new.session.name
        fields = new.fields
        if for_job:
            fields = {
                **fields,
                SESSION_JOB_FIELD: for_job,
                SESSION_RETENTION_FIELD: str(self.job_session_retention_seconds),
            }
        pipe.hset(session_key(session_id), mapping=fields)  # type: ignore[arg-type]
        pipe.zadd(principal_sessions_key(new.session.principal), {session_id: new.session.created_at})
        timeline.append(pipe, session_id, "session.created", f"session created: {name}", job_id=job_id)
        timeline.emit_event(pipe, "session.created", session_id, job_id)

    def _load(self, session_id: str) -> sessions_pb2.Session:
        raw = self.redis.hgetall(session_key(session_id))
        if not raw:
            raise session_not_found(session_id)
        return _decode(raw)

    def get(self, caller: Caller, session_id: str, op: str) -> sessions_pb2.Session:
        """The session, when the caller owns it or holds a grant that allows `op`
        (session_access.OPERATIONS); otherwise the refusal is audited and raised."""
        check_uuid(session_id, "session id")
        session = self._load(session_id)
        if session.principal != caller.principal:
            self.access.check(caller, session_id, op, session.principal)
        return session

    def get_recorded(self, caller: Caller, session_id: str, record: CallRecord) -> sessions_pb2.Session:
        """`get`, with a job's timeline record written in the same round trip (see `@recorded`)."""
        check_uuid(session_id, "session id")
        reply = self._get_recorded(
            [session_key(session_id), session_access_key(session_id)],
            [caller.principal, *record.lua_args(GET_OUTCOMES)],
        )
        record.written = True
        if not isinstance(reply, list):  # not the caller's (nor granted to it), or none: one answer (ADR 0017)
            if reply:
                self.access.refuse(caller, session_id, record.op, text(reply), 0, "no grant")
            raise session_not_found(session_id)
        return _decode(dict(zip(reply[::2], reply[1::2], strict=True)))

    def exists_for(self, caller: Caller, session_id: str) -> bool:
        return self.redis.hget(session_key(session_id), "principal") == caller.principal.encode()

    def transition(self, caller: Caller, session_id: str, name: str) -> sessions_pb2.Session:
        """suspend / resume / complete, atomically; FAILED_PRECONDITION names both states."""
        allowed, target, hook_point = TRANSITIONS[name]
        check_uuid(session_id, "session id")
        verdict, *rest = self._run_transition(session_id, caller.principal, target, allowed)
        if verdict == "missing" and rest[0]:  # someone else's: a grantee with admin acts for the owner
            self.access.check(caller, session_id, f"Session.{name}", rest[0])
            verdict, *rest = self._run_transition(session_id, rest[0], target, allowed)
        if verdict == "missing":
            raise session_not_found(session_id)
        old = rest[0]
        if verdict == "refused":
            raise FailedPrecondition(
                f"cannot {name} session {session_id}: it is {old}; {name} needs {' or '.join(allowed)}"
            )
        data: dict[str, PlainValue] = {"old_state": old, "new_state": target}
        pipe = self.redis.pipeline(transaction=False)
        timeline.append(
            pipe, session_id, "session.state_changed", f"{old} -> {target}", job_id=caller.job_id, data=data
        )
        timeline.emit_event(pipe, "session.state_changed", session_id, caller.job_id, data)
        timeline.emit_event(pipe, hook_point, session_id, caller.job_id, data)
        pipe.execute()
        return self._load(session_id)

    def _run_transition(self, session_id: str, owner: str, target: str, allowed: tuple[str, ...]) -> list[str]:
        answer = self._transition(
            keys=[session_key(session_id), principal_sessions_key(owner), session_id],
            args=[owner, target, repr(time.time()), *allowed],
        )
        return [a.decode() if isinstance(a, bytes) else a for a in answer]

    def delete(self, caller: Caller, session_id: str) -> None:
        """Delete in any state, with its timeline, snapshots, State, job index and artifacts. It
        names the session's keys (`session_keys`) rather than scanning for them: the work grows with
        what the session holds, never with the rest of the database."""
        session = self.get(caller, session_id, "Session.delete")
        for hook in self.delete_hooks:
            hook(session_id)
        record, state = session_key(session_id), session_key(session_id) + ":state"
        doomed = [record, state] + [key for key in session_keys(session_id) if key not in (record, state)]
        pipe = self.redis.pipeline(transaction=True)
        timeline.emit_event(pipe, "session.deleted", session_id, caller.job_id)  # first: it finds the owner
        self._unlink(
            keys=[snapshot_bytes_key(session.principal), state_bytes_key(session.principal), *doomed],
            args=[session_id, self.max_snapshots],
            client=pipe,
        )
        self.access.forget(pipe, session_id)
        pipe.zrem(principal_sessions_key(session.principal), session_id)
        pipe.zrem(saved_key(session.principal), session_id)
        pipe.zrem(EXPIRING_SESSIONS_KEY, session_id)
        pipe.execute()

    def update_metadata(self, caller: Caller, session_id: str, updates: common_pb2.ValueMap) -> common_pb2.ValueMap:
        """Merge top-level keys; a null value removes its key. Optimistic (WATCH) so merges never lose."""
        owner = self.get(caller, session_id, "Session.updateMetadata").principal
        key = session_key(session_id)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.hget(key, "metadata")
                    if raw is None:
                        raise session_not_found(session_id)
                    merged = common_pb2.ValueMap.FromString(raw)  # type: ignore[arg-type]
                    for name, value in updates.fields.items():
                        if value.WhichOneof("kind") in (None, "null_value"):
                            merged.fields.pop(name, None)
                        else:
                            merged.fields[name].CopyFrom(value)
                    data = check_metadata(merged)
                    now = time.time()
                    pipe.multi()
                    pipe.hset(key, mapping={"metadata": data, "updated_at": repr(now)})
                    pipe.zadd(principal_sessions_key(owner), {session_id: now})
                    timeline.append(
                        pipe, session_id, "session.metadata_updated", "metadata updated", job_id=caller.job_id,
                        data={"keys": list[PlainValue](sorted(updates.fields))},
                    )  # fmt: skip
                    pipe.execute()
                    return merged
                except WatchError:
                    continue

    def set_tags(self, caller: Caller, session_id: str, tags: list[str]) -> list[str]:
        owner = self.get(caller, session_id, "Session.setTags").principal
        clean = check_tags(tags)
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(session_key(session_id), mapping={"tags": json.dumps(clean), "updated_at": repr(now)})
        pipe.zadd(principal_sessions_key(owner), {session_id: now})
        timeline.append(pipe, session_id, "session.tags_set", ",".join(clean), job_id=caller.job_id)
        pipe.execute()
        return clean

    def list(self, caller: Caller, request: sessions_pb2.ListSessionsRequest) -> sessions_pb2.ListSessionsResponse:
        """A page of the caller's sessions, and of the ones shared with it, that match the filters.
        Sorted by `updated_at` (the default) with nothing shared, it walks the principal's index in
        that order from the cursor, reading at most `max_list_scan` sessions: a page may end short,
        with a `next_cursor` to go on from. Other sorts, and any sort once sessions are shared with
        the caller, need every session, so they are refused past `max_list_scan` sessions."""
        limit = request.page.limit or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise InvalidArgument(f"page.limit {limit} is above the maximum {MAX_PAGE}")
        offset = parse_cursor(request.page.cursor)
        sort = request.sort or "-updated_at"
        descending = sort.startswith("-") or sort == "updated_at"
        field = sort.lstrip("-")
        if field not in SORT_FIELDS:
            raise InvalidArgument(f"sort must be one of {', '.join(SORT_FIELDS)} (prefix '-' for descending)")
        if request.parent_session_id:
            check_uuid(request.parent_session_id, "parent_session_id")
        matches = _session_filter(request)
        shared = self.redis.zcard(shared_sessions_key(caller.principal))
        if field == "updated_at" and not shared:
            return self._list_by_index(caller, matches, offset, limit, descending)
        count = self._session_count(caller.principal) + shared
        if count > self.max_list_scan:
            also = f" ({shared} of them shared with it)" if shared else ""
            raise ResourceExhausted(
                f"sort by {field}: principal {caller.principal!r} has {count} sessions{also}, more than the "
                f"{self.max_list_scan} one list call reads"
                + ("; sort by updated_at (the default) and page" if not shared else "; revoke or delete some")
            )
        ids = texts(self.redis.zrevrange(principal_sessions_key(caller.principal), 0, -1))
        ids += texts(self.redis.zrange(shared_sessions_key(caller.principal), 0, -1))  # ADR 0021
        matched = [s for s in self._read_sessions(ids) if matches(s)]
        matched.sort(key=lambda s: getattr(s, field), reverse=descending)
        page = matched[offset : offset + limit]
        response = sessions_pb2.ListSessionsResponse(sessions=page)
        if offset + limit < len(matched):
            response.next_cursor = str(offset + limit)
        return response

    def _read_sessions(self, ids: Sequence[str]) -> Sequence[sessions_pb2.Session]:
        pipe = self.redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.hgetall(session_key(session_id))
        return [_decode(raw) for raw in pipe.execute() if raw]

    def _list_by_index(
        self, caller: Caller, matches: Callable[[sessions_pb2.Session], bool], start: int, limit: int, descending: bool
    ) -> sessions_pb2.ListSessionsResponse:
        """Walk the principal's index (scored by updated_at) from position `start`; the cursor is the
        position after the last session read."""
        key = principal_sessions_key(caller.principal)
        scan_end = start + self.max_list_scan
        position = start
        response = sessions_pb2.ListSessionsResponse()
        while len(response.sessions) < limit and position < scan_end:
            chunk = min(max(limit, _LIST_CHUNK), scan_end - position)
            ranged = self.redis.zrevrange if descending else self.redis.zrange
            ids = texts(ranged(key, position, position + chunk - 1))
            if not ids:
                return response  # the end of the index: no cursor
            pipe = self.redis.pipeline(transaction=False)
            for session_id in ids:
                pipe.hgetall(session_key(session_id))
            for raw in pipe.execute():
                position += 1
                if raw:
                    session = _decode(raw)
                    if matches(session):
                        response.sessions.append(session)
                        if len(response.sessions) == limit:
                            break
            if len(response.sessions) < limit and len(ids) < chunk:
                return response  # the end of the index: no cursor
        if self.redis.zcard(key) > position:
            response.next_cursor = str(position)
        return response


_LIST_CHUNK = 100
"""Sessions `Session.list` reads per round trip while it filters."""


def _session_filter(request: sessions_pb2.ListSessionsRequest) -> Callable[[sessions_pb2.Session], bool]:
    """The request's filters as one test (its time arguments checked now: INVALID_ARGUMENT)."""
    ranges = [
        (field_name, _epoch(getattr(request, attr), attr), after)
        for attr, field_name, after in (
            ("created_after", "created_at", True),
            ("created_before", "created_at", False),
            ("updated_after", "updated_at", True),
            ("updated_before", "updated_at", False),
        )
        if request.HasField(attr)  # type: ignore[arg-type]
    ]
    wanted_tags = set(request.tags)
    name = request.name.lower()

    def matches(s: sessions_pb2.Session) -> bool:
        return (
            (not request.state or s.state == request.state)
            and wanted_tags.issubset(s.tags)
            and (not name or name in s.name.lower())
            and (not request.parent_session_id or s.parent_session_id == request.parent_session_id)
            and all(s.metadata.fields.get(k) == v for k, v in request.metadata.fields.items())
            and all((getattr(s, f) > t) if after else (getattr(s, f) < t) for f, t, after in ranges)
        )

    return matches


def _epoch(value: common_pb2.Value, what: str) -> float:
    """RFC 3339 string or epoch seconds; anything else is INVALID_ARGUMENT, never ignored."""
    kind = value.WhichOneof("kind")
    if kind == "int_value":
        return float(value.int_value)
    if kind == "float_value" and math.isfinite(value.float_value):
        return value.float_value
    if kind == "string_value":
        try:
            parsed = datetime.fromisoformat(value.string_value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise InvalidArgument(f"{what}: expected an RFC 3339 time with a zone (2026-01-31T12:00:00Z) or epoch seconds")
