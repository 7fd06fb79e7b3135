"""Who besides its owner may do what to a session, and the record of every refusal (ADR 0021).

  sp:session:{id}:grants              hash    principal -> level (1 read, 2 write, 3 admin)
  sp:principal:{p}:shared-sessions    zset    other principals' session ids granted to p -> when
  sp:session:{id}:audit               stream  ts user job_id action allowed(1/0) reason

`OPERATIONS` is the one table of what each level allows; an operation not in it is the owner's
alone. Levels are ordered: each includes the ones below. The owner holds every right without a
grant and cannot lose them. A principal with no grant is answered exactly as for a session that
does not exist (ADR 0017); its refusal is still written to the session's audit log, which is
trimmed to `max_audit_entries`, so probing cannot grow it.
"""

from __future__ import annotations

import time
from typing import NoReturn

from redis import Redis
from redis.client import Pipeline

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.principals import principal_known
from scriptpool.coordinator.stores import lua
from scriptpool.coordinator.stores.artifact_access import check_principal, read_audit_stream
from scriptpool.coordinator.stores.not_found import refused, session_not_found
from scriptpool.core.job_records import text
from scriptpool.core.keys import session_access_key, session_audit_key, session_key, shared_sessions_key
from scriptpool.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from scriptpool.v1 import artifacts_pb2, common_pb2, sessions_pb2

LEVELS = ("read", "write", "admin")
READ, WRITE, ADMIN = 1, 2, 3
OWNER = 4
"""Needed for everything not in `OPERATIONS`: no grant reaches it."""

OPERATIONS: dict[str, int] = {
    # read: see the session and what it holds
    "Session.get": READ,
    "Session.getMetadata": READ,
    "Session.getTags": READ,
    "Session.getTimeline": READ,
    "Artifact.list": READ,
    "Artifact.query": READ,
    "State.get": READ,
    "State.list": READ,
    "Event.subscribe": READ,
    "Event.receive": READ,
    "Event.stream": READ,
    # write: change what it holds
    "Session.updateMetadata": WRITE,
    "Session.setTags": WRITE,
    "Artifact.store": WRITE,
    "State.set": WRITE,
    "State.delete": WRITE,
    "State.increment": WRITE,
    "State.compareAndSet": WRITE,
    # admin: its lifecycle and its grants (an admin grantee grants and revokes read and write only)
    "Session.suspend": ADMIN,
    "Session.resume": ADMIN,
    "Session.complete": ADMIN,
    "Session.grant": ADMIN,
    "Session.revoke": ADMIN,
    "Session.listGrants": ADMIN,
    "Session.getAuditLog": ADMIN,
}
"""Operation -> the session level it needs. Owner only (not listed): delete, save, load, replay and
its metadata, setCurrent, a child session under it, jobs submitted into it."""

# A session level also gives a level on each of the session's artifacts: read -> read, write ->
# write (store, update), admin -> delete (artifact_access.SESSION_TO_ARTIFACT, kept beside the artifact
# levels). An artifact's own grants and audit log stay its owner's and its artifact admins'.

_CHANGE = lua.script("session_access_change")


def level_name(level: int) -> str:
    return "owner" if level >= OWNER else LEVELS[level - 1] if level else "none"


def needed(op: str) -> int:
    return OPERATIONS.get(op, OWNER)


def parse_level(name: str) -> int:
    if name not in LEVELS:
        raise InvalidArgument(f"unknown level {name!r}: use one of {', '.join(LEVELS)}")
    return LEVELS.index(name) + 1


class SessionAccess:
    def __init__(
        self, redis: Redis, *, max_grants: int = 100, max_shared: int = 10_000, max_audit_entries: int = 10_000
    ) -> None:
        self.redis = redis
        self.max_grants = max_grants
        """Grants one session holds (settings.max_grants_per_session)."""
        self.max_shared = max_shared
        """Sessions shared to one principal (settings.max_sessions_shared_to_principal)."""
        self.max_audit_entries = max_audit_entries
        """Entries a session's audit log keeps (settings.max_session_audit_entries)."""
        self._change = redis.register_script(_CHANGE)

    def level(self, session_id: str, principal: str) -> int:
        raw = self.redis.hget(session_access_key(session_id), principal)
        return int(raw) if raw is not None else 0

    def check(self, caller: Caller, session_id: str, op: str, owner: str, held: int | None = None) -> int:
        """The caller's level on `owner`'s session when it suffices for `op`; otherwise the refusal
        is audited and raised: NOT_FOUND without a grant (ADR 0017), PERMISSION_DENIED with one."""
        if owner == caller.principal:
            return OWNER
        level = self.level(session_id, caller.principal) if held is None else held
        need = needed(op)
        if level >= need:
            return level
        reason = f"needs {level_name(need)}; has {level_name(level)}" if level else "no grant"
        self.refuse(caller, session_id, op, owner, level, reason)

    def refuse(self, caller: Caller, session_id: str, op: str, owner: str, level: int, reason: str) -> NoReturn:
        """Audit a refusal of `owner`'s session and raise it."""
        self.audit(self.redis, session_id, caller, op, False, reason)
        if level == 0:
            refused(caller, "session", session_id, owner)
            raise session_not_found(session_id)
        raise PermissionDenied(f"{caller.principal} may not {op} session {session_id}: {reason}")

    def audit(
        self, target: Redis | Pipeline, session_id: str, caller: Caller, action: str, allowed: bool, reason: str
    ) -> None:
        fields = {"ts": repr(time.time()), "user": caller.principal, "job_id": caller.job_id,
                  "action": action, "allowed": "1" if allowed else "0", "reason": reason}  # fmt: skip
        target.xadd(session_audit_key(session_id), fields, maxlen=self.max_audit_entries, approximate=True)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- grants
    def change(
        self, caller: Caller, session_id: str, owner: str, principal: str, level_text: str, *, revoke: bool
    ) -> sessions_pb2.SessionGrants:
        """Grant `principal` `level_text` (replacing any grant it held) or revoke its grant. The caller
        already passed `check` for the operation."""
        op = "Session.revoke" if revoke else "Session.grant"
        principal = check_principal(principal)
        level = 0 if revoke else parse_level(level_text)
        if principal == owner:
            raise FailedPrecondition(f"{principal} owns session {session_id}: the owner's rights are not grants")
        if caller.principal != owner and ADMIN in (level, self.level(session_id, principal)):
            self.refuse(caller, session_id, op, owner, ADMIN, "only the owner grants or revokes admin")
        if not revoke and not principal_known(self.redis, principal):
            raise InvalidArgument(f"unknown principal {principal!r}: a grant names a principal with an API key")
        keys = [session_key(session_id), session_access_key(session_id), shared_sessions_key(principal)]
        args: list[str | int] = [principal, level, session_id, repr(time.time()), self.max_grants, self.max_shared]
        verdict, *rest = [text(a) if isinstance(a, bytes) else a for a in self._change(keys=keys, args=args)]
        if verdict == "missing":
            raise session_not_found(session_id)  # deleted meanwhile
        if verdict == "session":
            raise ResourceExhausted(
                f"session {session_id} holds {rest[0]} grants, its maximum (max_grants_per_session); revoke some first"
            )
        if verdict == "principal":
            raise ResourceExhausted(
                f"{principal} already has {rest[0]} sessions shared with it, its maximum "
                "(max_sessions_shared_to_principal)"
            )
        what = f"revoked {principal}" if revoke else f"granted {principal} {level_text}"
        self.audit(self.redis, session_id, caller, op, True, what)
        return self.grants(session_id, owner)

    def grants(self, session_id: str, owner: str) -> sessions_pb2.SessionGrants:
        raw = self.redis.hgetall(session_access_key(session_id))
        return sessions_pb2.SessionGrants(owner=owner, grants={text(k): LEVELS[int(v) - 1] for k, v in raw.items()})

    def read_audit(self, session_id: str, page: common_pb2.PageRequest) -> artifacts_pb2.AuditLog:
        return read_audit_stream(self.redis, session_audit_key(session_id), page)

    def forget(self, pipe: Pipeline, session_id: str) -> None:
        """Add to `pipe` what deleting the session needs beyond its keys: each grantee's index entry."""
        for principal in self.redis.hkeys(session_access_key(session_id)):
            pipe.zrem(shared_sessions_key(text(principal)), session_id)
