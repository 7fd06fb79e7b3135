"""Delete job-created sessions past their retention (settings.job_session_retention_seconds).

A session the coordinator made for a job submitted without one is completed when that job ends and
listed in `sp:sessions:expiring` with the time its retention ends (proto/scriptpool/core/job_records.py). Each
sweep of the coordinator's sweeper thread deletes the due ones through `SessionStore.delete`, the
path a client's delete takes, so the principal's session index and count, its State and snapshot
bytes and its artifact quotas all go down with it. An entry whose session is gone, or is no longer
the job's (a later job was submitted into it, or a snapshot loaded), is dropped and the session kept.

A job submitted into such a session in the very moment the sweep deletes it can find it gone, as it
would after a client's own delete.
"""

from __future__ import annotations

import logging
import time

from scriptpool.coordinator.auth import Caller
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.core.job_records import SESSION_JOB_FIELD, text, texts
from scriptpool.core.keys import EXPIRING_SESSIONS_KEY, session_key
from scriptpool.core.repeated_log import RepeatedProblem
from scriptpool.errors import NotFound, ResourceExhausted

log = logging.getLogger(__name__)


class SessionExpiry:
    def __init__(self, sessions: SessionStore, max_per_sweep: int = 500) -> None:
        self.sessions = sessions
        self.max_per_sweep = max_per_sweep
        """Due sessions one sweep looks at (settings.max_expired_sessions_per_sweep)."""
        self._failing = RepeatedProblem(log, "session expiry sweep failed")
        """It runs every lease sweep: while Redis is down, logged once, then counted."""

    def sweep(self, now: float | None = None) -> int:
        """Delete the sessions whose retention ended by `now` (default: the time now), at most
        `max_per_sweep` of them. Returns how many were deleted. Never raises: a failure is logged
        and the entries stay for the next sweep."""
        try:
            deleted = self._sweep(time.time() if now is None else now)
        except Exception as exc:
            self._failing.happened(exc)
            return 0
        self._failing.over()
        return deleted

    def _sweep(self, now: float) -> int:
        redis = self.sessions.redis
        due = texts(redis.zrangebyscore(EXPIRING_SESSIONS_KEY, "-inf", now, start=0, num=self.max_per_sweep))
        if not due:
            return 0
        pipe = redis.pipeline(transaction=False)
        for session_id in due:
            pipe.hmget(session_key(session_id), "principal", SESSION_JOB_FIELD)
        deleted = 0
        for session_id, (owner, job_mark) in zip(due, pipe.execute(), strict=True):
            if owner is None or job_mark is None:  # gone, or the principal's own now
                redis.zrem(EXPIRING_SESSIONS_KEY, session_id)
                continue
            try:
                self.sessions.delete(Caller(principal=text(owner)), session_id)  # also drops the entry
            except NotFound:
                redis.zrem(EXPIRING_SESSIONS_KEY, session_id)
                continue
            except ResourceExhausted as exc:  # more artifact versions than one delete releases
                log.info("job session %s: deleted in parts (%s)", session_id, exc.message)
                continue
            deleted += 1
        if deleted:
            log.info("deleted %d job sessions past their retention", deleted)
        return deleted
