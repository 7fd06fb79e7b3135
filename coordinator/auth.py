"""Who is calling: a client with an API key, or a running job with its job credential.

Both are bearer tokens in the `authorization` metadata. Only SHA-256 digests are stored in Redis:
  sp:apikey:{sha256}  -> the key's record: principal, scopes, expiry, revoked ... (client keys,
                         `coordinator/stores/api_keys.py`)
  sp:cred:{sha256}    -> {job_id, principal, session_id}  (one job; deleted when the job ends)
A job credential is valid only while its job runs, and only for that job's principal.

API keys are not cached: every call reads the key's record (one round trip), so a revoked or
expired key is refused by the very next call on every coordinator. Which scope each RPC needs is
checked once per call, before its handler, by `coordinator/scopes.py`; the handler gets the caller
it checked through the `AuthorizedContext` it is handed (`caller`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from redis import Redis

from scriptpool.coordinator.credential_cache import CachedCredential, JobCredentialCache
from scriptpool.coordinator.stores.api_keys import (
    API_KEY_PREFIX,
    DEFAULT_SCOPES,
    PRINCIPAL_PATTERN,
    ApiKeyStore,
    Scope,
    digest_of,
)
from scriptpool.core.job_records import credential_hash, text
from scriptpool.core.keys import credential_key
from scriptpool.errors import PermissionDenied, Unauthenticated

JOB_CREDENTIAL_PREFIX = "spj_"
__all__ = ["API_KEY_PREFIX", "PRINCIPAL_PATTERN", "AuthorizedContext", "Authenticator", "Caller", "KeyStillValid"]


@dataclass(frozen=True, slots=True)
class Caller:
    principal: str
    job_id: str = ""
    """Set when the caller is a running job (its credential), empty for clients."""
    session_id: str = ""
    """The job's session, for job callers."""
    scopes: frozenset[Scope] = field(default_factory=frozenset)
    """A client key's scopes (a job credential has none: it acts for its job only)."""
    key_id: str = ""
    """The client key's id (never its secret)."""

    @property
    def is_job(self) -> bool:
        return bool(self.job_id)

    def require_client(self, what: str) -> None:
        if self.is_job:
            raise PermissionDenied(f"{what} needs a client API key; a job credential cannot call it")


def new_job_credential() -> str:
    return JOB_CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


class AuthorizedContext:
    """A call's gRPC context, with the caller `coordinator/scopes.py` authenticated and checked
    before the handler ran (everything else is the context's own)."""

    def __init__(self, context: grpc.ServicerContext, caller: Caller) -> None:
        self._context = context
        self.caller = caller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


KEY_RECHECK_SECONDS = 5.0
"""How often a long stream (`EventService.Stream`) reads its key's record again."""


class KeyStillValid:
    """For a call that lasts (a live event stream): False once its API key is revoked or has
    expired, read again at most every `KEY_RECHECK_SECONDS` (always True for a job credential,
    which its job's end ends)."""

    def __init__(self, auth: Authenticator, caller: Caller) -> None:
        self.auth = auth
        self.caller = caller
        self._next_check = time.monotonic() + KEY_RECHECK_SECONDS
        self.refusal: Unauthenticated | None = None

    def __call__(self) -> bool:
        if self.refusal is not None or not self.caller.key_id:
            return self.refusal is None
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + KEY_RECHECK_SECONDS
            record = self.auth.keys.record(self.caller.key_id)
            if record is None or record.revoked or record.expired(time.time()):
                self.refusal = Unauthenticated(f"API key {self.caller.key_id} was revoked or has expired")
        return self.refusal is None

    def check(self) -> None:
        """Unauthenticated if the key no longer holds."""
        if self.refusal is not None:
            raise self.refusal


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Job credentials are cached only while the job-finished channel is listened to, and dropped when
# their job finishes (`scriptpool.coordinator.credential_cache`). API keys are never cached (see above).
class Authenticator:
    def __init__(
        self, redis: Redis, job_credentials: JobCredentialCache | None = None, keys: ApiKeyStore | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys if keys is not None else ApiKeyStore(redis)
        self.job_credentials = job_credentials if job_credentials is not None else JobCredentialCache()

    def create_api_key(
        self, principal: str, *, name: str = "", scopes: frozenset[Scope] = DEFAULT_SCOPES, expires_in: float = 0.0
    ) -> str:
        """A new key's secret (its record: `self.keys.create`)."""
        return self.keys.create(principal, name=name, scopes=scopes, expires_in=expires_in).secret

    def caller(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this call, as checked before its handler ran. A context that was not
        checked there (a job's call carried on its JobCallService stream) may only be a job's."""
        if isinstance(context, AuthorizedContext):
            return context.caller
        caller = self.authenticate(context.invocation_metadata())
        if not caller.is_job:
            raise PermissionDenied("this call reached its handler without its scope checked; only a job may do that")
        return caller

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Caller:
        token = ""
        for key, value in metadata or ():
            if key == "authorization":
                header = value.decode() if isinstance(value, bytes) else value
                scheme, _, rest = header.partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
        if not token:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <API key>' "
                "(create one with `scriptpool apikey create PRINCIPAL`)"
            )
        if token.startswith(JOB_CREDENTIAL_PREFIX):
            return self._job_caller(credential_hash(token))
        if token.startswith(API_KEY_PREFIX):
            return self._key_caller(digest_of(token))
        raise Unauthenticated("API key is not valid")

    def _key_caller(self, digest: str) -> Caller:
        record = self.keys.lookup(digest)
        if record is None:
            raise Unauthenticated("API key is not valid")
        if record.revoked:
            raise Unauthenticated(
                f"API key {record.id} was revoked at {_when(record.revoked)}; ask an admin for a new one"
            )
        now = time.time()
        if record.expired(now):
            raise Unauthenticated(
                f"API key {record.id} expired at {_when(record.expires)}; ask an admin for a new one "
                "(`scriptpool keys create`)"
            )
        self.keys.touch(digest, record, now)
        return Caller(principal=record.principal, scopes=record.scopes, key_id=record.id)

    def _job_caller(self, digest: str) -> Caller:
        cached = self.job_credentials.get(digest)
        if cached is None:
            fields = self.redis.hmget(credential_key(digest), "job_id", "principal", "session_id")
            if fields[0] is None:
                raise Unauthenticated("job credential is not valid (unknown, forged, or its job has ended)")
            job_id, principal, session_id = (text(f) if f is not None else "" for f in fields)
            cached = CachedCredential(principal=principal, job_id=job_id, session_id=session_id)
            self.job_credentials.put(digest, cached)
        return Caller(principal=cached.principal, job_id=cached.job_id, session_id=cached.session_id)
