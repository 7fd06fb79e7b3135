"""API key records (docs/adr/0019-key-management.md): who a key acts for, what it may do, until when.

A key's secret is shown once and stored only as its SHA-256 digest: its record is the hash at
`sp:apikey:{sha256}` (id, principal, name, scopes, created, expires, last_used, revoked; times in
epoch seconds, "0" for none). Its `id` names it everywhere else (`sp:apikeys:ids` maps it to the
digest; `sp:apikeys` and `sp:principal:{p}:apikeys` index it, ordered by id, which starts with its
creation time). Nothing here caches: every check reads the record, so a revocation holds on every
coordinator from the next call on.

A revoked key's record stays `revoked_retention_seconds` (listed as revoked), an expired key's that
long past its expiry; index entries whose record is gone are dropped when the index is read.

Keys of earlier versions are a string holding the principal: they act with `LEGACY_SCOPES` and are
turned into a record (`legacy`, listable and revocable) the first time they are used.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from redis import Redis
from redis.exceptions import ResponseError

from scriptpool.coordinator.stores import lua
from scriptpool.core.keys import APIKEY_IDS_KEY, APIKEYS_KEY, apikey_key, principal_apikeys_key
from scriptpool.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

API_KEY_PREFIX = "spk_"
PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAX_NAME_CHARS = 128
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600.0
"""Longest `expires_in` a key may be created with (ten years); 0 is "never"."""
LAST_USED_EVERY_SECONDS = 60.0
"""A key's last-used time is written at most this often (a hot key costs one write a minute)."""

DEFAULT_MAX_KEYS_PER_PRINCIPAL = 100
DEFAULT_MAX_LIST_KEYS = 100
DEFAULT_REVOKED_RETENTION_SECONDS = 7 * 24 * 3600

_CREATE = lua.script("api_keys_create", RECORD_PREFIX=apikey_key(""))
_SET_IF_PRESENT = lua.script("api_keys_set_if_present")
_ADOPT_LEGACY = lua.script("api_keys_adopt_legacy")
_FIELDS = ("id", "principal", "name", "scopes", "created", "expires", "last_used", "revoked", "legacy")


class Scope(StrEnum):
    """What a client key may do (the table of which RPC needs which: `coordinator/scopes.py`)."""

    SUBMIT = "submit"
    """Submit and cancel jobs, and every write through the client API."""
    READ = "read"
    """Every read-only RPC."""
    ADMIN = "admin"
    """AdminService: manage every principal's keys."""


DEFAULT_SCOPES = frozenset({Scope.SUBMIT, Scope.READ})
"""A new key's scopes when none are named."""
LEGACY_SCOPES = frozenset({Scope.SUBMIT, Scope.READ})
"""A key of an earlier version could do everything but manage keys (which did not exist)."""
ALL_SCOPES = frozenset(Scope)
_SCOPE_NAMES = frozenset(scope.value for scope in Scope)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scope names (each may be a comma-separated list) -> scopes; none given: `DEFAULT_SCOPES`."""
    words = [word.strip() for name in names for word in name.split(",") if word.strip()]
    unknown = sorted({word for word in words if word not in _SCOPE_NAMES})
    if unknown:
        known = ", ".join(scope.value for scope in Scope)
        raise InvalidArgument(f"scopes: unknown scope {', '.join(map(repr, unknown))}; the scopes are {known}")
    return frozenset(Scope(word) for word in words) or DEFAULT_SCOPES


def check_principal(principal: str) -> None:
    if not PRINCIPAL_PATTERN.match(principal):
        raise InvalidArgument(
            f"principal {principal[:60]!r}: 1-128 characters of letters, digits and . _ @ -, starting alphanumeric"
        )


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidArgument(f"name: at most {MAX_NAME_CHARS} printable characters")


def _check_expires_in(expires_in: float) -> None:
    if not math.isfinite(expires_in) or expires_in < 0 or expires_in > MAX_EXPIRES_IN_SECONDS:
        raise InvalidArgument(
            f"expires_in: {expires_in} is not a number of seconds from 0 (never expires) "
            f"to {MAX_EXPIRES_IN_SECONDS:.0f}"
        )


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    principal: str
    name: str
    scopes: frozenset[Scope]
    created: float
    expires: float
    """Epoch seconds; 0: never."""
    last_used: float
    revoked: float
    """Epoch seconds; 0: not revoked."""
    legacy: bool = False

    def expired(self, now: float) -> bool:
        return bool(self.expires) and self.expires <= now

    def active(self, now: float) -> bool:
        return not self.revoked and not self.expired(now)

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> KeyRecord | None:
        """A record as HGETALL returns it; None for an empty (missing) one."""
        get = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in fields.items()}  # fmt: skip
        if "id" not in get or "principal" not in get:
            return None
        scopes = frozenset(Scope(word) for word in get.get("scopes", "").split(",") if word in _SCOPE_NAMES)
        return cls(
            id=get["id"], principal=get["principal"], name=get.get("name", ""), scopes=scopes,
            created=float(get.get("created", 0)), expires=float(get.get("expires", 0)),
            last_used=float(get.get("last_used", 0)), revoked=float(get.get("revoked", 0)),
            legacy=get.get("legacy") == "1",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CreatedKey:
    secret: str
    """The key itself: shown this once."""
    record: KeyRecord


@dataclass(frozen=True, slots=True)
class KeyPage:
    records: list[KeyRecord]
    next_token: str


def _new_id(now: float) -> str:
    """Creation time (ms, hex) then randomness: ordered by creation, never derived from the secret."""
    return f"{int(now * 1000):012x}{secrets.token_hex(4)}"


class ApiKeyStore:
    def __init__(
        self,
        redis: Redis,
        *,
        max_keys_per_principal: int = DEFAULT_MAX_KEYS_PER_PRINCIPAL,
        max_list_keys: int = DEFAULT_MAX_LIST_KEYS,
        revoked_retention_seconds: int = DEFAULT_REVOKED_RETENTION_SECONDS,
    ) -> None:
        self.redis = redis
        self.max_keys_per_principal = max_keys_per_principal
        self.max_list_keys = max_list_keys
        self.revoked_retention_seconds = revoked_retention_seconds
        self._create = redis.register_script(_CREATE)
        self._set_if_present = redis.register_script(_SET_IF_PRESENT)
        self._adopt = redis.register_script(_ADOPT_LEGACY)

    # ---------------------------------------------------------------- checks (every call)
    def lookup(self, digest: str) -> KeyRecord | None:
        """The record of the key with this digest (one round trip; a legacy key is adopted)."""
        try:
            fields = self.redis.hgetall(apikey_key(digest))
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            return self._adopt_legacy(digest)
        return KeyRecord.from_fields(fields)

    def _adopt_legacy(self, digest: str) -> KeyRecord | None:
        raw = self.redis.get(apikey_key(digest))
        if raw is None:
            return None
        principal = raw.decode() if isinstance(raw, bytes) else str(raw)
        now = time.time()
        record = KeyRecord(id=_new_id(now), principal=principal, name="legacy", scopes=LEGACY_SCOPES,
                           created=now, expires=0.0, last_used=0.0, revoked=0.0, legacy=True)  # fmt: skip
        keys = [apikey_key(digest), APIKEY_IDS_KEY, APIKEYS_KEY, principal_apikeys_key(principal)]
        if self._adopt(keys=keys, args=[record.id, digest, principal, _scopes_text(LEGACY_SCOPES), now]):
            return record
        return self.lookup(digest)  # adopted (or revoked) meanwhile: read what is there now

    def touch(self, digest: str, record: KeyRecord, now: float) -> None:
        """Note that the key was used, unless that was noted less than a minute ago (by any replica)."""
        if now - record.last_used >= LAST_USED_EVERY_SECONDS:
            self._set_if_present(keys=[apikey_key(digest)], args=["last_used", repr(now), 0])

    # ---------------------------------------------------------------- management
    def create(
        self, principal: str, *, name: str = "", scopes: frozenset[Scope] = DEFAULT_SCOPES, expires_in: float = 0.0
    ) -> CreatedKey:
        check_principal(principal)
        _check_name(name)
        _check_expires_in(expires_in)
        return self._write(principal, name, scopes, expires_in=expires_in)

    def rotate(self, key_id: str) -> CreatedKey:
        """A new secret for the key's principal, name, scopes and expiry; the old key is revoked at once."""
        digest, old = self._by_id(key_id)
        if old.revoked:
            raise FailedPrecondition(f"key {key_id} is revoked; create a new key instead")
        now = time.time()
        if old.expired(now):
            raise FailedPrecondition(f"key {key_id} has expired; create a new key instead")
        return self._write(old.principal, old.name, old.scopes, expires_at=old.expires, old=(key_id, digest))

    def _write(
        self,
        principal: str,
        name: str,
        scopes: frozenset[Scope],
        *,
        expires_in: float = 0.0,
        expires_at: float = 0.0,
        old: tuple[str, str] | None = None,
    ) -> CreatedKey:
        now = time.time()
        expires = expires_at or (now + expires_in if expires_in else 0.0)
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        digest = digest_of(secret)
        record = KeyRecord(id=_new_id(now), principal=principal, name=name, scopes=scopes, created=now,
                           expires=expires, last_used=0.0, revoked=0.0)  # fmt: skip
        ttl = math.ceil(expires - now) + self.revoked_retention_seconds if expires else 0
        old_id, old_digest = old if old is not None else ("", digest)
        keys = [apikey_key(digest), APIKEY_IDS_KEY, APIKEYS_KEY, principal_apikeys_key(principal),
                apikey_key(old_digest)]  # fmt: skip
        args: list[str | int | float] = [
            record.id, digest, principal, name, _scopes_text(scopes), repr(now), repr(expires) if expires else 0,
            self.max_keys_per_principal, repr(now), ttl, old_id, self.revoked_retention_seconds,
        ]  # fmt: skip
        answer = self._create(keys=keys, args=args)
        outcome = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        if outcome == "full":
            raise ResourceExhausted(
                f"principal {principal!r} already has {answer[1]} active keys, the most it may hold "
                f"(max_keys_per_principal); revoke one first"
            )
        if outcome != "ok":  # (rotation: the old key changed meanwhile)
            raise FailedPrecondition(f"key {old_id} is {outcome}; create a new key instead")
        return CreatedKey(secret, record)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke the key (at once, on every coordinator); revoking a revoked key changes nothing."""
        digest, record = self._by_id(key_id)
        if record.revoked:
            return record
        now = time.time()
        self._set_if_present(keys=[apikey_key(digest)], args=["revoked", repr(now), self.revoked_retention_seconds])
        return replace(record, revoked=now)

    def set_scopes(self, digest: str, scopes: frozenset[Scope]) -> None:
        self._set_if_present(keys=[apikey_key(digest)], args=["scopes", _scopes_text(scopes), 0])

    def list_keys(self, principal: str = "", page_size: int = 0, page_token: str = "") -> KeyPage:
        """A page of keys in creation order, at most `max_list_keys`; `page_token` is the last id of
        the previous page."""
        if principal:
            check_principal(principal)
        if page_size < 0:
            raise InvalidArgument("page_size: must not be negative (0: the server's maximum)")
        if page_token and not re.fullmatch(r"[0-9a-f]{1,64}", page_token):
            raise InvalidArgument("page_token: not one this server gave")
        size = min(page_size or self.max_list_keys, self.max_list_keys)
        index = principal_apikeys_key(principal) if principal else APIKEYS_KEY
        start = f"({page_token}" if page_token else "-"
        found = self.redis.zrangebylex(index, start, "+", 0, size)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in found]
        if not ids:
            return KeyPage([], "")
        digests = self.redis.hmget(APIKEY_IDS_KEY, ids)
        pipe = self.redis.pipeline(transaction=False)
        for digest in digests:
            pipe.hgetall(apikey_key(digest.decode() if isinstance(digest, bytes) else "-"))
        records = []
        gone = []
        for key_id, fields in zip(ids, pipe.execute(), strict=True):
            record = KeyRecord.from_fields(fields)
            if record is None:
                gone.append(key_id)
            else:
                records.append(record)
        if gone:
            self._forget(gone, principal)
        return KeyPage(records, ids[-1] if len(ids) == size else "")

    def _forget(self, ids: list[str], principal: str) -> None:
        """Drop index entries whose record is gone (past its retention)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(APIKEYS_KEY, *ids)
        pipe.hdel(APIKEY_IDS_KEY, *ids)
        if principal:
            pipe.zrem(principal_apikeys_key(principal), *ids)
        pipe.execute()

    def record(self, key_id: str) -> KeyRecord | None:
        """The key's record by its id (None once it is gone)."""
        try:
            return self._by_id(key_id)[1]
        except NotFound:
            return None

    def _by_id(self, key_id: str) -> tuple[str, KeyRecord]:
        if not re.fullmatch(r"[0-9a-f]{1,64}", key_id):
            raise InvalidArgument(f"id {key_id[:60]!r}: a key id is hexadecimal (`scriptpool keys list` shows them)")
        raw = self.redis.hget(APIKEY_IDS_KEY, key_id)
        digest = raw.decode() if isinstance(raw, bytes) else ""
        record = KeyRecord.from_fields(self.redis.hgetall(apikey_key(digest))) if digest else None
        if record is None or record.id != key_id:
            raise NotFound(f"key {key_id} not found (unknown, or its record expired)")
        return digest, record

    def principal_has_key(self, principal: str) -> bool:
        """True when `principal` has at least one key that is not revoked (expired ones count: the
        principal still exists; legacy keys not yet used are not indexed and do not)."""
        token = ""
        while True:
            page = self.list_keys(principal, page_token=token)
            if any(not record.revoked for record in page.records):
                return True
            if not page.next_token:
                return False
            token = page.next_token


def _scopes_text(scopes: frozenset[Scope]) -> str:
    return ",".join(sorted(scope.value for scope in scopes))
