"""The Redis key schema: every `sp:` key scriptpool builds in Python is built here (the way arq keeps
its keys in `arq/constants.py`). Each store keeps what it writes under a key; this module only
names the keys. The record scripts build some keys in Lua from the same patterns (`SCHEMA`).

`SCHEMA` lists every key pattern with its Redis type; docs/architecture.md's key table lists the
same patterns (tests/unit/test_key_schema.py compares them, and fails on an `sp:` key literal built
outside this module)."""

from __future__ import annotations

PREFIX = "sp:"
"""Every key scriptpool writes starts with this (RQ keeps its own `rq:*` keys)."""

LEASES_KEY = PREFIX + "jobs:leases"
"""zset: running job id -> lease expiry (epoch s); an expired lease = worker lost."""
FINISHED_CHANNEL = PREFIX + "job-finished"
"""Channel: job ids as they finish."""
EXPIRING_SESSIONS_KEY = PREFIX + "sessions:expiring"
"""zset: job-created session id -> the time its retention ends."""
EVENT_RETENTION_KEY = PREFIX + "config:event-retention"
"""string: entries each event stream keeps (the coordinator writes its setting here at start)."""
APIKEYS_KEY = PREFIX + "apikeys"
"""zset (all scores 0, so ordered by id = by creation): every API key's id."""
APIKEY_IDS_KEY = PREFIX + "apikeys:ids"
"""hash: API key id -> the sha256 its record is kept under."""


# Jobs and credentials.
def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def job_state_key(job_id: str) -> str:
    """A job's `job` State scope."""
    return job_key(job_id) + ":state"


def job_subscriptions_key(job_id: str) -> str:
    """The event subscriptions a job made (ended with it)."""
    return job_key(job_id) + ":eventsubs"


def credential_key(cred_hash: str) -> str:
    return f"{PREFIX}cred:{cred_hash}"


def apikey_key(digest: str) -> str:
    """An API key's record (hash; a string holding the principal for a key of an earlier version)."""
    return f"{PREFIX}apikey:{digest}"


def idempotency_key(digest: str) -> str:
    """`digest`: sha256 of principal NUL key."""
    return f"{PREFIX}idem:{digest}"


# Sessions.
def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def session_jobs_key(session_id: str) -> str:
    return session_key(session_id) + ":jobs"


def timeline_key(session_id: str) -> str:
    return session_key(session_id) + ":timeline"


def replays_key(session_id: str) -> str:
    return session_key(session_id) + ":replays"


def session_state_key(session_id: str) -> str:
    return session_key(session_id) + ":state"


def snapshot_key(session_id: str, number: int) -> str:
    return f"{session_key(session_id)}:snapshot:{number}"


def snapshot_state_key(session_id: str, number: int) -> str:
    return snapshot_key(session_id, number) + ":state"


def session_index(session_id: str, suffix: str = "") -> str:
    """A session's artifact index: `suffix` "" (by update time), ":created", ":size", ":type:{t}",
    ":tag:{t}", ":word:{w}"."""
    return f"{session_key(session_id)}:artifacts{suffix}"


def session_grants_key(session_id: str, principal: str) -> str:
    """Ids of the session's artifacts granted to `principal`."""
    return f"{session_key(session_id)}:artifact-grants:{principal}"


def session_access_key(session_id: str) -> str:
    """hash: principal -> level of the session's grants (coordinator/stores/session_access.py)."""
    return f"{session_key(session_id)}:grants"


def session_audit_key(session_id: str) -> str:
    """stream: grants, revocations and refused accesses to the session."""
    return f"{session_key(session_id)}:audit"


# Principals.
def _principal(principal: str) -> str:
    return f"{PREFIX}principal:{principal}"


def principal_sessions_key(principal: str) -> str:
    return _principal(principal) + ":sessions"


def saved_key(principal: str) -> str:
    """zset: session id -> time of its latest save."""
    return _principal(principal) + ":saved"


def current_session_key(principal: str) -> str:
    """A client's current session (`Session.setCurrent`); a job's is the `current_session` field of its record."""
    return _principal(principal) + ":current"


def global_state_key(principal: str) -> str:
    return _principal(principal) + ":state"


def state_bytes_key(principal: str) -> str:
    """The bytes of a principal's `global` and session State scopes (coordinator/stores/state.py keeps it)."""
    return _principal(principal) + ":state-bytes"


def snapshot_bytes_key(principal: str) -> str:
    """The bytes of a principal's session snapshots (coordinator/stores/snapshots.py keeps it)."""
    return _principal(principal) + ":snapshot_bytes"


def principal_grants_key(principal: str) -> str:
    return _principal(principal) + ":artifact-grants"


def shared_sessions_key(principal: str) -> str:
    """zset: ids of other principals' sessions shared with `principal` -> when granted."""
    return _principal(principal) + ":shared-sessions"


def principal_apikeys_key(principal: str) -> str:
    """zset (all scores 0): the ids of the principal's API keys."""
    return _principal(principal) + ":apikeys"


def principal_subscriptions_key(principal: str) -> str:
    return _principal(principal) + ":eventsubs"


def principal_artifact_bytes_key(principal: str) -> str:
    """string: bytes charged for the principal's artifacts (coordinator/stores/lua/artifacts_commit.lua keeps it)."""
    return _principal(principal) + ":artifact-bytes"


def quota_key(principal: str) -> str:
    """hash: the principal's quota overrides, quota name -> limit (`scriptpool quota set`)."""
    return _principal(principal) + ":quota"


def queued_jobs_key(principal: str) -> str:
    """zset: the principal's queued job ids -> created_at (the queued-jobs quota counts it)."""
    return _principal(principal) + ":queued"


def running_jobs_key(principal: str) -> str:
    """set: the principal's running job ids."""
    return _principal(principal) + ":running"


def submit_bucket_key(principal: str) -> str:
    """hash: the principal's submission token bucket: tokens, at (epoch s of the last take)."""
    return _principal(principal) + ":submit-bucket"


# Events and hooks.
def events_key(principal: str) -> str:
    return f"{PREFIX}events:{principal}"


def subscription_key(subscription_id: str) -> str:
    return f"{PREFIX}eventsub:{subscription_id}"


def hooks_key(principal: str) -> str:
    return f"{PREFIX}hooks:{principal}"


# Artifacts.
def artifact_key(artifact_id: str) -> str:
    return f"{PREFIX}artifact:{artifact_id}"


def version_key(artifact_id: str, version: int) -> str:
    return f"{artifact_key(artifact_id)}:v:{version}"


def grants_key(artifact_id: str) -> str:
    return artifact_key(artifact_id) + ":grants"


def audit_key(artifact_id: str) -> str:
    return artifact_key(artifact_id) + ":audit"


def blob_key(sha: str) -> str:
    return f"{PREFIX}blob:{sha}"


def upload_prefix(token: str) -> str:
    """An upload in progress writes its chunks to this prefix plus the chunk number."""
    return f"{PREFIX}upload:{token}:"


SCHEMA: dict[str, str] = {
    "sp:job:{id}": "hash",
    "sp:job:{id}:state": "hash",
    "sp:job:{id}:eventsubs": "zset",
    "sp:cred:{sha256}": "hash",
    "sp:jobs:leases": "zset",
    "sp:job-finished": "channel",
    "sp:idem:{sha256(principal NUL key)}": "hash",
    "sp:apikey:{sha256}": "hash",
    "sp:apikeys": "zset",
    "sp:apikeys:ids": "hash",
    "sp:principal:{p}:apikeys": "zset",
    "sp:session:{id}": "hash",
    "sp:session:{id}:jobs": "zset",
    "sp:session:{id}:timeline": "stream",
    "sp:session:{id}:replays": "list",
    "sp:session:{id}:state": "hash",
    "sp:session:{id}:grants": "hash",
    "sp:session:{id}:audit": "stream",
    "sp:principal:{p}:shared-sessions": "zset",
    "sp:session:{id}:snapshot:{n}": "hash",
    "sp:session:{id}:snapshot:{n}:state": "hash",
    "sp:sessions:expiring": "zset",
    "sp:principal:{p}:sessions": "zset",
    "sp:principal:{p}:saved": "zset",
    "sp:principal:{p}:current": "string",
    "sp:principal:{p}:state": "hash",
    "sp:principal:{p}:state-bytes": "string",
    "sp:principal:{p}:snapshot_bytes": "string",
    "sp:events:{principal}": "stream",
    "sp:config:event-retention": "string",
    "sp:eventsub:{id}": "hash",
    "sp:principal:{p}:eventsubs": "zset",
    "sp:principal:{p}:quota": "hash",
    "sp:principal:{p}:queued": "zset",
    "sp:principal:{p}:running": "set",
    "sp:principal:{p}:submit-bucket": "hash",
    "sp:hooks:{principal}": "hash",
    "sp:upload:{uuid}:{i}": "string",
    "sp:blob:{sha256}": "hash",
    "sp:blob:{sha256}:{i}": "string",
    "sp:artifact:{id}": "hash",
    "sp:artifact:{id}:v:{n}": "hash",
    "sp:artifact:{id}:words": "set",
    "sp:artifact:{id}:grants": "hash",
    "sp:artifact:{id}:audit": "stream",
    "sp:principal:{p}:artifact-grants": "set",
    "sp:session:{sid}:artifact-grants:{p}": "zset",
    "sp:session:{sid}:artifact-names": "hash",
    "sp:session:{sid}:artifacts": "zset",
    "sp:session:{sid}:artifacts:created": "zset",
    "sp:session:{sid}:artifacts:size": "zset",
    "sp:session:{sid}:artifacts:type:{t}": "set",
    "sp:session:{sid}:artifacts:tag:{t}": "set",
    "sp:session:{sid}:artifacts:word:{w}": "set",
    "sp:session:{sid}:artifact-bytes": "string",
    "sp:principal:{p}:artifact-bytes": "string",
    "sp:principal:{p}:artifact-count": "string",
}
"""Every key pattern scriptpool writes, with its Redis type (as docs/architecture.md's key table)."""
