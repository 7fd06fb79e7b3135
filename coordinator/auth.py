"""Who is calling: a client with an API key, or a running job with its job credential.

Both are bearer tokens in the `authorization` metadata. Only SHA-256 digests are stored in Redis:
  sp:apikey:{sha256}  -> principal                (client keys, `scriptpool apikey create`)
  sp:cred:{sha256}    -> {job_id, principal, session_id}  (one job; deleted when the job ends)
A job credential is valid only while its job runs, and only for that job's principal.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from redis import Redis

from scriptpool.coordinator.credential_cache import CachedCredential, JobCredentialCache
from scriptpool.coordinator.principals import remember_principal
from scriptpool.core.job_records import credential_hash, text
from scriptpool.core.keys import apikey_key, credential_key
from scriptpool.errors import InvalidArgument, PermissionDenied, Unauthenticated

API_KEY_PREFIX = "spk_"
JOB_CREDENTIAL_PREFIX = "spj_"
PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: str
    job_id: str = ""
    """Set when the caller is a running job (its credential), empty for clients."""
    session_id: str = ""
    """The job's session, for job callers."""

    @property
    def is_job(self) -> bool:
        return bool(self.job_id)

    def require_client(self, what: str) -> None:
        if self.is_job:
            raise PermissionDenied(f"{what} needs a client API key; a job credential cannot call it")


def new_job_credential() -> str:
    return JOB_CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


# API keys cannot be revoked in this version, so a short-lived cache of verified keys is safe and
# saves a Redis round trip per client call. Job credentials are cached only while the job-finished
# channel is listened to, and dropped when their job finishes (`scriptpool.coordinator.credential_cache`).
API_KEY_CACHE_SECONDS = 30.0


class Authenticator:
    def __init__(self, redis: Redis, job_credentials: JobCredentialCache | None = None) -> None:
        self.redis = redis
        self._api_keys: dict[str, tuple[str, float]] = {}
        self.job_credentials = job_credentials if job_credentials is not None else JobCredentialCache()

    def create_api_key(self, principal: str) -> str:
        if not PRINCIPAL_PATTERN.match(principal):
            raise InvalidArgument("principal: 1-128 characters of letters, digits and . _ @ -, starting alphanumeric")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(apikey_key(hashlib.sha256(key.encode()).hexdigest()), principal)
        remember_principal(pipe, principal)
        pipe.execute()
        return key

    def caller(self, context: grpc.ServicerContext) -> Caller:
        return self.authenticate(context.invocation_metadata())

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
            digest = hashlib.sha256(token.encode()).hexdigest()
            cached = self._api_keys.get(digest)
            if cached is not None and cached[1] > time.monotonic():
                return Caller(principal=cached[0])
            principal_raw = self.redis.get(apikey_key(digest))
            if principal_raw is not None:
                principal = text(principal_raw)
                # Keys made before `sp:principals` existed: their principal becomes known when used
                # (once per cache period, so no extra round trip per call).
                remember_principal(self.redis, principal)
                if len(self._api_keys) > 10_000:
                    self._api_keys.clear()
                self._api_keys[digest] = (principal, time.monotonic() + API_KEY_CACHE_SECONDS)
                return Caller(principal=principal)
        raise Unauthenticated("API key is not valid")

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
