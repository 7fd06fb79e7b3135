"""Numbered, immutable session snapshots: save, load, saveAll, restoreRecent.

  sp:session:{id}:snapshot:{n}   the Session message as it was, plus the timeline position
  sp:session:{id}:snapshot:{n}:state   a copy of the session's State scope (`state` = 1 in the snapshot)
  sp:principal:{p}:saved         zset: session id -> time of its latest save
  sp:principal:{p}:snapshot_bytes   the bytes of the principal's snapshots (each snapshot's `bytes`)

Bounds: a session keeps its last `max_per_session` snapshots (a save past it drops the oldest); a
snapshot (session record + State copy) is at most `max_bytes`; a principal's snapshots at most
`max_principal_bytes`; a job makes at most `max_saves_per_job` saves; `saveAll` looks at the
principal's `max_save_all` most recently updated sessions. Each save is checked and written by one
Lua script.

Everything is durable regardless of `save`: snapshots are points to return to. Loading restores
name, description, tags, metadata and State values, makes the session active, and never removes
newer snapshots. (A snapshot written before State existed leaves the live State as it is.)
"""

from __future__ import annotations

import json
import time

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import lua, timeline
from scriptpool.coordinator.stores.not_found import refused, session_not_found
from scriptpool.coordinator.stores.quotas import LUA_QUOTA_LIMIT, exceeded
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.state import MAX_PRINCIPAL_BYTES
from scriptpool.core.job_records import SESSION_JOB_FIELD, text, texts
from scriptpool.core.keys import (
    job_key,
    principal_sessions_key,
    quota_key,
    saved_key,
    session_key,
    session_state_key,
    snapshot_bytes_key,
    snapshot_key,
    snapshot_state_key,
    state_bytes_key,
    timeline_key,
)
from scriptpool.errors import InvalidArgument, NotFound, ResourceExhausted
from scriptpool.v1 import sessions_pb2

MAX_RESTORE = 100
SAVES_FIELD = "saves"
"""Field of a job's record counting its snapshots (`Session.save`, and each session saveAll saved)."""

_SAVE = lua.script("snapshots_save", SAVES_FIELD=SAVES_FIELD)


_LOAD = LUA_QUOTA_LIMIT + lua.script("snapshots_load", SESSION_JOB_FIELD=SESSION_JOB_FIELD)


class SnapshotStore:
    def __init__(
        self,
        sessions: SessionStore,
        *,
        max_per_session: int = 20,
        max_bytes: int = 17 * 1024 * 1024,
        max_principal_bytes: int = 1024**3,
        max_saves_per_job: int = 100,
        max_save_all: int = 100,
        max_restore_bytes: int = 64 * 1024 * 1024,
        max_principal_state_bytes: int = MAX_PRINCIPAL_BYTES,
    ) -> None:
        self.sessions = sessions
        self.redis = sessions.redis
        self.max_per_session = max_per_session
        self.max_bytes = max_bytes
        self.max_principal_bytes = max_principal_bytes
        self.max_saves_per_job = max_saves_per_job
        self.max_save_all = max_save_all
        self.max_restore_bytes = max_restore_bytes
        """Snapshot bytes one RestoreRecent copies (settings.max_restore_bytes); the first always goes."""
        self.max_principal_state_bytes = max_principal_state_bytes
        """State bytes one principal may hold (settings.max_principal_state_bytes): a load may not pass it."""
        self._save = self.redis.register_script(_SAVE)
        self._load = self.redis.register_script(_LOAD)

    def save(self, caller: Caller, session_id: str) -> int:
        session = self.sessions.get(caller, session_id, "Session.save")
        last = self.redis.xrevrange(timeline_key(session_id), count=1)
        position = text(last[0][0]) if last else ""
        now = time.time()
        keys = [
            session_key(session_id),
            session_state_key(session_id),
            saved_key(caller.principal),
            snapshot_bytes_key(caller.principal),
            job_key(caller.job_id) if caller.is_job else session_key(session_id),
        ]
        args: list[str | bytes | int] = [
            caller.principal, session.SerializeToString(), position, repr(now), self.max_per_session,
            self.max_bytes, self.max_principal_bytes, self.max_saves_per_job, session_id,
            "1" if caller.is_job else "",
        ]  # fmt: skip
        number = self._saved_number(session_id, caller, self._save(keys=keys, args=args))
        pipe = self.redis.pipeline(transaction=True)
        timeline.append(pipe, session_id, "session.saved", f"snapshot {number}", job_id=caller.job_id,
                        data={"snapshot": number})  # fmt: skip
        timeline.emit_event(pipe, "session.saved", session_id, caller.job_id, {"snapshot": number})
        pipe.execute()
        return number

    def _saved_number(self, session_id: str, caller: Caller, reply: list[bytes | int]) -> int:
        """The new snapshot's number from the save script's reply, or the error it stands for."""
        verdict = text(reply[0])
        if verdict == "ok":
            return int(reply[1])
        if verdict == "missing":
            if text(reply[1]):
                refused(caller, "session", session_id, text(reply[1]))
            raise session_not_found(session_id)
        if verdict == "too_big":
            raise ResourceExhausted(
                f"session {session_id}: a snapshot would be {int(reply[1])} bytes (session and State), above the "
                f"maximum of {self.max_bytes}; remove State values first"
            )
        if verdict == "principal_full":
            raise ResourceExhausted(
                f"principal {caller.principal!r} holds {int(reply[1])} bytes of snapshots; this one "
                f"({int(reply[2])} bytes) would pass the maximum of {self.max_principal_bytes}; delete sessions first"
            )
        raise ResourceExhausted(
            f"this job already saved {int(reply[1])} snapshots, the most one job may ({self.max_saves_per_job})"
        )

    def load(self, caller: Caller, session_id: str, number: int = 0) -> sessions_pb2.Session:
        self.sessions.get(caller, session_id, "Session.load")
        if number == 0:
            latest = self.redis.hget(session_key(session_id), "snapshots")
            number = int(latest or 0)
            if number == 0:
                raise NotFound(f"session {session_id} has no saved snapshot; call save first")
        raw = self.redis.hget(snapshot_key(session_id, number), "session")
        missing = NotFound(
            f"session {session_id} has no snapshot {number} (a session keeps its last {self.max_per_session})"
        )
        if raw is None:
            raise missing
        saved = sessions_pb2.Session.FromString(raw)  # type: ignore[arg-type]
        now = time.time()
        keys = [
            session_key(session_id), session_state_key(session_id), snapshot_key(session_id, number),
            snapshot_state_key(session_id, number), state_bytes_key(caller.principal),
            principal_sessions_key(caller.principal), quota_key(caller.principal),
        ]  # fmt: skip
        args: list[str | bytes | int] = [
            caller.principal, self.max_principal_state_bytes, repr(now), session_id, saved.name, saved.description,
            json.dumps(list(saved.tags)), saved.metadata.SerializeToString(deterministic=True),
        ]  # fmt: skip
        verdict, *rest = self._load(keys=keys, args=args)
        if verdict == b"missing":
            if rest[0]:
                refused(caller, "session", session_id, text(rest[0]))
            raise session_not_found(session_id)
        if verdict == b"gone":
            raise missing
        if verdict == b"principal_full":
            raise exceeded(
                caller.principal, "state_bytes", float(rest[2]), int(rest[0]), int(rest[1]),
                f"(loading snapshot {number} of session {session_id}); delete keys or sessions first",
            )  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        timeline.append(pipe, session_id, "session.loaded", f"snapshot {number}", job_id=caller.job_id,
                        data={"snapshot": number})  # fmt: skip
        timeline.emit_event(pipe, "session.loaded", session_id, caller.job_id, {"snapshot": number})
        pipe.execute()
        return self.sessions.get(caller, session_id, "Session.load")

    def save_all(self, caller: Caller) -> dict[str, int]:
        """Snapshot every active session among the caller's `max_save_all` most recently updated."""
        ids = texts(self.redis.zrevrange(principal_sessions_key(caller.principal), 0, self.max_save_all - 1))
        pipe = self.redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.hget(session_key(session_id), "state")
        saved: dict[str, int] = {}
        for session_id, state in zip(ids, pipe.execute(), strict=True):
            if state == b"active":
                saved[session_id] = self.save(caller, session_id)
        return saved

    def restore_recent(self, caller: Caller, count: int) -> list[str]:
        if not 1 <= count <= MAX_RESTORE:
            raise InvalidArgument(f"count must be between 1 and {MAX_RESTORE} (got {count})")
        ids = texts(self.redis.zrevrange(saved_key(caller.principal), 0, count - 1))
        self._check_restore_bytes(ids)
        for session_id in ids:
            self.load(caller, session_id)
        return ids

    def _check_restore_bytes(self, ids: list[str]) -> None:
        """RESOURCE_EXHAUSTED, before anything is copied, if the sessions' latest snapshots hold more
        than `max_restore_bytes` together (whatever the first holds, it may always be restored)."""
        pipe = self.redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.hget(session_key(session_id), "snapshots")
        numbers = [int(n or 0) for n in pipe.execute()] if ids else []
        for session_id, number in zip(ids, numbers, strict=True):
            pipe.hget(snapshot_key(session_id, number), "bytes")
        sizes = [int(b or 0) for b in pipe.execute()] if ids else []
        total = fit = 0
        for size in sizes:
            if fit and total + size > self.max_restore_bytes:
                raise ResourceExhausted(
                    f"the {len(ids)} most recently saved sessions' snapshots hold {sum(sizes)} bytes; one "
                    f"RestoreRecent copies at most {self.max_restore_bytes} (max_restore_bytes): "
                    f"ask for count={fit} or fewer"
                )
            total += size
            fit += 1
