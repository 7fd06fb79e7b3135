"""Who may do what to an artifact, and the record of every attempt.

  sp:artifact:{id}:grants            hash    principal -> level (1 read, 2 write, 3 delete, 4 admin)
  sp:principal:{p}:artifact-grants   set     artifact ids granted to p (for queries across sessions)
  sp:session:{sid}:artifact-grants:{p}  zset  ids of the session's artifacts granted to p -> created_at
                                             (List and Query of one session by a grantee, ranged)
  sp:artifact:{id}:audit             stream  ts user job_id action allowed(1/0) reason

The session's principal (the owner) has `admin` on its artifacts without a grant and cannot lose
it. Levels are ordered: each one includes the ones below it.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.client import Pipeline

from scriptpool.coordinator.auth import PRINCIPAL_PATTERN, Caller
from scriptpool.coordinator.stores import lua
from scriptpool.core.job_records import hash_fields, text
from scriptpool.core.keys import artifact_key, audit_key, grants_key, principal_grants_key, session_access_key
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import artifacts_pb2, common_pb2

LEVELS = ("read", "write", "delete", "admin")
READ, WRITE, DELETE, ADMIN = 1, 2, 3, 4
SESSION_TO_ARTIFACT = {1: READ, 2: WRITE, 3: DELETE}
"""A session grant (session_access.LEVELS: read, write, admin) -> the level it gives on the session's
artifacts. session_access.OPERATIONS documents it with the rest of the session levels."""
AUDIT_MAX = 100_000
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_CHANGE = lua.script("artifact_access_change")


def parse_level(name: str) -> int:
    if name not in LEVELS:
        raise InvalidArgument(f"unknown permission {name!r}: use one of {', '.join(LEVELS)}")
    return LEVELS.index(name) + 1


def check_principal(user: str) -> str:
    if not PRINCIPAL_PATTERN.match(user or ""):
        raise InvalidArgument(f"invalid user {user!r}: a principal is 1-128 letters, digits and . _ @ -")
    return user


class AccessControl:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._change = redis.register_script(_CHANGE)

    def level(self, artifact_id: str, owner: str, principal: str, session_id: str) -> int:
        """The artifact's own grant or what a grant on its session gives (session_access.ARTIFACT_LEVEL),
        whichever is higher."""
        if principal == owner:
            return ADMIN
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(grants_key(artifact_id), principal)
        pipe.hget(session_access_key(session_id), principal)
        own, through_session = pipe.execute()
        from_session = SESSION_TO_ARTIFACT[int(through_session)] if through_session is not None else 0
        return max(int(own) if own is not None else 0, from_session)

    def audit(
        self,
        target: Redis | Pipeline,
        artifact_id: str,
        caller: Caller,
        action: str,
        allowed: bool,
        reason: str = "",
    ) -> None:
        fields = {"ts": repr(time.time()), "user": caller.principal, "job_id": caller.job_id,
                  "action": action, "allowed": "1" if allowed else "0", "reason": reason}  # fmt: skip
        target.xadd(audit_key(artifact_id), fields, maxlen=AUDIT_MAX, approximate=True)  # type: ignore[arg-type]

    def change(self, artifact_id: str, user: str, level: int, mode: str) -> int:
        """grant (raise to at least `level`) or revoke (drop below `level`); -1 if the artifact is gone."""
        keys = [grants_key(artifact_id), principal_grants_key(user), artifact_key(artifact_id)]
        return int(self._change(keys=keys, args=[user, level, artifact_id, mode]))

    def permissions(self, artifact_id: str, owner: str) -> artifacts_pb2.Permissions:
        raw = self.redis.hgetall(grants_key(artifact_id))
        grants = {text(k): LEVELS[int(v) - 1] for k, v in raw.items()}
        grants[owner] = "admin"
        return artifacts_pb2.Permissions(grants=grants, owner=owner)

    def read_audit(self, artifact_id: str, page: common_pb2.PageRequest) -> artifacts_pb2.AuditLog:
        return read_audit_stream(self.redis, audit_key(artifact_id), page)


def read_audit_stream(redis: Redis, key: str, page: common_pb2.PageRequest) -> artifacts_pb2.AuditLog:
    """A page of an audit stream (an artifact's, or a session's: stores/session_access.py)."""
    limit = page.limit or DEFAULT_PAGE
    if limit > MAX_PAGE:
        raise InvalidArgument(f"page.limit {limit} is above the maximum {MAX_PAGE}")
    start = f"({page.cursor}" if page.cursor else "-"
    try:
        batch = redis.xrange(key, min=start, max="+", count=limit) or []
    except Exception as exc:  # a malformed cursor
        raise InvalidArgument(f"invalid cursor {page.cursor!r}: pass back the previous next_cursor") from exc
    log = artifacts_pb2.AuditLog()
    for entry_id, raw_fields in batch:
        fields = hash_fields(raw_fields)
        log.entries.append(
            artifacts_pb2.AuditEntry(
                timestamp=float(fields["ts"]), user=fields["user"].decode(), job_id=fields["job_id"].decode(),
                action=fields["action"].decode(), allowed=fields["allowed"] == b"1",
                reason=fields["reason"].decode(),
            )
        )  # fmt: skip
        last = text(entry_id)
    if len(batch) == limit:
        log.next_cursor = last
    return log
