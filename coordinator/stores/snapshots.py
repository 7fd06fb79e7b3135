"""Numbered, immutable session snapshots: save, load, saveAll, restoreRecent.

  sp:session:{id}:snapshot:{n}   the Session message as it was, plus the timeline position
  sp:session:{id}:snapshot:{n}:state   a copy of the session's State scope (`state` = 1 in the snapshot)
  sp:principal:{p}:saved         zset: session id -> time of its latest save

Everything is durable regardless of `save`: snapshots are points to return to. Loading restores
name, description, tags, metadata and State values, makes the session active, and never removes
newer snapshots. (A snapshot written before State existed leaves the live State as it is.)
"""

from __future__ import annotations

import json
import time

from scriptpool.errors import InvalidArgument, NotFound
from scriptpool.v1 import sessions_pb2

from coordinator.auth import Caller
from coordinator.stores import timeline
from coordinator.stores.sessions import SessionStore, principal_sessions_key, session_key
from coordinator.stores.state import session_state_key
from workers.job_records import text, texts

MAX_RESTORE = 100


def snapshot_key(session_id: str, number: int) -> str:
    return f"sp:session:{session_id}:snapshot:{number}"


def snapshot_state_key(session_id: str, number: int) -> str:
    return snapshot_key(session_id, number) + ":state"


def saved_key(principal: str) -> str:
    return f"sp:principal:{principal}:saved"


class SnapshotStore:
    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.redis = sessions.redis

    def save(self, caller: Caller, session_id: str) -> int:
        session = self.sessions.get(caller, session_id)
        number = int(self.redis.hincrby(session_key(session_id), "snapshots", 1))
        last = self.redis.xrevrange(timeline.timeline_key(session_id), count=1)
        position = text(last[0][0]) if last else ""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            snapshot_key(session_id, number),
            mapping={"session": session.SerializeToString(), "timeline_position": position, "saved_at": repr(now),
                     "state": "1"},
        )  # fmt: skip
        pipe.copy(session_state_key(session_id), snapshot_state_key(session_id, number), replace=True)
        pipe.zadd(saved_key(caller.principal), {session_id: now})
        timeline.append(pipe, session_id, "session.saved", f"snapshot {number}", job_id=caller.job_id,
                        data={"snapshot": number})  # fmt: skip
        timeline.emit_event(pipe, "session.saved", session_id, caller.job_id, {"snapshot": number})
        pipe.execute()
        return number

    def load(self, caller: Caller, session_id: str, number: int = 0) -> sessions_pb2.Session:
        self.sessions.get(caller, session_id)
        if number == 0:
            latest = self.redis.hget(session_key(session_id), "snapshots")
            number = int(latest or 0)
            if number == 0:
                raise NotFound(f"session {session_id} has no saved snapshot; call save first")
        raw, has_state = self.redis.hmget(snapshot_key(session_id, number), "session", "state")
        if raw is None:
            raise NotFound(f"session {session_id} has no snapshot {number}")
        saved = sessions_pb2.Session.FromString(raw)  # type: ignore[arg-type]
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            session_key(session_id),
            mapping={
                "name": saved.name,
                "description": saved.description,
                "tags": json.dumps(list(saved.tags)),
                "metadata": saved.metadata.SerializeToString(deterministic=True),
                "state": "active",
                "updated_at": repr(now),
            },
        )
        if has_state:
            pipe.delete(session_state_key(session_id))
            pipe.copy(snapshot_state_key(session_id, number), session_state_key(session_id))
        pipe.zadd(principal_sessions_key(caller.principal), {session_id: now})
        timeline.append(pipe, session_id, "session.loaded", f"snapshot {number}", job_id=caller.job_id,
                        data={"snapshot": number})  # fmt: skip
        timeline.emit_event(pipe, "session.loaded", session_id, caller.job_id, {"snapshot": number})
        pipe.execute()
        return self.sessions.get(caller, session_id)

    def save_all(self, caller: Caller) -> dict[str, int]:
        ids = texts(self.redis.zrevrange(principal_sessions_key(caller.principal), 0, -1))
        saved: dict[str, int] = {}
        for session_id in ids:
            state = self.redis.hget(session_key(session_id), "state")
            if state == b"active":
                saved[session_id] = self.save(caller, session_id)
        return saved

    def restore_recent(self, caller: Caller, count: int) -> list[str]:
        if not 1 <= count <= MAX_RESTORE:
            raise InvalidArgument(f"count must be between 1 and {MAX_RESTORE} (got {count})")
        ids = texts(self.redis.zrevrange(saved_key(caller.principal), 0, count - 1))
        for session_id in ids:
            self.load(caller, session_id)
        return ids
