"""Worker settings: one frozen object, read from the environment only at the edge."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from scriptpool.core.defaults import DEFAULT_COORDINATOR, DEFAULT_QUEUE, LEASE_SECONDS, RESULT_TTL_SECONDS
from scriptpool.core.durability import ACK_AFTER_FSYNC_VARIABLE, ReplicaAck, flag
from scriptpool.core.metrics import MetricsAddress, metrics_address
from scriptpool.sandbox.jail.policy import ALLOW_MISSING_VARIABLE, JailPolicy
from scriptpool.tls import ClientTls


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSettings:
    redis_url: str
    """Redis holding the RQ queue and the job records (REDIS_URL)."""
    coordinator: str = DEFAULT_COORDINATOR
    """host:port (or unix:PATH) of the coordinator the sandbox's global calls go to."""
    queue: str = DEFAULT_QUEUE
    """RQ queue name (SCRIPTPOOL_QUEUE): the one the coordinator enqueues on."""
    queues: tuple[str, ...] = ()
    """The RQ queues this worker takes jobs from, in priority order (`--queues a,b`); empty means
    just `queue`."""
    name: str = ""
    """Worker name shown in `rq info`; default host-pid."""
    result_ttl_seconds: int = RESULT_TTL_SECONDS
    """How long finished job records stay in Redis."""
    call_timeout_seconds: float = 30.0
    """Upper bound on one global call to the coordinator (also capped by the job's wall time)."""
    lease_seconds: float = LEASE_SECONDS
    """A running job's lease, renewed every 0.25 s; when a worker dies the coordinator ends its job as
    worker_lost once the lease expires (SCRIPTPOOL_LEASE_SECONDS)."""
    zygote: bool = True
    """Fork sandbox children in a small zygote process that holds only the engines (cheaper forks,
    off the worker's thread); False forks them from the worker itself (SCRIPTPOOL_ZYGOTE=0)."""

    call_stream: bool = True
    """From a job's second global call on, send its calls on one JobCallService stream (cheaper per
    call than unary RPCs; workers/bridge/call_stream.py); False makes every call unary
    (SCRIPTPOOL_CALL_STREAM=0)."""
    jobs_per_child: int = 64
    """Most jobs one sandbox child may run, each in a fresh engine instance, when they are Lua or
    JavaScript jobs of the same principal with the same limits and each ended normally
    (workers/supervision/child_reuse.py, docs/adr/0003-child-reuse-within-a-principal.md); 1 makes every
    child single-use (SCRIPTPOOL_JOBS_PER_CHILD)."""

    ack_after_fsync: bool = False
    """Record results only once Redis has fsynced them (SCRIPTPOOL_ACK_AFTER_FSYNC=1): the worker
    refuses to start against a Redis without `appendonly yes` and `appendfsync always`
    (proto/scriptpool/core/durability.py)."""

    metrics: MetricsAddress | None = None
    """Where this worker process serves Prometheus metrics (`--metrics-port`, SCRIPTPOOL_METRICS; its
    port moved up by SCRIPTPOOL_WORKER_INDEX when set); None: no endpoint."""
    ack_replicas: ReplicaAck = ReplicaAck()
    """Replicas that must confirm each job's finishing transaction (SCRIPTPOOL_ACK_REPLICAS=N,
    SCRIPTPOOL_ACK_REPLICAS_TIMEOUT_MS): a `WAIT` follows it; a shortfall is logged as a warning
    (proto/scriptpool/core/durability.py, docs/adr/0016-redis-sentinel.md)."""

    jail_policy: JailPolicy = JailPolicy()
    """The jail layers this worker may run without; every other layer is required and a worker that
    finds one missing refuses to start (SCRIPTPOOL_ALLOW_MISSING_LAYERS=a,b, `--allow-missing-layer`;
    proto/scriptpool/sandbox/jail/policy.py)."""

    tls: ClientTls = ClientTls()
    """How the worker dials the coordinator (job calls and `worker --check`): SCRIPTPOOL_TLS_CA (or
    SCRIPTPOOL_TLS=1 for the system roots), plus SCRIPTPOOL_TLS_CLIENT_CERT/KEY when the coordinator
    requires client certificates. A `unix:` coordinator address is always plaintext (proto/scriptpool/tls.py)."""

    @classmethod
    def from_env(cls, *, metrics_port: str | None = None, **overrides: str) -> WorkerSettings:
        """`metrics_port`: the `--metrics-port` flag, which wins over SCRIPTPOOL_METRICS."""
        env = os.environ
        values: dict[str, object] = {
            "redis_url": env.get("REDIS_URL", ""),
            "coordinator": env.get("SCRIPTPOOL_COORDINATOR", DEFAULT_COORDINATOR),
            "queue": env.get("SCRIPTPOOL_QUEUE", DEFAULT_QUEUE),
            "name": env.get("SCRIPTPOOL_WORKER_NAME", ""),
        }
        values.update({k: v for k, v in overrides.items() if v and k != "queues"})
        if overrides.get("queues"):
            values["queues"] = parse_queues(overrides["queues"])
        values["ack_after_fsync"] = flag(ACK_AFTER_FSYNC_VARIABLE, env.get(ACK_AFTER_FSYNC_VARIABLE, ""))
        values["ack_replicas"] = ReplicaAck.from_env(env)
        if env.get("SCRIPTPOOL_LEASE_SECONDS"):
            values["lease_seconds"] = _positive_seconds("SCRIPTPOOL_LEASE_SECONDS", env["SCRIPTPOOL_LEASE_SECONDS"])
        if env.get("SCRIPTPOOL_ZYGOTE", "").strip().lower() in ("0", "false", "no", "off"):
            values["zygote"] = False
        if env.get("SCRIPTPOOL_CALL_STREAM", "").strip().lower() in ("0", "false", "no", "off"):
            values["call_stream"] = False
        if env.get("SCRIPTPOOL_JOBS_PER_CHILD"):
            values["jobs_per_child"] = _positive_int("SCRIPTPOOL_JOBS_PER_CHILD", env["SCRIPTPOOL_JOBS_PER_CHILD"])
        values["metrics"] = metrics_address(metrics_port, env, pool_index=True)
        if env.get(ALLOW_MISSING_VARIABLE, "").strip():
            values["jail_policy"] = JailPolicy.from_variable(env[ALLOW_MISSING_VARIABLE])
        values["tls"] = ClientTls.from_env(env)
        if not values["redis_url"]:
            from scriptpool.errors import InvalidArgument

            raise InvalidArgument("REDIS_URL is not set: a worker needs the Redis its coordinator uses")
        if not values["name"]:
            values["name"] = f"{socket.gethostname()}-{os.getpid()}"
        return cls(**values)  # type: ignore[arg-type]

    def listen_queues(self) -> tuple[str, ...]:
        """The queues to take jobs from, in priority order."""
        return self.queues or (self.queue,)


MAX_QUEUES = 16
"""Most queues one worker listens on (RQ polls each in turn)."""


def parse_queues(raw: str) -> tuple[str, ...]:
    """`a,b` -> ("a", "b"): names without blanks, none empty, no repeats, at most MAX_QUEUES."""
    from scriptpool.errors import InvalidArgument

    names = tuple(name.strip() for name in raw.split(","))
    if not all(names) or any(" " in name for name in names):
        raise InvalidArgument(f"--queues takes comma-separated queue names without blanks (got {raw!r})")
    if len(set(names)) != len(names) or len(names) > MAX_QUEUES:
        raise InvalidArgument(f"--queues takes at most {MAX_QUEUES} different names (got {raw!r})")
    return names


def _positive_int(name: str, raw: str) -> int:
    from scriptpool.errors import InvalidArgument

    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidArgument(f"{name} must be a whole number of at least 1 (got {raw!r})")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    from scriptpool.errors import InvalidArgument

    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise InvalidArgument(f"{name} must be a positive number of seconds (got {raw!r})")
    return value
