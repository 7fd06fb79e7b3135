"""Coordinator (and CLI) settings: one frozen object, parsed from the environment only at the edge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from scriptpool.coordinator.stores.api_keys import (
    DEFAULT_MAX_KEYS_PER_PRINCIPAL,
    DEFAULT_MAX_LIST_KEYS,
    DEFAULT_REVOKED_RETENTION_SECONDS,
)
from scriptpool.core.defaults import DEFAULT_COORDINATOR, DEFAULT_QUEUE, LEASE_SECONDS, RESULT_TTL_SECONDS
from scriptpool.core.durability import (
    ACK_AFTER_FSYNC_VARIABLE,
    APPENDFSYNC_CHOICES,
    DEFAULT_APPENDFSYNC,
    ReplicaAck,
    appendfsync_choice,
    flag,
)
from scriptpool.core.event_streams import DEFAULT_EVENT_RETENTION
from scriptpool.core.metrics import MetricsAddress
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.limits import LimitPolicy
from scriptpool.tls import ClientTls

DEFAULT_LISTEN = DEFAULT_COORDINATOR
FAIR_QUEUE_VARIABLE = "SCRIPTPOOL_FAIR_QUEUE"
MAX_BATCH_JOBS_CEILING = 2000
"""Most jobs one SubmitJobs may carry, whatever the settings: the queued-jobs index write of a batch
is one ZADD of 2 values a job inside the admission script (Lua unpacks at most ~8000 values)."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scriptpool"


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    redis_url: str = ""
    """Redis, the system of record (REDIS_URL). Empty: `scriptpool up` starts a private redis-server."""
    listen: str = DEFAULT_LISTEN
    """Address(es) the coordinator's gRPC server binds (SCRIPTPOOL_LISTEN): host:port, unix:PATH,
    or a comma-separated list of them."""
    coordinator: str = DEFAULT_COORDINATOR
    """Address clients and workers dial (SCRIPTPOOL_COORDINATOR)."""
    queue: str = DEFAULT_QUEUE
    """RQ queue jobs go to (SCRIPTPOOL_QUEUE)."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Where `scriptpool up` keeps its private Redis data and the local API key (SCRIPTPOOL_STATE_DIR)."""
    metrics: MetricsAddress | None = None
    """Where the coordinator serves Prometheus metrics (`--metrics-port`, SCRIPTPOOL_METRICS; None: no
    endpoint). Read by the CLI (`scriptpool.core.metrics.metrics_address`): `up` turns it on by default."""
    api_key: str = ""
    """Client API key (SCRIPTPOOL_API_KEY); default: the one `scriptpool up` wrote to state_dir."""
    limits: LimitPolicy = field(default_factory=LimitPolicy)
    """Per-job limit defaults and server maximums."""
    max_source_bytes: int = 1024 * 1024
    """Largest script source a job may submit."""
    max_wait_seconds: float = 60.0
    """Longest single WaitJob call (and SubmitJob/SubmitJobs wait); clients loop for longer waits."""
    max_batch_jobs: int = 1000
    """Most jobs one SubmitJobs call may submit (SCRIPTPOOL_MAX_BATCH_JOBS, --max-batch-jobs); the whole
    batch is one Redis transaction and one request message, so keep it in the thousands at most."""
    grpc_threads: int = 128
    """Threads of the coordinator's gRPC server for every call that does not wait (each open job call
    stream holds one); the server has one more thread per allowed waiting call (`max_waiting_calls`),
    so waits never take these."""
    max_waiting_calls: int = 1024
    """Calls waiting at once on this coordinator (WaitJob, SubmitJob/SubmitJobs with a wait,
    Event.receive/HookService.Poll with a timeout, EventService.Stream); each holds a thread of its
    own while it waits. Past it a new wait is RESOURCE_EXHAUSTED (coordinator/services/waiting_calls.py)."""
    max_waiting_calls_per_principal: int = 256
    """Of `max_waiting_calls`, how many one principal may hold (so one tenant cannot take them all)."""
    max_event_waits: int = 256
    """Of `max_waiting_calls`, how many may block on Redis (Event.receive and HookService.Poll with a
    timeout: each holds a Redis connection while it waits)."""
    max_call_streams: int = 64
    """Job call streams (JobCallService.Calls) open at once; over it, workers make unary calls.
    Keep it well under grpc_threads, which the other RPCs need too."""
    max_event_streams: int = 16
    """Clients' live event streams (EventService.Stream) open at once; over it, RESOURCE_EXHAUSTED."""
    max_poll_firings: int = 1000
    """Hook firings one `HookService.Poll` returns; the rest stay queued for the next Poll."""
    max_sessions_per_principal: int = 100_000
    """Live sessions one principal may hold (SCRIPTPOOL_MAX_SESSIONS_PER_PRINCIPAL): the `sessions`
    quota's server maximum and default (docs/adr/0020-quotas.md; `scriptpool quota set` lowers it
    per principal). Every quota below named `max_*_per_principal`/`max_principal_*` works the same way."""
    max_queued_jobs_per_principal: int = 100_000
    """Jobs one principal may have queued and not started (SCRIPTPOOL_MAX_QUEUED_JOBS_PER_PRINCIPAL):
    the `queued_jobs` quota. A submission past it is RESOURCE_EXHAUSTED, nothing written."""
    max_running_jobs_per_principal: int = 10_000
    """The `running_jobs` quota's server maximum (SCRIPTPOOL_MAX_RUNNING_JOBS_PER_PRINCIPAL). Recorded
    and shown by `scriptpool quota get`, NOT enforced yet (docs/adr/0020-quotas.md: that needs the
    scheduler)."""
    max_submissions_per_second: float = 10_000.0
    """Jobs one principal may submit per second, sustained (SCRIPTPOOL_MAX_SUBMISSIONS_PER_SECOND): the
    refill rate of its token bucket (`submissions_per_second` quota); a batch takes one token per job."""
    max_submission_burst: int = 20_000
    """Jobs one principal may submit at once after a pause (SCRIPTPOOL_MAX_SUBMISSION_BURST): its
    token bucket's size (`submission_burst` quota). A SubmitJobs batch larger than it is always refused."""
    max_replays_per_job: int = 1
    """`Session.replay` calls one job's script may make (docs/adr/0004); a replayed job makes none."""
    max_replay_jobs: int = 100
    """Recorded jobs one replay re-runs; replaying a session with more is RESOURCE_EXHAUSTED."""
    max_running_replays_per_principal: int = 4
    """Replays of one principal running at once (all are driven by one coordinator thread)."""
    max_snapshots_per_session: int = 20
    """Snapshots a session keeps: each save past it drops the session's oldest snapshot."""
    max_snapshot_bytes: int = 17 * 1024 * 1024
    """Largest snapshot (the session record plus a copy of its State scope); a bigger save is refused."""
    max_principal_snapshot_bytes: int = 1024**3
    """Snapshot bytes one principal may hold across its sessions."""
    max_principal_state_bytes: int = 1024**3
    """State bytes (keys + values) one principal may hold in its `global` scope and all its sessions'
    scopes together (each scope holds at most 16 MiB); a write or a snapshot load past it is
    RESOURCE_EXHAUSTED, nothing written. A job's own `job` scope is not counted: it ends with the job."""
    max_saves_per_job: int = 100
    """`Session.save` calls (saveAll counts each session it saves) one job may make."""
    max_save_all_sessions: int = 100
    """Sessions one `Session.saveAll` looks at: the principal's most recently updated ones."""
    max_restore_bytes: int = 64 * 1024 * 1024
    """Snapshot bytes one `Session.restoreRecent` copies (the first session's always goes): asking
    for more sessions than fit is RESOURCE_EXHAUSTED, naming the count that fits."""
    max_list_scan: int = 10_000
    """Sessions one `Session.list` call reads; past it the page ends early with a `next_cursor`."""
    max_timeline_scan: int = 10_000
    """Timeline entries one `Session.getTimeline` call reads while filtering by type; past it the
    page ends early with a `next_after`."""
    max_list_jobs_bytes: int = 4 * 1024 * 1024
    """Job record bytes (script sources and results) one `ListJobs` call reads; past it the page ends
    early with a `next_cursor` (it always holds at least one job, whatever its size)."""
    queue_ttl_seconds: int = 24 * 3600
    """How long a job may wait in the queue before its credential expires."""
    result_ttl_seconds: int = RESULT_TTL_SECONDS
    """How long finished job records stay."""
    job_session_retention_seconds: int = 7 * 24 * 3600
    """How long a session the coordinator made for a job submitted without one stays after that job
    ended (it is completed then); past it the session and everything in it (timeline, State,
    snapshots, artifacts, job index) is deleted, and the principal's session count goes down.
    0 keeps such sessions for good (each counts against max_sessions_per_principal until deleted).
    A later job submitted into the session, or a snapshot loaded into it, makes it the principal's
    own: it is then kept. Sessions a client or a script creates are never removed by this."""
    max_expired_sessions_per_sweep: int = 500
    """Job-created sessions past their retention the coordinator deletes per sweep (one every
    2 s); the rest wait for the next sweeps."""
    max_artifact_bytes: int = 100 * 1024 * 1024
    """Largest artifact content (one version), SCRIPTPOOL_MAX_ARTIFACT_BYTES; refused as it streams in."""
    max_session_artifact_bytes: int = 10 * 1024**3
    """Artifact content one session may hold, all versions counted."""
    max_principal_artifact_bytes: int = 100 * 1024**3
    """Artifact content one principal may hold across its sessions, all versions counted."""
    max_events_per_principal: int = DEFAULT_EVENT_RETENTION
    """Events each principal's stream keeps (about: trimmed in Redis' stream nodes, so up to ~100 more);
    older ones are dropped from that principal's stream only. At most this many times 64 KiB of event
    data per principal. Written to Redis at start for every writer (proto/scriptpool/core/event_streams.py): the
    coordinators of one Redis should agree on it."""
    max_subscriptions_per_principal: int = 1000
    """Live event subscriptions (and client hooks) one principal may hold; past it, RESOURCE_EXHAUSTED.
    Unused ones expire an hour after their last receive."""
    max_subscriptions_per_job: int = 100
    """Live event subscriptions one job may make; past it, RESOURCE_EXHAUSTED."""
    max_event_scan: int = 1000
    """Entries of the principal's event stream one `Event.receive`, one `HookService.Poll` (across
    all its hooks) or one wakeup of `EventService.Stream` reads while looking for matches; past it
    the call returns what it found (maybe nothing) and the subscription continues from there."""
    max_artifact_versions: int = 1000
    """Versions one artifact may have; storing one more is RESOURCE_EXHAUSTED (history is never
    dropped silently). Every version is also charged, metadata included, against the byte quotas."""
    max_session_artifacts: int = 100_000
    """Artifacts one session may hold (each costs records and index entries besides its bytes)."""
    max_principal_artifacts: int = 1_000_000
    """Artifacts one principal may hold across all its sessions."""
    max_session_delete_versions: int = 10_000
    """Artifact versions one `Session.delete` releases (each artifact whole, at least one per call):
    a session holding more is deleted over several calls, each RESOURCE_EXHAUSTED but the last."""
    max_query_sessions: int = 1000
    """Sessions an artifact query/search without session_id looks at; a principal holding more gets
    RESOURCE_EXHAUSTED (narrow the query with session_id)."""
    max_grants_per_session: int = 100
    """Principals one session may be shared with (`Session.grant`); past it, RESOURCE_EXHAUSTED."""
    max_sessions_shared_to_principal: int = 10_000
    """Other principals' sessions one principal may be granted; past it, RESOURCE_EXHAUSTED (so
    grants cannot grow one principal's index without bound)."""
    max_session_audit_entries: int = 10_000
    """Entries a session's audit log keeps (grants, revocations, refusals), the oldest trimmed first."""
    max_query_candidates: int = 10_000
    """Artifacts one query/search may load to filter and sort: each session's candidates are counted
    in its narrowest index first (no ids read), and past this the query is RESOURCE_EXHAUSTED."""

    max_keys_per_principal: int = DEFAULT_MAX_KEYS_PER_PRINCIPAL
    """Active API keys (neither revoked nor expired) one principal may hold
    (SCRIPTPOOL_MAX_KEYS_PER_PRINCIPAL); creating one more is RESOURCE_EXHAUSTED."""
    max_list_keys: int = DEFAULT_MAX_LIST_KEYS
    """Keys one AdminService.ListKeys call answers (a larger page_size is cut to it); the rest come
    page by page."""
    revoked_key_retention_seconds: int = DEFAULT_REVOKED_RETENTION_SECONDS
    """How long a revoked key's record stays listed (as revoked), and an expired key's past its
    expiry; then it is deleted."""

    max_job_retries: int = 10
    """Most `max_retries` a job may ask for: times it is queued again when its worker is lost
    mid-run instead of ending `worker_lost` (SCRIPTPOOL_MAX_JOB_RETRIES). A job asking for more is
    INVALID_ARGUMENT. Each retry runs the whole script again, under the job's own limits."""
    fair_queue: bool = True
    """Queue jobs round-robin across principals (SCRIPTPOOL_FAIR_QUEUE=0 turns it off: plain FIFO,
    RQ's own order). `coordinator/stores/fair_queue.py`, docs/adr/0022-fair-scheduling.md."""
    idempotency_ttl_seconds: int = 24 * 3600
    """How long a SubmitJob/SubmitJobs idempotency key answers with the job(s) it first queued
    (SCRIPTPOOL_IDEMPOTENCY_TTL_SECONDS); capped at `result_ttl_seconds`, so a key never outlives
    the records of its jobs."""

    stranded_after_seconds: float = 10.0
    """How long a job id may sit in RQ's intermediate queue (moved there by a worker's dequeue, not yet
    claimed) before the lease sweeper takes it for stranded (its worker died between the two) and puts
    it back on the queue. A live worker claims within microseconds of its dequeue; with the sweep every
    2 s, a stranded job is queued again within about this plus 2 s, under the 15 s lease."""

    lease_seconds: float = LEASE_SECONDS
    """The workers' job lease (SCRIPTPOOL_LEASE_SECONDS, read by workers and coordinator alike: give
    both the same). The lease sweeper finishes a running job as worker_lost once its lease lapsed, but
    only after it has observed Redis without a gap for this long, from its start and after every
    outage or pause (coordinator/sweeper.py): time nobody could observe is not held against a worker."""

    redis_appendfsync: str = ""
    """`appendfsync` of the private Redis `scriptpool up` starts (SCRIPTPOOL_REDIS_APPENDFSYNC, `up
    --appendfsync`): `everysec` (the default: a host crash can lose about the last second of
    acknowledged writes), `always` (nothing acknowledged is lost; every write waits for its fsync) or
    `no`. Empty: `everysec`, or `always` with `ack_after_fsync`. See docs/DURABILITY.md."""
    ack_after_fsync: bool = False
    """Acknowledge submissions and record results only once Redis has fsynced them
    (SCRIPTPOOL_ACK_AFTER_FSYNC=1, `up --ack-after-fsync`; workers read the same variable): the
    private Redis then runs `appendfsync always`, and a coordinator or worker given another Redis
    refuses to start unless it runs `appendonly yes` and `appendfsync always` (docs/adr/0007-durability.md)."""
    ack_replicas: ReplicaAck = ReplicaAck()
    """Replicas that must confirm a submission before it is answered (SCRIPTPOOL_ACK_REPLICAS=N,
    SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS; workers read the same variables for results): a `WAIT` follows
    the submit transaction, and too few confirmations answer UNAVAILABLE (docs/adr/0016-redis-sentinel.md)."""

    tls_cert: Path | None = None
    """PEM certificate chain the coordinator serves TLS with (SCRIPTPOOL_TLS_CERT, --tls-cert); with
    it, every TCP listen address serves TLS only, and `unix:` ones stay plaintext (docs/adr/0018-tls.md).
    Needs `tls_key`. None: plaintext everywhere."""
    tls_key: Path | None = None
    """PEM private key of `tls_cert` (SCRIPTPOOL_TLS_KEY, --tls-key)."""
    tls_client_ca: Path | None = None
    """PEM CA(s) client certificates must chain to (SCRIPTPOOL_TLS_CLIENT_CA, --tls-client-ca): mutual
    TLS. Every client of the TCP listen addresses (workers, CLI, SDK) must then present one; gRPC sets
    the policy per listening port. Needs `tls_cert`."""
    client_tls: ClientTls = field(default_factory=ClientTls)
    """How the CLI (a client) dials `coordinator`: SCRIPTPOOL_TLS_CA / --tls-ca, SCRIPTPOOL_TLS=1,
    SCRIPTPOOL_TLS_CLIENT_CERT/KEY (proto/scriptpool/tls.py)."""

    def __post_init__(self) -> None:
        _check_tls(self)
        if self.redis_appendfsync not in ("", *APPENDFSYNC_CHOICES):
            raise InvalidArgument(
                f"redis_appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)} (got {self.redis_appendfsync!r})"
            )
        if self.ack_after_fsync and self.redis_appendfsync not in ("", "always"):
            raise InvalidArgument(
                f"{ACK_AFTER_FSYNC_VARIABLE} needs appendfsync always; the Redis appendfsync given is "
                f"{self.redis_appendfsync}"
            )
        if not 0 < self.lease_seconds < float("inf"):
            raise InvalidArgument(f"lease_seconds must be positive (got {self.lease_seconds})")
        if not 1 <= self.max_batch_jobs <= MAX_BATCH_JOBS_CEILING:
            raise InvalidArgument(
                f"max_batch_jobs must be from 1 to {MAX_BATCH_JOBS_CEILING} (got {self.max_batch_jobs}): a batch's "
                "writes are one Lua call each, and Lua 5.1 passes at most ~8000 values to one"
            )
        if not 0 < self.stranded_after_seconds < float("inf"):
            raise InvalidArgument(f"stranded_after_seconds must be positive (got {self.stranded_after_seconds})")
        for name in (
            "max_artifact_versions", "max_session_artifacts", "max_principal_artifacts",
            "max_events_per_principal", "max_subscriptions_per_principal", "max_subscriptions_per_job",
            "max_event_scan", "max_query_sessions", "max_query_candidates", "max_session_delete_versions",
            "max_restore_bytes", "max_principal_state_bytes", "max_expired_sessions_per_sweep",
            "grpc_threads", "max_waiting_calls", "max_waiting_calls_per_principal", "max_event_waits",
            "max_sessions_per_principal", "max_principal_artifact_bytes", "max_queued_jobs_per_principal",
            "max_running_jobs_per_principal", "max_submission_burst",
            "max_grants_per_session", "max_sessions_shared_to_principal", "max_session_audit_entries",
            "max_keys_per_principal", "max_list_keys", "revoked_key_retention_seconds",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.max_submissions_per_second < float("inf"):
            raise InvalidArgument(
                f"max_submissions_per_second must be positive (got {self.max_submissions_per_second})"
            )
        if self.max_job_retries < 0:
            raise InvalidArgument(f"max_job_retries must be 0 or more (got {self.max_job_retries})")
        if self.idempotency_ttl_seconds < 1:
            raise InvalidArgument(f"idempotency_ttl_seconds must be at least 1 (got {self.idempotency_ttl_seconds})")
        if self.job_session_retention_seconds < 0:
            raise InvalidArgument(
                "job_session_retention_seconds must be 0 (keep for good) or more "
                f"(got {self.job_session_retention_seconds})"
            )

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        values: dict[str, object] = {}
        for name, var in (
            ("redis_url", "REDIS_URL"),
            ("listen", "SCRIPTPOOL_LISTEN"),
            ("coordinator", "SCRIPTPOOL_COORDINATOR"),
            ("queue", "SCRIPTPOOL_QUEUE"),
            ("api_key", "SCRIPTPOOL_API_KEY"),
        ):
            if env.get(var):
                values[name] = env[var]
        for name, var in (
            ("max_artifact_bytes", "SCRIPTPOOL_MAX_ARTIFACT_BYTES"),
            ("max_batch_jobs", "SCRIPTPOOL_MAX_BATCH_JOBS"),
            ("grpc_threads", "SCRIPTPOOL_GRPC_THREADS"),
            ("max_waiting_calls", "SCRIPTPOOL_MAX_WAITING_CALLS"),
            ("max_waiting_calls_per_principal", "SCRIPTPOOL_MAX_WAITING_CALLS_PER_PRINCIPAL"),
            ("max_event_waits", "SCRIPTPOOL_MAX_EVENT_WAITS"),
            ("max_job_retries", "SCRIPTPOOL_MAX_JOB_RETRIES"),
            ("idempotency_ttl_seconds", "SCRIPTPOOL_IDEMPOTENCY_TTL_SECONDS"),
            ("max_sessions_per_principal", "SCRIPTPOOL_MAX_SESSIONS_PER_PRINCIPAL"),
            ("max_queued_jobs_per_principal", "SCRIPTPOOL_MAX_QUEUED_JOBS_PER_PRINCIPAL"),
            ("max_running_jobs_per_principal", "SCRIPTPOOL_MAX_RUNNING_JOBS_PER_PRINCIPAL"),
            ("max_submission_burst", "SCRIPTPOOL_MAX_SUBMISSION_BURST"),
            ("max_principal_artifact_bytes", "SCRIPTPOOL_MAX_PRINCIPAL_ARTIFACT_BYTES"),
            ("max_principal_state_bytes", "SCRIPTPOOL_MAX_PRINCIPAL_STATE_BYTES"),
            ("max_subscriptions_per_principal", "SCRIPTPOOL_MAX_SUBSCRIPTIONS_PER_PRINCIPAL"),
            ("max_keys_per_principal", "SCRIPTPOOL_MAX_KEYS_PER_PRINCIPAL"),
        ):
            if env.get(var):
                values[name] = _integer(var, env[var])
        for name, var in (
            ("state_dir", "SCRIPTPOOL_STATE_DIR"),
            ("tls_cert", "SCRIPTPOOL_TLS_CERT"),
            ("tls_key", "SCRIPTPOOL_TLS_KEY"),
            ("tls_client_ca", "SCRIPTPOOL_TLS_CLIENT_CA"),
        ):
            if env.get(var):
                values[name] = Path(env[var])
        values["client_tls"] = ClientTls.from_env(env)
        if env.get("SCRIPTPOOL_REDIS_APPENDFSYNC"):
            values["redis_appendfsync"] = appendfsync_choice(
                "SCRIPTPOOL_REDIS_APPENDFSYNC", env["SCRIPTPOOL_REDIS_APPENDFSYNC"]
            )
        values["ack_after_fsync"] = flag(ACK_AFTER_FSYNC_VARIABLE, env.get(ACK_AFTER_FSYNC_VARIABLE, ""))
        if env.get(FAIR_QUEUE_VARIABLE):
            values["fair_queue"] = flag(FAIR_QUEUE_VARIABLE, env[FAIR_QUEUE_VARIABLE])
        values["ack_replicas"] = ReplicaAck.from_env(env)
        if env.get("SCRIPTPOOL_MAX_SUBMISSIONS_PER_SECOND"):
            values["max_submissions_per_second"] = _number(
                "SCRIPTPOOL_MAX_SUBMISSIONS_PER_SECOND", env["SCRIPTPOOL_MAX_SUBMISSIONS_PER_SECOND"], "jobs per second"
            )
        if env.get("SCRIPTPOOL_LEASE_SECONDS"):
            values["lease_seconds"] = _number("SCRIPTPOOL_LEASE_SECONDS", env["SCRIPTPOOL_LEASE_SECONDS"])
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Settings:
        """A copy with every non-empty override applied (CLI flags win over the environment)."""
        return replace(self, **{k: v for k, v in overrides.items() if v not in (None, "")})  # type: ignore[arg-type]

    @property
    def private_redis_appendfsync(self) -> str:
        """The `appendfsync` `scriptpool up` gives its private Redis."""
        return self.redis_appendfsync or ("always" if self.ack_after_fsync else DEFAULT_APPENDFSYNC)

    def tls_variables(self) -> dict[str, str]:
        """The coordinator's TLS files as the variables `from_env` reads (for a coordinator `up` starts)."""
        files = {
            "SCRIPTPOOL_TLS_CERT": self.tls_cert,
            "SCRIPTPOOL_TLS_KEY": self.tls_key,
            "SCRIPTPOOL_TLS_CLIENT_CA": self.tls_client_ca,
        }
        return {variable: str(path) for variable, path in files.items() if path is not None}

    @property
    def api_key_file(self) -> Path:
        return self.state_dir / "api-key"


def _check_tls(settings: Settings) -> None:
    """The TLS files given together (their contents are checked at start: coordinator/tls.py)."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise InvalidArgument("TLS needs both a certificate and its key: --tls-cert and --tls-key")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise InvalidArgument("--tls-client-ca (mutual TLS) needs TLS: --tls-cert and --tls-key")


def _integer(variable: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{variable} must be a whole number (got {text!r})") from None


def _number(variable: str, text: str, unit: str = "seconds") -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidArgument(f"{variable} must be a number of {unit} (got {text!r})") from None
