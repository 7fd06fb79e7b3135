"""Verified job credentials, kept in memory while their job runs.

A running job's global calls each carry its credential; looking it up in Redis on every call was a
third of a call's Redis round trips. A credential ends when its job finishes: the finish script
deletes it and publishes the job id on the job-finished channel, and `forget_job` drops it here.

The cache is only trusted while that channel is being listened to: `listening(False)` (the
listener lost Redis) empties it and stops caching until the listener has resubscribed, because a
finish published meanwhile would be missed. A job that finished is remembered for a while so that a
lookup racing the finish (read from Redis just before it, stored just after) is not cached. Each
entry also expires after `ttl_seconds` as a backstop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedCredential:
    principal: str
    job_id: str
    session_id: str


class JobCredentialCache:
    def __init__(self, ttl_seconds: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._by_digest: dict[str, tuple[CachedCredential, float]] = {}
        self._digests_of_job: dict[str, set[str]] = {}
        self._finished: dict[str, float] = {}
        self._enabled = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def listening(self, active: bool) -> None:
        """Called by the job-finished listener: True once subscribed, False when it lost Redis."""
        with self._lock:
            self._by_digest.clear()
            self._digests_of_job.clear()
            self._enabled = active

    def get(self, digest: str) -> CachedCredential | None:
        with self._lock:
            if not self._enabled:
                return None
            entry = self._by_digest.get(digest)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                self._drop(digest, entry[0].job_id)
                return None
            return entry[0]

    def put(self, digest: str, credential: CachedCredential) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._enabled or credential.job_id in self._finished:
                return
            if len(self._by_digest) >= self.max_entries:
                self._by_digest.clear()
                self._digests_of_job.clear()
            self._by_digest[digest] = (credential, now + self.ttl_seconds)
            self._digests_of_job.setdefault(credential.job_id, set()).add(digest)

    def forget_job(self, job_id: str) -> None:
        """The job finished: its credential is no longer valid."""
        now = time.monotonic()
        with self._lock:
            for digest in self._digests_of_job.pop(job_id, ()):
                self._by_digest.pop(digest, None)
            self._finished[job_id] = now + self.ttl_seconds
            if len(self._finished) > self.max_entries:
                self._finished = {job: until for job, until in self._finished.items() if until > now}

    def _drop(self, digest: str, job_id: str) -> None:
        self._by_digest.pop(digest, None)
        digests = self._digests_of_job.get(job_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._digests_of_job[job_id]

    def __len__(self) -> int:
        return len(self._by_digest)
