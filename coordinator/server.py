"""Build and run the coordinator's gRPC server: all services, health checking and reflection."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from redis import Redis

from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.metrics import CallMetrics, coordinator_registry
from scriptpool.coordinator.redis_health import RedisHealth
from scriptpool.coordinator.reflection import enable_reflection
from scriptpool.coordinator.replay_runner import ReplayRunner
from scriptpool.coordinator.scopes import ScopeCheck
from scriptpool.coordinator.services.admin import AdminServicer
from scriptpool.coordinator.services.artifacts import ArtifactServicer
from scriptpool.coordinator.services.events import EventServicer
from scriptpool.coordinator.services.hooks import HookServicer
from scriptpool.coordinator.services.job_calls import JobCallServicer, unary_routes
from scriptpool.coordinator.services.jobs import JobServicer
from scriptpool.coordinator.services.sessions import SessionServicer
from scriptpool.coordinator.services.state import StateServicer
from scriptpool.coordinator.services.waiting_calls import WaitingCalls
from scriptpool.coordinator.session_expiry import SessionExpiry
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.single_instance import refuse_address_in_use
from scriptpool.coordinator.status import LenientRequests
from scriptpool.coordinator.stores.admission import Admission
from scriptpool.coordinator.stores.api_keys import ApiKeyStore
from scriptpool.coordinator.stores.artifacts import ArtifactStore
from scriptpool.coordinator.stores.events import EventStore
from scriptpool.coordinator.stores.jobs import JobStore
from scriptpool.coordinator.stores.replay import ReplayStore
from scriptpool.coordinator.stores.session_access import SessionAccess
from scriptpool.coordinator.stores.sessions import SessionStore
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.coordinator.stores.state import StateStore
from scriptpool.coordinator.sweeper import LeaseSweeper
from scriptpool.coordinator.tls import add_port, server_credentials
from scriptpool.coordinator.tracing_interceptor import TracingInterceptor
from scriptpool.coordinator.waiters import JobWaiters
from scriptpool.core import redis_connect, rq_dates, rq_serializers, tracing
from scriptpool.core.durability import check_ack_after_fsync
from scriptpool.core.keys import EVENT_RETENTION_KEY
from scriptpool.core.lean_redis import LeanPool
from scriptpool.core.metrics import MetricsServer, serve_metrics
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    artifacts_pb2,
    artifacts_pb2_grpc,
    calls_pb2,
    calls_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    sessions_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    state_pb2.DESCRIPTOR.services_by_name["StateService"].full_name,
    calls_pb2.DESCRIPTOR.services_by_name["JobCallService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["HookService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class RunningCoordinator:
    server: grpc.Server
    port: int
    waiters: JobWaiters
    sweeper: LeaseSweeper
    health: health.HealthServicer
    auth: Authenticator
    lean: LeanPool
    waiting: WaitingCalls | None = None
    """The waiting calls it holds now (`scriptpool.coordinator.services.waiting_calls`)."""
    session_expiry: SessionExpiry | None = None
    """Deletes job-created sessions past their retention; the sweeper thread runs it every sweep."""
    redis_health: RedisHealth | None = None
    """Turns the gRPC health NOT_SERVING while Redis does not answer (`coordinator/redis_health.py`)."""
    metrics: MetricsServer | None = None
    """Its Prometheus endpoint, when `settings.metrics` names one (`coordinator/metrics.py`)."""

    def stop(self, grace: float = 5.0) -> None:
        if self.redis_health is not None:
            self.redis_health.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.waiters.stop()
        self.sweeper.stop()
        self.lean.close()
        if self.metrics is not None:
            self.metrics.close()


def listen_addresses(listen: str) -> list[str]:
    """`host:port`, `unix:PATH`, or several of them separated by commas (e.g. TCP for remote workers
    and clients plus a Unix socket for the workers on this host)."""
    addresses = [a.strip() for a in listen.split(",") if a.strip()]
    if not addresses:
        raise InvalidArgument("listen address is empty: use host:port, unix:PATH, or a comma-separated list")
    return addresses


def start_coordinator(settings: Settings, redis: Redis | None = None) -> RunningCoordinator:
    """Start serving on `settings.listen` (port 0 picks a free port). Returns once listening."""
    credentials = server_credentials(settings)  # first: a bad certificate file stops nothing half-started
    if redis is None:
        if not settings.redis_url:
            raise InvalidArgument("REDIS_URL is not set: the coordinator needs Redis (or use `scriptpool up`)")
        redis = redis_connect.connect(settings.redis_url)  # one line naming the URL if it is bad or down
    else:
        redis.ping()
    if settings.ack_after_fsync:
        check_ack_after_fsync(redis, settings.redis_url)
    keys = ApiKeyStore(
        redis,
        max_keys_per_principal=settings.max_keys_per_principal,
        max_list_keys=settings.max_list_keys,
        revoked_retention_seconds=settings.revoked_key_retention_seconds,
    )
    auth = Authenticator(redis, keys=keys)
    lean = LeanPool(redis, settings.ack_replicas)  # InvalidArgument if the WAIT cannot be sent
    access = SessionAccess(
        redis,
        max_grants=settings.max_grants_per_session,
        max_shared=settings.max_sessions_shared_to_principal,
        max_audit_entries=settings.max_session_audit_entries,
    )
    sessions = SessionStore(
        redis,
        settings.max_sessions_per_principal,
        lean=lean,
        max_list_scan=settings.max_list_scan,
        max_timeline_scan=settings.max_timeline_scan,
        max_snapshots=settings.max_snapshots_per_session,
        job_session_retention_seconds=settings.job_session_retention_seconds,
        access=access,
    )
    jobs = JobStore(
        redis,
        sessions,
        queue=settings.queue,
        policy=settings.limits,
        max_source_bytes=settings.max_source_bytes,
        queue_ttl_seconds=settings.queue_ttl_seconds,
        result_ttl_seconds=settings.result_ttl_seconds,
        max_batch_jobs=settings.max_batch_jobs,
        max_list_bytes=settings.max_list_jobs_bytes,
        max_job_retries=settings.max_job_retries,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        fair_queue=settings.fair_queue,
        lean=lean,
        admission=Admission.from_settings(redis, settings),
    )
    artifacts = ArtifactStore(
        redis,
        max_artifact_bytes=settings.max_artifact_bytes,
        max_session_bytes=settings.max_session_artifact_bytes,
        max_principal_bytes=settings.max_principal_artifact_bytes,
        max_versions=settings.max_artifact_versions,
        max_session_artifacts=settings.max_session_artifacts,
        max_principal_artifacts=settings.max_principal_artifacts,
        max_query_sessions=settings.max_query_sessions,
        max_query_candidates=settings.max_query_candidates,
        max_delete_versions=settings.max_session_delete_versions,
        session_access=access,
    )
    sessions.delete_hooks.append(artifacts.delete_session_artifacts)
    snapshots = SnapshotStore(
        sessions,
        max_per_session=settings.max_snapshots_per_session,
        max_bytes=settings.max_snapshot_bytes,
        max_principal_bytes=settings.max_principal_snapshot_bytes,
        max_saves_per_job=settings.max_saves_per_job,
        max_save_all=settings.max_save_all_sessions,
        max_restore_bytes=settings.max_restore_bytes,
        max_principal_state_bytes=settings.max_principal_state_bytes,
    )
    waiters = JobWaiters(redis, auth.job_credentials)
    replay_runner = ReplayRunner(jobs, sessions, waiters, settings.max_running_replays_per_principal)
    replays = ReplayStore(
        sessions, jobs, replay_runner, max_jobs=settings.max_replay_jobs, max_per_job=settings.max_replays_per_job
    )
    sweeper = LeaseSweeper(
        jobs.records,
        settings.result_ttl_seconds,
        jobs.queue,
        settings.stranded_after_seconds,
        lease_seconds=settings.lease_seconds,
    )
    session_expiry = SessionExpiry(sessions, settings.max_expired_sessions_per_sweep)
    sweeper.also.append(session_expiry.sweep)
    waiting = WaitingCalls(
        settings.max_waiting_calls, settings.max_waiting_calls_per_principal, settings.max_event_waits
    )
    # A thread for each call that may wait besides the ones for every other call: waits never take those.
    threads = settings.grpc_threads + settings.max_waiting_calls
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        # No SO_REUSEPORT (gRPC's default sets it): a second coordinator on a port must fail, not share it.
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        # (the tracing interceptor only when tracing is on: docs/adr/0014-logs-and-tracing.md; the scope
        # check innermost, so that its refusals are counted and traced like any answer)
        interceptors=[
            CallMetrics(),
            LenientRequests(),
            *([TracingInterceptor()] if tracing.active() is not None else []),
            ScopeCheck(auth),
        ],
    )
    job_servicer = JobServicer(auth, jobs, waiters, settings.max_wait_seconds, waiting)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(job_servicer, server)
    # These servicers are completed by @grpc_service (UNIMPLEMENTED for what they do not define),
    # which mypy cannot see: hence the abstract-class ignores.
    session_servicer = SessionServicer(auth, sessions, snapshots, replays)
    artifact_servicer = ArtifactServicer(auth, artifacts)
    state_store = StateStore(
        redis, max_principal_bytes=settings.max_principal_state_bytes, lean=lean, session_access=access
    )
    state_servicer = StateServicer(auth, state_store)
    sessions_pb2_grpc.add_SessionServiceServicer_to_server(session_servicer, server)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(artifact_servicer, server)
    state_pb2_grpc.add_StateServiceServicer_to_server(state_servicer, server)
    redis.set(EVENT_RETENTION_KEY, settings.max_events_per_principal)  # read by every event writer
    event_store = EventStore(
        redis,
        max_subscriptions_per_principal=settings.max_subscriptions_per_principal,
        max_subscriptions_per_job=settings.max_subscriptions_per_job,
        max_scan=settings.max_event_scan,
        session_access=access,
    )
    event_servicer = EventServicer(auth, event_store, settings.max_wait_seconds, settings.max_event_streams, waiting)
    events_pb2_grpc.add_HookServiceServicer_to_server(
        HookServicer(auth, event_store, settings.max_wait_seconds, settings.max_poll_firings, waiting), server
    )
    events_pb2_grpc.add_EventServiceServicer_to_server(event_servicer, server)
    streamed = unary_routes(
        [
            (sessions_pb2.DESCRIPTOR.services_by_name["SessionService"], session_servicer),
            (artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"], artifact_servicer),
            (state_pb2.DESCRIPTOR.services_by_name["StateService"], state_servicer),
            (events_pb2.DESCRIPTOR.services_by_name["EventService"], event_servicer),
        ]
    )
    calls_pb2_grpc.add_JobCallServiceServicer_to_server(
        JobCallServicer(auth, streamed, settings.max_call_streams), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(auth), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    port = 0
    for address in listen_addresses(settings.listen):
        refuse_address_in_use(address)
        try:
            bound = add_port(server, address, credentials)
        except RuntimeError:  # gRPC >= 1.5x raises where older versions returned 0
            bound = 0
        if bound == 0:
            raise InvalidArgument(f"cannot listen on {address!r} (address in use or invalid)")
        port = port or bound
    metrics = None
    if settings.metrics is not None:
        try:
            metrics = serve_metrics(settings.metrics, coordinator_registry(redis, settings.queue, jobs.queue.key))
        except BaseException:
            server.stop(None)
            raise
    waiters.start()
    sweeper.start()
    server.start()
    redis_health = RedisHealth(redis, health_servicer, SERVICE_NAMES)
    redis_health.start()  # SERVING once Redis answers; NOT_SERVING while it does not
    return RunningCoordinator(
        server, port, waiters, sweeper, health_servicer, auth, lean, waiting=waiting, session_expiry=session_expiry,
        redis_health=redis_health, metrics=metrics,
    )  # fmt: skip


def serve_forever(settings: Settings) -> None:
    """`scriptpool coordinator`: serve until SIGINT/SIGTERM, then drain for a few seconds and exit 0."""
    rq_dates.install()  # RQ's date formatting in the jobs it enqueues, identical and faster
    rq_serializers.install()  # RQ's serializer check, remembered per serializer
    tracer = tracing.setup_from_env("scriptpool-coordinator")
    running = start_coordinator(settings)
    log.info(
        "scriptpool coordinator listening on %s (port %d)%s%s",
        settings.listen,
        running.port,
        " (TLS on TCP addresses)" if settings.tls_cert else "",
        "; tracing on" if tracer is not None else "",
    )
    if running.metrics is not None:
        log.info("scriptpool coordinator metrics on http://%s/metrics", running.metrics.address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("scriptpool coordinator stopping")
    running.stop()
    if tracer is not None:
        tracer.shutdown()
