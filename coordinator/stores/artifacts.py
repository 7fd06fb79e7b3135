"""Artifacts: versioned, content-addressed, permissioned and audited. Keys: artifact_index.py,
artifact_blobs.py and artifact_access.py; plus the storage counters
  sp:session:{sid}:artifact-bytes   string  bytes charged for all versions in the session
  sp:principal:{p}:artifact-bytes   string  the same across the principal's sessions
  sp:principal:{p}:artifact-count   string  artifacts the principal holds across its sessions

Each version is charged its content bytes plus what its records cost: its metadata (name,
description, tags, custom, type), its word-index entries and a fixed RECORD_BYTES per version
(`charged` in the version's hash; DELETE releases exactly that). So metadata-only versions, and
many tiny artifacts, count against the quotas like content does. Versions per artifact, artifacts
per session and artifacts per principal are capped too (Settings).

A store streams content into upload chunks, then one Lua script (COMMIT) checks the session and the
quotas, moves the chunks to the blob (or adds a reference to an existing one), and writes the
version, the record and every index. Nothing is visible before that script runs, and it runs whole
or not at all. DELETE likewise releases every version's blob reference and index entry at once.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator

from redis import Redis

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.principals import principal_known
from scriptpool.coordinator.stores import lua, timeline
from scriptpool.coordinator.stores.artifact_access import (
    ADMIN,
    DELETE,
    LEVELS,
    READ,
    WRITE,
    AccessControl,
    check_principal,
    parse_level,
)
from scriptpool.coordinator.stores.artifact_blobs import Upload, read_chunks
from scriptpool.coordinator.stores.artifact_index import (
    TEXT_SAMPLE_BYTES,
    ArtifactIndex,
    Scope,
    decode_info,
    sample_text,
    words_of,
)
from scriptpool.coordinator.stores.not_found import artifact_not_found, refused, session_not_found
from scriptpool.coordinator.stores.quotas import LUA_QUOTA_LIMIT, exceeded
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.validation import (
    MAX_DESCRIPTION,
    MAX_NAME,
    check_metadata,
    check_tags,
    check_text,
    check_uuid,
)
from scriptpool.core.job_records import hash_fields, texts
from scriptpool.core.keys import (
    artifact_key,
    principal_grants_key,
    principal_sessions_key,
    session_grants_key,
    session_index,
    session_key,
    shared_sessions_key,
    version_key,
)
from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from scriptpool.v1 import artifacts_pb2, common_pb2
from scriptpool.values import PlainValue

RECORD_BYTES = 512
"""What one version's records cost beyond its metadata's own bytes (hash fields, index entries):
charged to the quotas with each version, so even empty versions are not free."""
INDEX_ENTRY_BYTES = 64
"""Charged per word-index and tag-index entry a version writes, on top of the word's bytes."""

DELETE_BATCH = 100
"""Artifact ids a session delete reads at a time."""

TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,63}$")

_COMMIT = LUA_QUOTA_LIMIT + lua.script("artifacts_commit")

_DELETE = lua.script("artifacts_delete")


def _check_type(kind: str) -> str:
    if not TYPE_PATTERN.match(kind):
        raise InvalidArgument(
            f"invalid artifact type {kind!r}: text, code, data, model, binary, agent_output, tool_result, "
            "user_input, system_generated, or a custom name of 1-64 letters, digits and _ . : / + -"
        )
    return kind


CONTENT_ENCODINGS = ("", "utf-8", "binary")
"""How a version's content was given (ArtifactInfo.content_encoding); "" = not said (older data)."""


def _check_encoding(encoding: str) -> str:
    if encoding not in CONTENT_ENCODINGS:
        raise InvalidArgument(f"invalid content_encoding {encoding!r}; allowed: utf-8, binary (or empty)")
    return encoding


def charged_bytes(
    size: int, kind: str, name: str, description: str, tags: list[str], custom: bytes, words: list[str]
) -> int:
    """What a version counts against the session's and the principal's quotas (see the module doc)."""
    metadata = len(kind) + len(name.encode()) + len(description.encode()) + len(json.dumps(tags)) + len(custom)
    entries = len(words) + len(tags) + 4  # the word and tag sets, the type set and the three zsets
    return size + metadata + sum(len(w.encode()) for w in words) + INDEX_ENTRY_BYTES * entries + RECORD_BYTES


class ArtifactStore:
    def __init__(
        self,
        redis: Redis,
        *,
        max_artifact_bytes: int,
        max_session_bytes: int,
        max_principal_bytes: int,
        max_versions: int = 1000,
        max_session_artifacts: int = 100_000,
        max_principal_artifacts: int = 1_000_000,
        max_query_sessions: int = 1000,
        max_query_candidates: int = 10_000,
        max_delete_versions: int = 10_000,
        session_access: SessionAccess | None = None,
    ) -> None:
        self.redis = redis
        self.session_access = session_access if session_access is not None else SessionAccess(redis)
        """Grants on the sessions (ADR 0021): a session grant gives a level on each of its artifacts."""
        self.max_artifact_bytes = max_artifact_bytes
        self.max_session_bytes = max_session_bytes
        self.max_principal_bytes = max_principal_bytes
        self.max_versions = max_versions
        self.max_session_artifacts = max_session_artifacts
        self.max_principal_artifacts = max_principal_artifacts
        self.max_delete_versions = max_delete_versions
        """Artifact versions one Session.delete releases (settings.max_session_delete_versions)."""
        self.max_query_sessions = max_query_sessions
        """Sessions a query without session_id may look at (settings.max_query_sessions)."""
        self.access = AccessControl(redis)
        self.index = ArtifactIndex(redis, max_query_candidates)
        self._commit = redis.register_script(_COMMIT)
        self._delete = redis.register_script(_DELETE)

    # ---------------------------------------------------------------- checks
    def _session(self, session_id: str) -> tuple[str, str]:
        """(owner, state) of a session; NOT_FOUND if it does not exist."""
        check_uuid(session_id, "session id")
        owner, state = self.redis.hmget(session_key(session_id), "principal", "state")
        if owner is None or state is None:
            raise session_not_found(session_id)
        return owner.decode(), state.decode()  # type: ignore[union-attr]

    def _own_active_session(self, caller: Caller, session_id: str, action: str) -> None:
        """The caller owns the session or holds a grant on it that allows storing (ADR 0021)."""
        owner, state = self._session(session_id)
        if owner != caller.principal:
            self.session_access.check(caller, session_id, "Artifact.store", owner)
        _require_active(session_id, state, action)

    def _owner_of(self, session_id: str, artifact_id: str) -> str:
        check_uuid(session_id, "session id")
        check_uuid(artifact_id, "artifact id")
        stored_session, owner = self.redis.hmget(artifact_key(artifact_id), "session_id", "owner")
        if not isinstance(owner, bytes) or stored_session != session_id.encode():
            raise artifact_not_found(session_id, artifact_id)
        return owner.decode()

    def _level_or_not_found(self, caller: Caller, session_id: str, artifact_id: str, action: str) -> tuple[str, int]:
        """(owner, the caller's level) of an artifact the caller may at least read.

        A caller with no permission at all gets the answer an artifact that does not exist gets, and
        nothing is written to the artifact's audit log: a stranger cannot learn that the artifact
        exists, nor fill that log. The refusal goes to the session's audit log (bounded, ADR 0021).
        """
        owner = self._owner_of(session_id, artifact_id)
        level = self.access.level(artifact_id, owner, caller.principal, session_id)
        if level == 0:
            refused(caller, "artifact", artifact_id, owner)
            self.session_access.audit(
                self.redis, session_id, caller, f"Artifact.{action}", False, f"artifact {artifact_id}: no grant"
            )
            raise artifact_not_found(session_id, artifact_id)
        return owner, level

    def authorize(self, caller: Caller, session_id: str, artifact_id: str, action: str, need: int) -> str:
        """Check `caller` may do `action` (needs level `need`) and audit the answer. Returns the owner."""
        owner_name, level = self._level_or_not_found(caller, session_id, artifact_id, action)
        allowed = level >= need
        reason = "owner" if caller.principal == owner_name else f"granted {LEVELS[level - 1]}"
        if not allowed:
            reason = f"needs {LEVELS[need - 1]}; has {LEVELS[level - 1]}"
        self.access.audit(self.redis, artifact_id, caller, action, allowed, reason)
        if not allowed:
            raise PermissionDenied(f"{caller.principal} may not {action} artifact {artifact_id}: {reason}")
        return owner_name

    # ---------------------------------------------------------------- writing
    def store(
        self, caller: Caller, header: artifacts_pb2.StoreArtifactChunk, rest: Iterable[bytes]
    ) -> artifacts_pb2.ArtifactRef:
        """Store (header.artifact_id empty) or update: a new version, streamed from header.content + rest."""
        session_id = header.session_id
        if header.artifact_id:
            self.authorize(caller, session_id, header.artifact_id, "update", WRITE)
            _require_active(session_id, self._session(session_id)[1], "update")
            previous = self.info(header.artifact_id, 0)
            name = previous.metadata.name
            if header.HasField("metadata") and header.metadata.name not in ("", name):
                raise InvalidArgument(f"update cannot rename artifact {name!r}; store a new one instead")
            kind = _check_type(header.type) if header.type else previous.type
            meta = header.metadata if header.HasField("metadata") else previous.metadata
            new_id = header.artifact_id
        else:
            self._own_active_session(caller, session_id, "store")
            if not header.type:
                raise InvalidArgument("type is required (text, code, data, model, binary, ... or a custom name)")
            kind = _check_type(header.type)
            meta = header.metadata
            new_id = str(uuid.uuid4())
            name = meta.name or new_id
            if len(name) > MAX_NAME:
                raise InvalidArgument(f"name is {len(name)} characters; the maximum is {MAX_NAME}")
        encoding = _check_encoding(header.content_encoding)
        description = check_text(meta.description, "description", MAX_DESCRIPTION)
        tags = check_tags(list(meta.tags))
        custom = check_metadata(meta.custom, "metadata.custom")
        upload = Upload(self.redis, self.max_artifact_bytes, TEXT_SAMPLE_BYTES)
        try:
            upload.write(header.content)
            for data in rest:
                upload.write(data)
            sha = upload.finish()
            text = sample_text(bytes(upload.text_sample), upload.size <= TEXT_SAMPLE_BYTES)
            words = words_of(name, description, text)
            tags_json = json.dumps(tags)
            charged = charged_bytes(upload.size, kind, name, description, tags, custom, words)
            head = {
                "session_id": session_id, "update_id": header.artifact_id, "new_id": new_id, "name": name,
                "type": kind, "description": description, "tags": tags_json,
                "words": words, "sha": sha, "size": str(upload.size), "charged": str(charged), "encoding": encoding,
                "chunks": str(upload.chunks), "upload": upload.prefix, "now": repr(time.time()),
                "owner": _text(self.redis.hget(session_key(session_id), "principal")),
                "max_session": str(self.max_session_bytes), "max_principal": str(self.max_principal_bytes),
                "max_versions": str(self.max_versions), "max_session_artifacts": str(self.max_session_artifacts),
                "max_principal_artifacts": str(self.max_principal_artifacts),
            }  # fmt: skip
            answer = [_text(a) if isinstance(a, bytes) else a for a in self._commit(args=[json.dumps(head), custom])]
        except BaseException:
            upload.abort()
            raise
        if answer[0] != "ok":
            upload.abort()
            raise _commit_error(answer, session_id, charged, self)
        artifact_id, version = str(answer[1]), int(answer[2])
        action = "update" if header.artifact_id else "store"
        if not header.artifact_id:
            reason = "owner" if caller.principal == head["owner"] else "session grant"
            self.access.audit(self.redis, artifact_id, caller, action, True, reason)
        hook = "artifact.updated" if version > 1 else "artifact.stored"
        self._log(caller, session_id, hook, f"{name} v{version} ({upload.size} bytes)", artifact_id, version)
        return artifacts_pb2.ArtifactRef(id=artifact_id, session_id=session_id, content_hash=sha, version=version)

    def delete(self, caller: Caller, session_id: str, artifact_id: str) -> None:
        self.authorize(caller, session_id, artifact_id, "delete", DELETE)
        _require_active(session_id, self._session(session_id)[1], "delete")
        name = _text(self.redis.hget(artifact_key(artifact_id), "name"))
        self._delete(args=[artifact_id])
        self._log(caller, session_id, "artifact.deleted", f"{name} deleted", artifact_id, 0)

    def delete_session_artifacts(self, session_id: str) -> None:
        """Called when a session is deleted: release every artifact's content and grants, at most
        `max_delete_versions` versions' worth per call (each artifact whole; at least one). If
        artifacts remain, RESOURCE_EXHAUSTED tells the caller to call Session.delete again: the
        session stays until its last artifact is gone, and each call makes progress."""
        budget = self.max_delete_versions
        deleted = 0
        while True:
            ids = texts(self.redis.zrange(session_index(session_id), 0, DELETE_BATCH - 1))
            if not ids:
                return
            pipe = self.redis.pipeline(transaction=False)
            for artifact_id in ids:
                pipe.hget(artifact_key(artifact_id), "latest")
            for artifact_id, latest in zip(ids, pipe.execute(), strict=True):
                versions = int(latest or 0)
                if deleted and versions > budget:
                    raise ResourceExhausted(
                        f"session {session_id} holds more artifact versions than one delete releases "
                        f"(max_session_delete_versions {self.max_delete_versions}); this call deleted {deleted} "
                        "artifacts: call Session.delete again to continue"
                    )
                self._delete(args=[artifact_id])
                budget -= versions
                deleted += 1

    def _log(self, caller: Caller, session_id: str, kind: str, text: str, artifact_id: str, version: int) -> None:
        data: dict[str, PlainValue] = {"artifact_id": artifact_id, "version": version}
        pipe = self.redis.pipeline(transaction=False)
        timeline.append(pipe, session_id, kind, text, job_id=caller.job_id, data=data)
        timeline.emit_event(pipe, kind, session_id, caller.job_id, data)
        pipe.execute()

    # ---------------------------------------------------------------- reading
    def info(self, artifact_id: str, version: int) -> artifacts_pb2.ArtifactInfo:
        record = hash_fields(self.redis.hgetall(artifact_key(artifact_id)))
        if not record.get("latest"):
            raise NotFound(f"artifact {artifact_id} not found")
        latest = int(record["latest"])
        number = version or latest
        raw = hash_fields(self.redis.hgetall(version_key(artifact_id, number))) if number <= latest else {}
        if not raw:
            raise NotFound(f"artifact {artifact_id} has no version {number} (latest is {latest})")
        return decode_info(record, raw, number)

    def read(
        self, caller: Caller, request: artifacts_pb2.GetArtifactRequest, action: str
    ) -> tuple[artifacts_pb2.ArtifactInfo, Iterator[bytes]]:
        self.authorize(caller, request.session_id, request.artifact_id, action, READ)
        info = self.info(request.artifact_id, request.version)
        self._log(caller, request.session_id, "artifact.accessed", f"{action} {info.metadata.name} v{info.version}",
                  info.id, info.version)  # fmt: skip
        what = f"artifact {info.id} version {info.version}"
        return info, read_chunks(self.redis, info.content_hash, what)

    def list(self, caller: Caller, session_id: str, page: common_pb2.PageRequest) -> artifacts_pb2.ArtifactList:
        owner, _ = self._session(session_id)
        grants = self._granted_in(caller, session_id, owner, "Artifact.list")
        return self.index.page_of_session(session_id, page, grants)

    def _granted_in(self, caller: Caller, session_id: str, owner: str, op: str) -> str | None:
        """What of `owner`'s session the caller may list: None for all of it (its owner, or a grantee
        of the session), else the key of its index of the artifacts granted to it one by one. Neither:
        the session is NOT_FOUND, exactly as one that does not exist (ADR 0017), and audited."""
        if owner == caller.principal or self.session_access.level(session_id, caller.principal):
            return None
        key = session_grants_key(session_id, caller.principal)
        if not self.redis.exists(key):
            self.session_access.refuse(caller, session_id, op, owner, 0, "no grant")
        return key

    def query(self, caller: Caller, q: artifacts_pb2.ArtifactQuery, text: str = "") -> artifacts_pb2.ArtifactList:
        words = words_of(text)
        if text.strip() and not words:
            raise InvalidArgument("search text has no words to look for (2-64 letters or digits each)")
        if q.type:
            _check_type(q.type)
        cap = self.index.max_candidates
        if q.session_id:
            owner, _ = self._session(q.session_id)
            granted_in = self._granted_in(caller, q.session_id, owner, "Artifact.query")
            if granted_in is None:
                scope = Scope([q.session_id], [])
            else:
                scope = Scope([], _read_grants(self.redis, granted_in, cap, in_session=True))
            return self.index.query(scope, q, words)
        sessions_key, shared_key = principal_sessions_key(caller.principal), shared_sessions_key(caller.principal)
        held = int(self.redis.zcard(sessions_key)) + int(self.redis.zcard(shared_key))
        if held > self.max_query_sessions:
            raise ResourceExhausted(
                f"this principal has {held} sessions (its own and the ones shared with it); a query without "
                f"session_id looks at most {self.max_query_sessions} (max_query_sessions): narrow the query "
                "with session_id"
            )
        mine = texts(self.redis.zrange(sessions_key, 0, -1)) + texts(self.redis.zrange(shared_key, 0, -1))
        granted = _read_grants(self.redis, principal_grants_key(caller.principal), cap, in_session=False)
        return self.index.query(Scope(mine, granted), q, words)

    # ---------------------------------------------------------------- permissions
    def change_permission(
        self, caller: Caller, change: artifacts_pb2.PermissionChange, mode: str
    ) -> artifacts_pb2.Permissions:
        level = parse_level(change.permission)
        user = check_principal(change.user)
        owner = self.authorize(caller, change.session_id, change.artifact_id, mode, ADMIN)
        if mode == "grant" and user != owner and not principal_known(self.redis, user):
            raise InvalidArgument(f"unknown principal {user!r}: a grant names a principal with an API key")
        if user == owner and mode == "revoke":
            self.access.audit(self.redis, change.artifact_id, caller, "revoke", False, "the owner cannot be revoked")
            raise FailedPrecondition(f"{user} owns session {change.session_id}: the owner's rights cannot be revoked")
        if user != owner and self.access.change(change.artifact_id, user, level, mode) < 0:
            raise artifact_not_found(change.session_id, change.artifact_id)  # deleted meanwhile
        return self.access.permissions(change.artifact_id, owner)

    def permissions(self, caller: Caller, key: artifacts_pb2.ArtifactKey) -> artifacts_pb2.Permissions:
        owner = self.authorize(caller, key.session_id, key.artifact_id, "getPermissions", READ)
        return self.access.permissions(key.artifact_id, owner)

    def check_access(self, caller: Caller, request: artifacts_pb2.CheckAccessRequest) -> bool:
        """Anyone with access may ask about themselves and about other users (read is the lowest level).
        A caller with no access gets NOT_FOUND, as for an artifact that does not exist. One audit entry."""
        need = parse_level(request.permission)
        user = check_principal(request.user or caller.principal)
        owner, _ = self._level_or_not_found(caller, request.session_id, request.artifact_id, "checkAccess")
        asked = f"asked whether {user} has {request.permission}"
        allowed = self.access.level(request.artifact_id, owner, user, request.session_id) >= need
        self.access.audit(self.redis, request.artifact_id, caller, "checkAccess", True, f"{asked}: {allowed}")
        return allowed

    def audit_log(self, caller: Caller, request: artifacts_pb2.GetAuditLogRequest) -> artifacts_pb2.AuditLog:
        self.authorize(caller, request.session_id, request.artifact_id, "getAuditLog", ADMIN)
        return self.access.read_audit(request.artifact_id, request.page)


def _read_grants(redis: Redis, key: str, cap: int, *, in_session: bool) -> list[str]:
    """The ids in a principal's grant set (or its index of one session's grants, `in_session`),
    refused past `cap` before any is read."""
    held = int(redis.zcard(key) if in_session else redis.scard(key))
    if held > cap:
        raise ResourceExhausted(
            f"the query would examine {held} granted artifacts, more than {cap} (max_query_candidates); "
            "narrow it with the session_id of your own session"
        )
    if in_session:
        return texts(redis.zrange(key, 0, -1))
    return texts(list(redis.smembers(key)))


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else ""


def _require_active(session_id: str, state: str, action: str) -> None:
    if state != "active":
        raise FailedPrecondition(f"cannot {action} artifacts in session {session_id}: it is {state}; that needs active")


def _commit_error(answer: list[object], session_id: str, size: int, store: ArtifactStore) -> Exception:
    verdict = answer[0]
    if verdict == "no_session":
        return session_not_found(session_id)
    if verdict == "inactive":
        return FailedPrecondition(
            f"cannot store artifacts in session {session_id}: it is {answer[1]}; that needs active"
        )
    if verdict == "missing":
        return NotFound(f"artifact not found in session {session_id}")
    if verdict == "session_quota":
        return ResourceExhausted(
            f"session {session_id} holds {answer[1]} bytes of artifacts (content, metadata and index); {size} more "
            f"would pass its limit of {store.max_session_bytes}; delete artifacts to make room"
        )
    if verdict == "principal_quota":
        return exceeded(
            str(answer[3]), "artifact_bytes", float(str(answer[2])), float(str(answer[1])), size,
            "bytes of artifacts (content, metadata and index), all versions counted; delete artifacts to make room",
        )  # fmt: skip
    if verdict == "versions":
        return ResourceExhausted(
            f"the artifact has {answer[1]} versions, the most one artifact may have ({store.max_versions}); "
            "store under a new name, or delete it and store it again"
        )
    if verdict == "session_artifacts":
        return ResourceExhausted(
            f"session {session_id} holds {answer[1]} artifacts, its limit ({store.max_session_artifacts}); "
            "delete some first"
        )
    if verdict == "principal_artifacts":
        return ResourceExhausted(
            f"this principal holds {answer[1]} artifacts, its quota ({store.max_principal_artifacts}); "
            "delete some first"
        )
    return FailedPrecondition("the upload expired before it was committed; store the artifact again")
