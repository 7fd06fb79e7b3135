"""State: scoped key/value storage, one Redis hash per scope.

  sp:principal:{p}:state    scope `global` (the principal's, whichever job or client asks)
  sp:session:{id}:state     scope `session:<id>` / `session:current` (deleted and snapshotted with the session)
  sp:job:{id}:state         scope `job`: the running job only; deleted when it finishes, with a TTL behind

Values are stored as `state_codec` encodes them. Field `""` of each hash holds the bytes the scope
uses (keys + values); the scripts keep it exact and refuse writes past the scope's key or byte
budget. Every operation is one Lua script that checks the session's owner, does the work, and
appends the job's `global_call` timeline entry: one Redis round trip, with the real outcome.

  sp:principal:{p}:state-bytes   the bytes of the principal's `global` and session scopes: the sum
                                 of their `""` fields, kept by the same scripts (and by session
                                 delete and snapshot load); a write past `max_principal_bytes` is
                                 refused, nothing written.

A `job` scope is not counted there: it may vanish by its TTL (a job that stops touching it), which
no script sees, so counting it would leak. It is bounded on its own: `max_scope_bytes` per running
job, gone when the job ends or an hour after its last write.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores import lua, state_codec, timeline
from scriptpool.coordinator.stores.not_found import session_not_found
from scriptpool.coordinator.stores.quotas import LUA_QUOTA_LIMIT, exceeded
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.timeline import LUA_RECORD_CALL, CallRecord
from scriptpool.coordinator.stores.validation import check_uuid
from scriptpool.core.event_streams import append_event
from scriptpool.core.job_records import text, texts
from scriptpool.core.keys import (
    current_session_key,
    global_state_key,
    job_state_key,
    quota_key,
    session_access_key,
    session_key,
    session_state_key,
    state_bytes_key,
)
from scriptpool.core.lean_redis import LeanPool, LeanScript
from scriptpool.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from scriptpool.v1 import common_pb2, state_pb2

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 1024 * 1024
MAX_SCOPE_KEYS = 10_000
MAX_SCOPE_BYTES = 16 * 1024 * 1024
MAX_PRINCIPAL_BYTES = 1024**3
JOB_STATE_TTL_SECONDS = 3600
SCOPES = "global, session:current, session:<id> or job"

_PRELUDE = LUA_RECORD_CALL + LUA_QUOTA_LIMIT + lua.script("state_prelude")

_GET = lua.script("state_get")

_SET = lua.script("state_set")

_DELETE = lua.script("state_delete")

_LIST = lua.script("state_list")

_INCREMENT = lua.script("state_increment")

_COMPARE_AND_SET = lua.script("state_compare_and_set")

_READ_OUTCOMES = ("OK", "NOT_FOUND")
_WRITE_OUTCOMES = ("OK", "NOT_FOUND", "RESOURCE_EXHAUSTED")
_INCREMENT_OUTCOMES = ("OK", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION")


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    """As messages show it: `global`, `job` or `session:<id>`."""
    key: str
    session_id: str = ""
    """Set for session scopes: the script checks that the caller's principal owns it."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


class StateStore:
    def __init__(
        self,
        redis: Redis,
        *,
        max_value_bytes: int = MAX_VALUE_BYTES,
        max_scope_keys: int = MAX_SCOPE_KEYS,
        max_scope_bytes: int = MAX_SCOPE_BYTES,
        max_principal_bytes: int = MAX_PRINCIPAL_BYTES,
        lean: LeanPool | None = None,
        session_access: SessionAccess | None = None,
    ) -> None:
        self.redis = redis
        self.access = session_access if session_access is not None else SessionAccess(redis)
        """Grants on sessions (ADR 0021): a grantee reads or writes a shared session's scope."""
        # Every State op is one EVALSHA on the gRPC thread's own connection: the per-call hot path.
        self.lean = lean if lean is not None else LeanPool(redis)
        self.max_value_bytes = max_value_bytes
        self.max_scope_keys = max_scope_keys
        self.max_scope_bytes = max_scope_bytes
        self.max_principal_bytes = max_principal_bytes
        """Bytes of one principal's `global` and session scopes together (settings.max_principal_state_bytes)."""
        self._get = LeanScript(redis, self.lean, _PRELUDE + _GET)
        self._set = LeanScript(redis, self.lean, _PRELUDE + _SET)
        self._delete = LeanScript(redis, self.lean, _PRELUDE + _DELETE)
        self._list = LeanScript(redis, self.lean, _PRELUDE + _LIST)
        self._increment = LeanScript(redis, self.lean, _PRELUDE + _INCREMENT)
        self._compare_and_set = LeanScript(redis, self.lean, _PRELUDE + _COMPARE_AND_SET)

    # ------------------------------------------------------------------ checks
    def scope(self, caller: Caller, scope: str) -> Scope:
        if scope == "global":
            return Scope("global", global_state_key(caller.principal))
        if scope == "job":
            if not caller.is_job:
                raise InvalidArgument("scope 'job' exists only inside a running job; use global or session:<id>")
            return Scope("job", job_state_key(caller.job_id))
        if scope == "session:current":
            session_id = caller.session_id if caller.is_job else self._client_current(caller)
            if not session_id:
                raise FailedPrecondition(
                    "scope 'session:current': there is no current session; call Session.setCurrent(id) "
                    "or name the session as session:<id>"
                )
            return Scope(f"session:{session_id}", session_state_key(session_id), session_id)
        if scope.startswith("session:"):
            session_id = check_uuid(scope.removeprefix("session:"), "session id in scope")
            return Scope(scope, session_state_key(session_id), session_id)
        raise InvalidArgument(f"unknown scope {_shown(scope)}: use {SCOPES}")

    def _client_current(self, caller: Caller) -> str:
        current = self.redis.get(current_session_key(caller.principal))
        return text(current) if current is not None else ""

    @staticmethod
    def check_key(key: str) -> str:
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            raise InvalidArgument(f"key must be 1-{MAX_KEY_CHARS} characters (got {len(key)})")
        return key

    # ------------------------------------------------------------------ operations
    def get(self, caller: Caller, scope: str, key: str, record: CallRecord | None = None) -> state_pb2.StateValue:
        where = self.scope(caller, scope)
        (raw, _) = self._run("State.get", self._get, _READ_OUTCOMES, caller, where, record, self.check_key(key))
        return _state_value(raw)

    def set(self, caller: Caller, request: state_pb2.SetStateRequest, record: CallRecord | None = None) -> None:
        """Null deletes the key."""
        where = self.scope(caller, request.scope)
        key = self.check_key(request.key)
        value = b"" if state_codec.is_null(request.value) else self._encode(request.value, "value")
        self._run("State.set", self._set, _WRITE_OUTCOMES, caller, where, record, key, value)
        self._changed(caller, where, key, "delete" if not value else "set")

    def delete(self, caller: Caller, scope: str, key: str, record: CallRecord | None = None) -> state_pb2.StateValue:
        """Returns the value the key had (found = whether it existed)."""
        where = self.scope(caller, scope)
        (old, _) = self._run("State.delete", self._delete, _READ_OUTCOMES, caller, where, record, self.check_key(key))
        if old is not None:
            self._changed(caller, where, key, "delete")
        return _state_value(old)

    def list(self, caller: Caller, scope: str, record: CallRecord | None = None) -> state_pb2.StateKeys:
        where = self.scope(caller, scope)
        (keys, _) = self._run("State.list", self._list, _READ_OUTCOMES, caller, where, record)
        return state_pb2.StateKeys(keys=sorted(k for k in texts(keys) if k))

    def increment(
        self, caller: Caller, request: state_pb2.IncrementStateRequest, record: CallRecord | None = None
    ) -> state_pb2.StateValue:
        where = self.scope(caller, request.scope)
        key = self.check_key(request.key)
        by = state_codec.encode_number(request.by, "by")
        new, current = self._run(
            "State.increment", self._increment, _INCREMENT_OUTCOMES, caller, where, record, key, by
        )
        if new == b"not_a_number":
            raise FailedPrecondition(
                f"key {_shown(key)} in scope {where.name} holds {state_codec.kind_name(_raw(current))}, "
                "not a number: only integers and floats can be incremented"
            )
        if new == b"overflow":
            raise FailedPrecondition(
                f"incrementing key {_shown(key)} in scope {where.name} would overflow a 64-bit integer"
            )
        self._changed(caller, where, key, "increment")
        return _state_value(new)

    def compare_and_set(
        self, caller: Caller, request: state_pb2.CompareAndSetRequest, record: CallRecord | None = None
    ) -> state_pb2.CompareAndSetResponse:
        """Expected null = the key must be absent; new null = delete it when the comparison holds."""
        where = self.scope(caller, request.scope)
        key = self.check_key(request.key)
        expected = b"" if state_codec.is_null(request.expected) else self._encode(request.expected, "expected")
        new = b"" if state_codec.is_null(request.new_value) else self._encode(request.new_value, "new_value")
        swapped, current = self._run(
            "State.compareAndSet", self._compare_and_set, _WRITE_OUTCOMES, caller, where, record, key, expected, new
        )
        if swapped:
            self._changed(caller, where, key, "compareAndSet")
        response = state_pb2.CompareAndSetResponse(swapped=bool(swapped))
        response.current.CopyFrom(_state_value(current).value)
        return response

    def _changed(self, caller: Caller, where: Scope, key: str, op: str) -> None:
        """A `state.changed` event (visible to the principal only, coordinator/stores/events.py)."""
        fields = timeline.entry_fields(
            "state.changed", "state.changed", caller.job_id, {"scope": where.name, "key": key, "op": op}
        )
        fields["principal"] = caller.principal
        fields["session_id"] = where.session_id
        append_event(self.redis, caller.principal, where.session_id, fields)

    def _encode(self, value: common_pb2.Value, what: str) -> bytes:
        return state_codec.encode(value, what, self.max_value_bytes)

    # ------------------------------------------------------------------ the scripts
    def _run(
        self,
        op: str,
        script: LeanScript,
        outcomes: tuple[str, ...],
        caller: Caller,
        scope: Scope,
        record: CallRecord | None,
        field: str = "",
        a: bytes = b"",
        b: bytes = b"",
    ) -> tuple[object, object]:
        """Run one operation's script; returns the script's two results after the verdict. A session
        scope of another principal that the caller holds a grant on: the script answers GRANTEE, the
        level is checked (session_access.OPERATIONS) and the script runs again as the owner's, so the
        bytes count against the owner's quota as the session's other State does."""
        principal = caller.principal
        owner_key = session_key(scope.session_id) if scope.session_id else scope.key
        grants = session_access_key(scope.session_id) if scope.session_id else scope.key
        job_scope = scope.name == "job"
        ttl = str(JOB_STATE_TTL_SECONDS) if job_scope else ""
        counted = "" if job_scope else self.max_principal_bytes  # a job scope is not counted: see the module doc
        while True:
            owner = principal if scope.session_id else ""
            args: list[bytes | str | int] = [
                owner,
                field,
                a,
                b,
                self.max_scope_keys,
                self.max_scope_bytes,
                ttl,
                counted,
            ]
            args += record.lua_args(outcomes) if record else [""]
            reply = script([scope.key, owner_key, state_bytes_key(principal), grants, quota_key(principal)], args)
            assert isinstance(reply, list)
            verdict = text(reply[0])
            if verdict != "GRANTEE" or principal != caller.principal:
                break
            principal = text(reply[1])
            self.access.check(caller, scope.session_id, op, principal, _count(reply[2]))
        if record:
            record.written = True
        if verdict == "NOT_FOUND":
            if reply[1]:
                self.access.refuse(caller, scope.session_id, op, text(reply[1]), 0, "no grant")
            raise session_not_found(scope.session_id)
        if verdict == "RESOURCE_EXHAUSTED" and reply[1] == b"principal":
            limit, grow = text(reply[3]).split()
            raise exceeded(
                principal, "state_bytes", float(limit), _count(reply[2]), float(grow),
                "State bytes (keys + values) of its global and session scopes; delete keys or sessions first",
            )  # fmt: skip
        if verdict == "RESOURCE_EXHAUSTED":
            raise ResourceExhausted(
                f"scope {scope.name} is full: at most {self.max_scope_keys} keys and {self.max_scope_bytes} bytes "
                "(keys + values); delete keys first"
            )
        rest = list(reply[1:]) + [None, None]
        return rest[0], rest[1]


def _raw(value: object) -> bytes:
    assert isinstance(value, bytes)
    return value


def _state_value(raw: object) -> state_pb2.StateValue:
    if raw is None:
        return state_pb2.StateValue(found=False)
    return state_pb2.StateValue(value=state_codec.decode(_raw(raw)), found=True)


def _count(value: object) -> int:
    assert isinstance(value, int)
    return value
