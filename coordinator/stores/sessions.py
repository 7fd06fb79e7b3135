"""Sessions in Redis.

sp:session:{id}               hash: id principal name description state tags(json) metadata(ValueMap)
                                    parent created_at updated_at
sp:principal:{p}:sessions     zset: session id -> updated_at
"""

from __future__ import annotations

import json
import time
import uuid

from redis import Redis
from scriptpool.errors import InvalidArgument, NotFound, ResourceExhausted
from scriptpool.v1 import common_pb2, sessions_pb2

from coordinator.auth import Caller
from coordinator.stores.validation import (
    MAX_DESCRIPTION,
    MAX_NAME,
    check_metadata,
    check_tags,
    check_text,
    check_uuid,
)
from workers.job_records import hash_fields, texts

DEFAULT_PAGE = 100
MAX_PAGE = 1000
SORT_FIELDS = ("updated_at", "created_at", "name")


def session_key(session_id: str) -> str:
    return f"sp:session:{session_id}"


def principal_sessions_key(principal: str) -> str:
    return f"sp:principal:{principal}:sessions"


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


class SessionStore:
    def __init__(self, redis: Redis, max_sessions_per_principal: int) -> None:
        self.redis = redis
        self.max_sessions = max_sessions_per_principal

    def create(self, caller: Caller, request: sessions_pb2.CreateSessionRequest) -> sessions_pb2.Session:
        name = check_text(request.name, "name", MAX_NAME)
        description = check_text(request.description, "description", MAX_DESCRIPTION)
        tags = check_tags(list(request.tags))
        metadata = check_metadata(request.metadata)
        parent = request.parent_session_id
        if parent:
            self.get(caller, parent)  # must exist and be the caller's
        if self.redis.zcard(principal_sessions_key(caller.principal)) >= self.max_sessions:
            raise ResourceExhausted(
                f"principal {caller.principal!r} already has {self.max_sessions} sessions; delete some first"
            )
        session_id = str(uuid.uuid4())
        now = time.time()
        fields = {
            "id": session_id,
            "principal": caller.principal,
            "name": name,
            "description": description,
            "state": "active",
            "tags": json.dumps(tags),
            "metadata": metadata,
            "parent": parent,
            "created_at": repr(now),
            "updated_at": repr(now),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(session_key(session_id), mapping=fields)  # type: ignore[arg-type]
        pipe.zadd(principal_sessions_key(caller.principal), {session_id: now})
        pipe.execute()
        return self._load(session_id)

    def _load(self, session_id: str) -> sessions_pb2.Session:
        raw = self.redis.hgetall(session_key(session_id))
        if not raw:
            raise NotFound(f"session {session_id} not found")
        return _decode(raw)

    def get(self, caller: Caller, session_id: str) -> sessions_pb2.Session:
        check_uuid(session_id, "session id")
        session = self._load(session_id)
        if session.principal != caller.principal:
            raise NotFound(f"session {session_id} not found")  # never confirm another principal's session
        return session

    def list(self, caller: Caller, request: sessions_pb2.ListSessionsRequest) -> sessions_pb2.ListSessionsResponse:
        limit = request.page.limit or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise InvalidArgument(f"page.limit {limit} is above the maximum {MAX_PAGE}")
        offset = _parse_cursor(request.page.cursor)
        sort = request.sort or "-updated_at"
        descending = sort.startswith("-") or sort == "updated_at"
        field = sort.lstrip("-")
        if field not in SORT_FIELDS:
            raise InvalidArgument(f"sort must be one of {', '.join(SORT_FIELDS)} (prefix '-' for descending)")
        if request.parent_session_id:
            check_uuid(request.parent_session_id, "parent_session_id")
        ids = texts(self.redis.zrevrange(principal_sessions_key(caller.principal), 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.hgetall(session_key(session_id))
        sessions = [_decode(raw) for raw in pipe.execute() if raw]
        wanted_tags = set(request.tags)
        matched = [
            s
            for s in sessions
            if (not request.state or s.state == request.state)
            and wanted_tags.issubset(s.tags)
            and (not request.name or request.name.lower() in s.name.lower())
            and (not request.parent_session_id or s.parent_session_id == request.parent_session_id)
            and all(s.metadata.fields.get(k) == v for k, v in request.metadata.fields.items())
        ]
        matched.sort(key=lambda s: getattr(s, field), reverse=descending)
        page = matched[offset : offset + limit]
        response = sessions_pb2.ListSessionsResponse(sessions=page)
        if offset + limit < len(matched):
            response.next_cursor = str(offset + limit)
        return response


def _parse_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise InvalidArgument(f"invalid cursor {cursor!r}: pass back the next_cursor of the previous page")
    return int(cursor)
