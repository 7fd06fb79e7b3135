"""The Python client SDK: `ScriptpoolClient(address, api_key)`, used by the CLI and by programs.

Light by design: it imports the wire contract (`scriptpool.v1`), grpc and the shared core
(`scriptpool.errors`, `values`, `languages`, `outcomes`) and nothing of the coordinator, the
workers or the sandbox; importing it starts no thread and sets no environment variable. Every RPC
a client may call has a typed method: jobs on the client itself (`submit`, `run`, `wait` ...), the
rest on one attribute per service (`client.sessions.suspend(SessionRef(...))`, `client.state`,
`client.events`, `client.hooks`, `client.artifacts`, and `client.admin` for keys with the admin
scope), each taking the RPC's request message and returning its response message. It raises
ScriptpoolError subclasses, never grpc.RpcError (the gRPC error stays the `__cause__`).

Submissions carry an idempotency key (a new random one unless the caller gives its own), so a
submission whose answer was lost can be sent again without queuing its jobs twice. Submits, GetJob
and WaitJob are sent again while the coordinator is UNAVAILABLE (restarting), backing off from
0.1 s to 2 s, for at most `reconnect_seconds` (30 s) of unavailability per call: a wait goes on
across a coordinator restart. Other calls are sent once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import grpc

from scriptpool.core.defaults import ARTIFACT_CHUNK_BYTES
from scriptpool.errors import DeadlineExceeded, Internal
from scriptpool.grpc_errors import from_rpc_error
from scriptpool.languages import Language
from scriptpool.tls import ClientTls, open_channel, tls_failure_reason
from scriptpool.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from scriptpool.values import PlainValue, to_value_map

__all__ = [
    "ARTIFACT_CHUNK_BYTES",
    "Admin",
    "Artifacts",
    "ClientTls",
    "Events",
    "Hooks",
    "ScriptpoolClient",
    "Sessions",
    "State",
    "job_request",
    "new_idempotency_key",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
M = TypeVar("M")
Stub = TypeVar("Stub")


RESEND_FIRST_SECONDS = 0.1
"""First pause before sending a call again while the coordinator is UNAVAILABLE."""
RESEND_MAX_SECONDS = 2.0
"""Longest pause between sends (the pauses double up to it)."""
# gRPC's own reconnection backoff grows to 120 s by default: a coordinator back after a restart
# would be noticed minutes late. Kept in step with the resends instead.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(RESEND_MAX_SECONDS * 1000)),
]


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class ScriptpoolClient:
    def __init__(
        self,
        address: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        reconnect_seconds: float = 30.0,
        tls_ca: str | Path | None = None,
        tls: bool | ClientTls = False,
        tls_client_cert: str | Path | None = None,
        tls_client_key: str | Path | None = None,
    ) -> None:
        """`reconnect_seconds`: how long a submit, GetJob or WaitJob keeps being sent again while the
        coordinator is UNAVAILABLE (0: never sent again).

        TLS (off by default; a `unix:` address is always plaintext): `tls_ca` is the PEM file of
        the CA that signed the coordinator's certificate; `tls=True` verifies against the system
        roots instead (or pass a whole `ClientTls`). The certificate and its host name are always
        verified. `tls_client_cert`/`tls_client_key`: a client certificate, for a coordinator that
        requires them (`--tls-client-ca`). A bad file is `InvalidArgument` here; a refused
        certificate is `TlsFailed` at the first call."""
        if isinstance(tls, ClientTls):
            settings = tls
        else:
            settings = ClientTls(
                ca=Path(tls_ca) if tls_ca else None,
                system_roots=tls and not tls_ca,
                client_cert=Path(tls_client_cert) if tls_client_cert else None,
                client_key=Path(tls_client_key) if tls_client_key else None,
            )
        self.channel = open_channel(address, settings, _CHANNEL_OPTIONS)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        self._jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)
        self._events = events_pb2_grpc.EventServiceStub(self.channel)
        calls = _Calls(self._metadata, timeout)
        self.sessions = Sessions(sessions_pb2_grpc.SessionServiceStub(self.channel), calls)
        """SessionService: one typed method per RPC."""
        self.state = State(state_pb2_grpc.StateServiceStub(self.channel), calls)
        """StateService: one typed method per RPC."""
        self.events = Events(self._events, calls)
        """EventService's unary RPCs (`follow_events` is its Stream)."""
        self.hooks = Hooks(events_pb2_grpc.HookServiceStub(self.channel), calls)
        """HookService: one typed method per RPC."""
        self.artifacts = Artifacts(self._artifacts, calls)
        """ArtifactService's unary RPCs (`store_artifact` and `read_artifact` stream content)."""
        self.admin = Admin(admin_pb2_grpc.AdminServiceStub(self.channel), calls)
        """AdminService (API keys; needs a key with the `admin` scope): one typed method per RPC."""
        self._call = calls

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ScriptpoolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _resent(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None = None,
        give_up: float = float("inf"),
    ) -> Resp:
        """`_call`, sent again while the coordinator is UNAVAILABLE (see the module docstring), and
        not past `give_up` (monotonic). Only for calls that may safely run twice."""
        resend = _Resend(self.reconnect_seconds, give_up)
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=timeout or self._timeout)
            except grpc.RpcError as exc:
                if not resend.after(exc):
                    raise from_rpc_error(exc) from exc

    # ---------------------------------------------------------------- jobs
    def submit(
        self,
        language: Language,
        source: str,
        *,
        session_id: str = "",
        limits: Mapping[str, int] | None = None,
        inputs: Mapping[str, PlainValue] | None = None,
        max_retries: int = 0,
        idempotency_key: str | None = None,
    ) -> jobs_pb2.Job:
        """Queue a job. `max_retries`: times it is queued again if its worker is lost mid-run.
        `idempotency_key`: None draws a new one (so this call may be sent again safely), "" sends
        none; the same key again within the server's TTL answers with the job it first queued."""
        request = job_request(
            language, source, session_id=session_id, limits=limits, inputs=inputs, max_retries=max_retries
        )
        return self._submit(request, idempotency_key, wait_seconds=0.0).job

    def _submit(
        self,
        request: jobs_pb2.SubmitJobRequest,
        idempotency_key: str | None,
        wait_seconds: float,
        give_up: float = float("inf"),
    ) -> jobs_pb2.SubmitJobResponse:
        request.wait_seconds = wait_seconds
        request.idempotency_key = new_idempotency_key() if idempotency_key is None else idempotency_key
        timeout = wait_seconds + self._timeout if wait_seconds else None
        if not request.idempotency_key:  # sending it again could queue a second job
            return self._call(self._jobs.SubmitJob, request, timeout)
        return self._resent(self._jobs.SubmitJob, request, timeout, give_up)

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self._resent(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))

    def wait(self, job_id: str, timeout: float = 300.0) -> jobs_pb2.Job:
        """Wait until the job finishes; DeadlineExceeded if it has not after `timeout` seconds. The
        wait goes on across a coordinator restart (UNAVAILABLE for up to `reconnect_seconds`)."""
        give_up = time.monotonic() + timeout
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"job {job_id} did not finish within {timeout:g}s (it is still queued/running)")
            slice_s = min(left, 30.0)
            request = jobs_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=slice_s)
            response = self._resent(self._jobs.WaitJob, request, slice_s + 5, give_up)
            if response.finished:
                return response.job

    def cancel(self, job_id: str) -> jobs_pb2.Job:
        return self._call(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))

    def list_jobs(self, request: jobs_pb2.ListJobsRequest | None = None) -> jobs_pb2.ListJobsResponse:
        return self._call(self._jobs.ListJobs, request or jobs_pb2.ListJobsRequest())

    def run(
        self,
        language: Language,
        source: str,
        *,
        timeout: float = 300.0,
        session_id: str = "",
        limits: Mapping[str, int] | None = None,
        inputs: Mapping[str, PlainValue] | None = None,
        max_retries: int = 0,
        idempotency_key: str | None = None,
        on_queued: Callable[[jobs_pb2.Job], object] | None = None,
    ) -> jobs_pb2.Job:
        """Submit a job and wait for its end: one call (SubmitJob with `wait_seconds`) for a job that
        ends within 30 s, then WaitJob calls. DeadlineExceeded if it has not ended after `timeout`.
        `on_queued`: called with the job as queued before any wait (it is then submitted without a
        wait: one call more). `max_retries` and `idempotency_key` as for `submit`."""
        started = time.monotonic()
        request = job_request(
            language, source, session_id=session_id, limits=limits, inputs=inputs, max_retries=max_retries
        )
        wait_seconds = 0.0 if on_queued else min(timeout, 30.0)
        first = self._submit(request, idempotency_key, wait_seconds, give_up=started + timeout)
        if on_queued is not None:
            on_queued(first.job)
        if first.finished:
            return first.job
        return self.wait(first.job.id, max(timeout - (time.monotonic() - started), 0.001))

    def submit_many(
        self,
        requests: Iterable[jobs_pb2.SubmitJobRequest],
        *,
        wait_seconds: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Iterator[jobs_pb2.SubmitJobsResponse]:
        """Submit many jobs in one SubmitJobs call (`job_request` builds them): all are enqueued or,
        on any error, none. Yields one answer per job, `index` being its position in `requests`: each
        as queued, or with `wait_seconds` > 0 each once it has finished (in the order they finish)
        and then, after that many seconds, the unfinished ones. Stopping early cancels the call
        (the jobs run on). The batch carries an idempotency key (`submit`'s rules): if the
        coordinator goes away before every job was answered, the call is sent again with it and the
        answers not yet given follow (each job is answered once, and queued once)."""
        key = new_idempotency_key() if idempotency_key is None else idempotency_key
        request = jobs_pb2.SubmitJobsRequest(jobs=requests, wait_seconds=wait_seconds, idempotency_key=key)
        started = time.monotonic()
        answered: set[int] = set()
        resend = _Resend(self.reconnect_seconds if key else 0.0, float("inf"))
        while True:
            if wait_seconds > 0 and resend.until is not None:  # sent again: wait only for what is left
                request.wait_seconds = max(wait_seconds - (time.monotonic() - started), 0.001)
            stream = self._jobs.SubmitJobs(
                request, metadata=self._metadata, timeout=request.wait_seconds + self._timeout
            )
            try:
                for answer in stream:
                    resend.answered()
                    if answer.index not in answered:
                        answered.add(answer.index)
                        yield answer
                return
            except grpc.RpcError as exc:
                if not resend.after(exc):
                    raise from_rpc_error(exc) from exc
            finally:
                stream.cancel()  # type: ignore[no-untyped-call]  # (grpc-stubs leaves Call.cancel untyped)

    def run_many(
        self,
        language: Language,
        sources: Sequence[str],
        *,
        timeout: float = 300.0,
        session_id: str = "",
        limits: Mapping[str, int] | None = None,
        inputs: Mapping[str, PlainValue] | None = None,
    ) -> list[jobs_pb2.Job]:
        """Run one job per source, submitted as one batch (`submit_many`), and return them finished,
        in the order of `sources`. Jobs that end within 30 s come back in that call, later ones through
        WaitJob. Without `session_id` each job gets a new session. No sources: no call, no jobs.
        DeadlineExceeded if a job has not ended after `timeout` seconds."""
        if not sources:
            return []
        started = time.monotonic()
        template = job_request(language, "", session_id=session_id, limits=limits, inputs=inputs)
        requests = []
        for source in sources:
            request = jobs_pb2.SubmitJobRequest()
            request.CopyFrom(template)
            request.source = source
            requests.append(request)
        jobs: dict[int, jobs_pb2.Job] = {}
        unfinished = []
        for answer in self.submit_many(requests, wait_seconds=min(timeout, 30.0)):
            jobs[answer.index] = answer.job
            if not answer.finished:
                unfinished.append(answer.index)
        if len(jobs) != len(requests):
            raise Internal(f"the coordinator answered for {len(jobs)} of the {len(requests)} jobs submitted")
        for index in unfinished:
            jobs[index] = self.wait(jobs[index].id, max(timeout - (time.monotonic() - started), 0.001))
        return [jobs[index] for index in range(len(requests))]

    # ---------------------------------------------------------------- sessions
    def create_session(
        self,
        name: str = "",
        *,
        description: str = "",
        tags: list[str] | None = None,
        metadata: Mapping[str, PlainValue] | None = None,
        parent_session_id: str = "",
    ) -> sessions_pb2.Session:
        request = sessions_pb2.CreateSessionRequest(
            name=name,
            description=description,
            tags=tags or [],
            metadata=to_value_map(dict(metadata or {})),
            parent_session_id=parent_session_id,
        )
        return self.sessions.create(request)

    def follow_events(self, pattern: str, session_id: str = "") -> Iterator[events_pb2.Event]:
        """Your events matching `pattern` (a glob over names) as they happen, until you stop iterating.
        With `session_id`, that session's only: yours, or one shared with you."""
        request = events_pb2.SubscribeRequest(pattern=pattern, session_id=session_id)
        stream = self._events.Stream(request, metadata=self._metadata)
        try:
            yield from self._guard(stream)
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]  # (grpc-stubs leaves Call.cancel untyped)

    def get_session(self, session_id: str) -> sessions_pb2.Session:
        return self.sessions.get(sessions_pb2.SessionRef(session_id=session_id))

    def list_sessions(
        self, request: sessions_pb2.ListSessionsRequest | None = None
    ) -> sessions_pb2.ListSessionsResponse:
        return self.sessions.list(request or sessions_pb2.ListSessionsRequest())

    # ---------------------------------------------------------------- artifacts
    def store_artifact(
        self,
        header: artifacts_pb2.StoreArtifactChunk,
        content: Iterable[bytes],
        *,
        timeout: float = 3600.0,
    ) -> artifacts_pb2.ArtifactRef:
        """Store (or, with header.artifact_id, Update) streaming `content` pieces; nothing is held whole."""

        def messages() -> Iterator[artifacts_pb2.StoreArtifactChunk]:
            yield header
            for piece in content:
                for start in range(0, len(piece), ARTIFACT_CHUNK_BYTES):
                    yield artifacts_pb2.StoreArtifactChunk(content=piece[start : start + ARTIFACT_CHUNK_BYTES])

        method = self._artifacts.Update if header.artifact_id else self._artifacts.Store
        try:
            return method(messages(), metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def read_artifact(
        self, session_id: str, artifact_id: str, version: int = 0, *, timeout: float = 3600.0
    ) -> tuple[artifacts_pb2.ArtifactInfo, Iterator[bytes]]:
        """The artifact's info and an iterator over its content chunks (the content is read lazily)."""
        request = artifacts_pb2.GetArtifactRequest(session_id=session_id, artifact_id=artifact_id, version=version)
        stream = self._artifacts.Get(request, metadata=self._metadata, timeout=timeout)
        first = next(self._guard(stream))
        return first.info, (chunk.content for chunk in self._guard(stream))

    def read_artifact_content(
        self, session_id: str, artifact_id: str, version: int = 0, *, timeout: float = 3600.0
    ) -> Iterator[bytes]:
        """The artifact's content chunks alone (GetContent), read lazily."""
        request = artifacts_pb2.GetArtifactRequest(session_id=session_id, artifact_id=artifact_id, version=version)
        stream = self._artifacts.GetContent(request, metadata=self._metadata, timeout=timeout)
        return (chunk.content for chunk in self._guard(stream))

    def _guard(self, stream: Iterable[M]) -> Iterator[M]:
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


def job_request(
    language: Language,
    source: str,
    *,
    session_id: str = "",
    limits: Mapping[str, int] | None = None,
    inputs: Mapping[str, PlainValue] | None = None,
    max_retries: int = 0,
) -> jobs_pb2.SubmitJobRequest:
    """One job for `submit_many` (or SubmitJob): limits left out or 0 get the server's defaults."""
    return jobs_pb2.SubmitJobRequest(
        language=language.to_proto(),
        source=source,
        session_id=session_id,
        limits=jobs_pb2.JobLimits(**dict(limits or {})),
        inputs=to_value_map(dict(inputs or {})),
        max_retries=max_retries,
    )


class _Calls:
    """How a unary call is sent: with the API key, within the default timeout, and a failure raised
    as a ScriptpoolError (its gRPC error the cause)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout: float) -> None:
        self.metadata = metadata
        self.timeout = timeout

    def __call__(
        self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req, timeout: float | None = None
    ) -> Resp:
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


class _Service(Generic[Stub]):
    """One service's typed methods: each sends its RPC through the client's `_Calls`."""

    def __init__(self, stub: Stub, call: _Calls) -> None:
        self._stub = stub
        self._call = call


class Sessions(_Service[sessions_pb2_grpc.SessionServiceStub]):
    """SessionService."""

    def create(self, request: sessions_pb2.CreateSessionRequest) -> sessions_pb2.Session:
        return self._call(self._stub.Create, request)

    def get(self, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self._call(self._stub.Get, request)

    def list(self, request: sessions_pb2.ListSessionsRequest) -> sessions_pb2.ListSessionsResponse:
        return self._call(self._stub.List, request)

    def get_current(self, request: common_pb2.Empty) -> sessions_pb2.CurrentSession:
        return self._call(self._stub.GetCurrent, request)

    def set_current(self, request: sessions_pb2.SetCurrentSessionRequest) -> sessions_pb2.CurrentSession:
        return self._call(self._stub.SetCurrent, request)

    def suspend(self, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self._call(self._stub.Suspend, request)

    def resume(self, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self._call(self._stub.Resume, request)

    def complete(self, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self._call(self._stub.Complete, request)

    def delete(self, request: sessions_pb2.SessionRef) -> common_pb2.Empty:
        return self._call(self._stub.Delete, request)

    def get_metadata(self, request: sessions_pb2.SessionRef) -> common_pb2.ValueMap:
        return self._call(self._stub.GetMetadata, request)

    def update_metadata(self, request: sessions_pb2.UpdateMetadataRequest) -> common_pb2.ValueMap:
        return self._call(self._stub.UpdateMetadata, request)

    def get_tags(self, request: sessions_pb2.SessionRef) -> sessions_pb2.Tags:
        return self._call(self._stub.GetTags, request)

    def set_tags(self, request: sessions_pb2.SetTagsRequest) -> sessions_pb2.Tags:
        return self._call(self._stub.SetTags, request)

    def save(self, request: sessions_pb2.SessionRef) -> sessions_pb2.SaveSessionResponse:
        return self._call(self._stub.Save, request)

    def load(self, request: sessions_pb2.LoadSessionRequest) -> sessions_pb2.Session:
        return self._call(self._stub.Load, request)

    def save_all(self, request: common_pb2.Empty) -> sessions_pb2.SaveAllResponse:
        return self._call(self._stub.SaveAll, request)

    def restore_recent(self, request: sessions_pb2.RestoreRecentRequest) -> sessions_pb2.RestoreRecentResponse:
        return self._call(self._stub.RestoreRecent, request)

    def can_replay(self, request: sessions_pb2.SessionRef) -> sessions_pb2.CanReplayResponse:
        return self._call(self._stub.CanReplay, request)

    def replay(self, request: sessions_pb2.ReplayRequest) -> sessions_pb2.ReplayResponse:
        return self._call(self._stub.Replay, request)

    def get_timeline(self, request: sessions_pb2.GetTimelineRequest) -> sessions_pb2.Timeline:
        return self._call(self._stub.GetTimeline, request)

    def get_replay_metadata(self, request: sessions_pb2.SessionRef) -> sessions_pb2.ReplayMetadata:
        return self._call(self._stub.GetReplayMetadata, request)

    def record_refused_call(self, request: sessions_pb2.RefusedCall) -> common_pb2.Empty:
        return self._call(self._stub.RecordRefusedCall, request)

    def grant(self, request: sessions_pb2.SessionGrantChange) -> sessions_pb2.SessionGrants:
        return self._call(self._stub.Grant, request)

    def revoke(self, request: sessions_pb2.SessionGrantChange) -> sessions_pb2.SessionGrants:
        return self._call(self._stub.Revoke, request)

    def list_grants(self, request: sessions_pb2.SessionRef) -> sessions_pb2.SessionGrants:
        return self._call(self._stub.ListGrants, request)

    def get_audit_log(self, request: sessions_pb2.GetSessionAuditLogRequest) -> artifacts_pb2.AuditLog:
        return self._call(self._stub.GetAuditLog, request)


class State(_Service[state_pb2_grpc.StateServiceStub]):
    """StateService."""

    def get(self, request: state_pb2.StateKey) -> state_pb2.StateValue:
        return self._call(self._stub.Get, request)

    def set(self, request: state_pb2.SetStateRequest) -> common_pb2.Empty:
        return self._call(self._stub.Set, request)

    def delete(self, request: state_pb2.StateKey) -> state_pb2.StateValue:
        return self._call(self._stub.Delete, request)

    def list(self, request: state_pb2.StateScope) -> state_pb2.StateKeys:
        return self._call(self._stub.List, request)

    def increment(self, request: state_pb2.IncrementStateRequest) -> state_pb2.StateValue:
        return self._call(self._stub.Increment, request)

    def compare_and_set(self, request: state_pb2.CompareAndSetRequest) -> state_pb2.CompareAndSetResponse:
        return self._call(self._stub.CompareAndSet, request)


class Events(_Service[events_pb2_grpc.EventServiceStub]):
    """EventService's unary RPCs (its Stream is `ScriptpoolClient.follow_events`)."""

    def emit(self, request: events_pb2.EmitEventRequest) -> common_pb2.Empty:
        return self._call(self._stub.Emit, request)

    def subscribe(self, request: events_pb2.SubscribeRequest) -> events_pb2.Subscription:
        return self._call(self._stub.Subscribe, request)

    def receive(self, request: events_pb2.ReceiveRequest) -> events_pb2.ReceiveResponse:
        return self._call(self._stub.Receive, request)

    def unsubscribe(self, request: events_pb2.Subscription) -> common_pb2.Empty:
        return self._call(self._stub.Unsubscribe, request)


class Hooks(_Service[events_pb2_grpc.HookServiceStub]):
    """HookService."""

    def register(self, request: events_pb2.RegisterHookRequest) -> events_pb2.HookRegistration:
        return self._call(self._stub.Register, request)

    def unregister(self, request: events_pb2.HookRef) -> common_pb2.Empty:
        return self._call(self._stub.Unregister, request)

    def list(self, request: common_pb2.Empty) -> events_pb2.HookList:
        return self._call(self._stub.List, request)

    def poll(self, request: events_pb2.PollHooksRequest) -> events_pb2.HookFirings:
        return self._call(self._stub.Poll, request)


class Admin(_Service[admin_pb2_grpc.AdminServiceStub]):
    """AdminService: API keys of every principal (a key with the `admin` scope)."""

    def create_key(self, request: admin_pb2.CreateKeyRequest) -> admin_pb2.CreatedKey:
        return self._call(self._stub.CreateKey, request)

    def list_keys(self, request: admin_pb2.ListKeysRequest) -> admin_pb2.ListKeysResponse:
        return self._call(self._stub.ListKeys, request)

    def revoke_key(self, request: admin_pb2.KeyRef) -> admin_pb2.KeyInfo:
        return self._call(self._stub.RevokeKey, request)

    def rotate_key(self, request: admin_pb2.KeyRef) -> admin_pb2.CreatedKey:
        return self._call(self._stub.RotateKey, request)


class Artifacts(_Service[artifacts_pb2_grpc.ArtifactServiceStub]):
    """ArtifactService's unary RPCs (Store/Update and Get/GetContent stream content: see
    `ScriptpoolClient.store_artifact` and `read_artifact`)."""

    def list(self, request: artifacts_pb2.ListArtifactsRequest) -> artifacts_pb2.ArtifactList:
        return self._call(self._stub.List, request)

    def delete(self, request: artifacts_pb2.ArtifactKey) -> common_pb2.Empty:
        return self._call(self._stub.Delete, request)

    def query(self, request: artifacts_pb2.ArtifactQuery) -> artifacts_pb2.ArtifactList:
        return self._call(self._stub.Query, request)

    def find_by_type(self, request: artifacts_pb2.FindByTypeRequest) -> artifacts_pb2.ArtifactList:
        return self._call(self._stub.FindByType, request)

    def find_by_tag(self, request: artifacts_pb2.FindByTagRequest) -> artifacts_pb2.ArtifactList:
        return self._call(self._stub.FindByTag, request)

    def search(self, request: artifacts_pb2.SearchArtifactsRequest) -> artifacts_pb2.ArtifactList:
        return self._call(self._stub.Search, request)

    def grant_permission(self, request: artifacts_pb2.PermissionChange) -> artifacts_pb2.Permissions:
        return self._call(self._stub.GrantPermission, request)

    def revoke_permission(self, request: artifacts_pb2.PermissionChange) -> artifacts_pb2.Permissions:
        return self._call(self._stub.RevokePermission, request)

    def get_permissions(self, request: artifacts_pb2.ArtifactKey) -> artifacts_pb2.Permissions:
        return self._call(self._stub.GetPermissions, request)

    def check_access(self, request: artifacts_pb2.CheckAccessRequest) -> artifacts_pb2.CheckAccessResponse:
        return self._call(self._stub.CheckAccess, request)

    def get_audit_log(self, request: artifacts_pb2.GetAuditLogRequest) -> artifacts_pb2.AuditLog:
        return self._call(self._stub.GetAuditLog, request)


class _Resend:
    """When to send a call again: after UNAVAILABLE, pausing 0.1 s doubling to 2 s, while the
    coordinator has been unavailable for less than `reconnect_seconds` (counted from the first
    UNAVAILABLE since the last answer) and `give_up` (monotonic) has not passed."""

    def __init__(self, reconnect_seconds: float, give_up: float) -> None:
        self.reconnect_seconds = reconnect_seconds
        self.give_up = give_up
        self.until: float | None = None
        self.pause = RESEND_FIRST_SECONDS

    def answered(self) -> None:
        """The coordinator answered: a later outage gets its own `reconnect_seconds`."""
        self.until = None
        self.pause = RESEND_FIRST_SECONDS

    def after(self, exc: grpc.RpcError) -> bool:
        """True (after a pause) if the call that failed with `exc` is to be sent again."""
        if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        if tls_failure_reason(exc.details() or "") is not None:
            return False  # a refused certificate stays refused
        if self.until is None:
            self.until = min(time.monotonic() + self.reconnect_seconds, self.give_up)
        pause = min(self.pause, self.until - time.monotonic())
        if pause <= 0:
            return False
        time.sleep(pause)
        self.pause = min(self.pause * 2, RESEND_MAX_SECONDS)
        return True
