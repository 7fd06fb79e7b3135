"""A small Python client for the coordinator, used by the CLI (and usable by programs).

Raises ScriptpoolError subclasses, never grpc.RpcError.

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
from typing import Any, TypeVar

import grpc

from scriptpool.errors import DeadlineExceeded, Internal
from scriptpool.sandbox.languages import Language
from scriptpool.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    state_pb2_grpc,
)
from scriptpool.values import PlainValue, to_value_map
from scriptpool.workers.rpc_errors import from_rpc_error

T = TypeVar("T")
M = TypeVar("M")


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
    def __init__(self, address: str, api_key: str, *, timeout: float = 30.0, reconnect_seconds: float = 30.0) -> None:
        """`reconnect_seconds`: how long a submit, GetJob or WaitJob keeps being sent again while the
        coordinator is UNAVAILABLE (0: never sent again)."""
        self.channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        self._jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self._sessions = sessions_pb2_grpc.SessionServiceStub(self.channel)
        self._artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)
        self._state = state_pb2_grpc.StateServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ScriptpoolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self._timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def _resent(
        self, method: Callable[..., T], request: Any, timeout: float | None = None, give_up: float = float("inf")
    ) -> T:
        """`_call`, sent again while the coordinator is UNAVAILABLE (see the module docstring), and
        not past `give_up` (monotonic). Only for calls that may safely run twice."""
        resend = _Resend(self.reconnect_seconds, give_up)
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=timeout or self._timeout)
            except grpc.RpcError as exc:
                if not resend.after(exc):
                    raise from_rpc_error(exc) from None

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
            response: jobs_pb2.SubmitJobResponse = self._call(self._jobs.SubmitJob, request, timeout)
            return response
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
            stream: Any = self._jobs.SubmitJobs(
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
                    raise from_rpc_error(exc) from None
            finally:
                stream.cancel()

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
        metadata: Mapping[str, Any] | None = None,
        parent_session_id: str = "",
    ) -> sessions_pb2.Session:
        request = sessions_pb2.CreateSessionRequest(
            name=name,
            description=description,
            tags=tags or [],
            metadata=to_value_map(dict(metadata or {})),
            parent_session_id=parent_session_id,
        )
        return self._call(self._sessions.Create, request)

    def session_call(self, method: str, request: Any) -> Any:
        """Call any SessionService RPC by name, e.g. session_call("Suspend", SessionRef(...))."""
        return self._call(getattr(self._sessions, method), request)

    def state_call(self, method: str, request: Any) -> Any:
        """Call any StateService RPC by name, e.g. state_call("Get", StateKey(scope="global", key="k"))."""
        return self._call(getattr(self._state, method), request)

    def follow_events(self, pattern: str) -> Iterator[events_pb2.Event]:
        """Your events matching `pattern` (a glob over names) as they happen, until you stop iterating."""
        stream: Any = self.events.Stream(events_pb2.SubscribeRequest(pattern=pattern), metadata=self._metadata)
        try:
            yield from self._guard(stream)
        finally:
            stream.cancel()

    def event_call(self, method: str, request: Any) -> Any:
        """Call any unary EventService RPC by name, e.g. event_call("Subscribe", SubscribeRequest(pattern="job.*"))."""
        return self._call(getattr(self.events, method), request)

    def get_session(self, session_id: str) -> sessions_pb2.Session:
        return self._call(self._sessions.Get, sessions_pb2.SessionRef(session_id=session_id))

    def list_sessions(
        self, request: sessions_pb2.ListSessionsRequest | None = None
    ) -> sessions_pb2.ListSessionsResponse:
        return self._call(self._sessions.List, request or sessions_pb2.ListSessionsRequest())

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
        return self._call(method, messages(), timeout)

    def read_artifact(
        self, session_id: str, artifact_id: str, version: int = 0, *, timeout: float = 3600.0
    ) -> tuple[artifacts_pb2.ArtifactInfo, Iterator[bytes]]:
        """The artifact's info and an iterator over its content chunks (the content is read lazily)."""
        request = artifacts_pb2.GetArtifactRequest(session_id=session_id, artifact_id=artifact_id, version=version)
        stream = self._call(self._artifacts.Get, request, timeout)
        first = next(self._guard(stream))
        return first.info, (chunk.content for chunk in self._guard(stream))

    def _guard(self, stream: Iterable[M]) -> Iterator[M]:
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def artifact_call(self, method: str, request: Any) -> Any:
        """Call any unary ArtifactService RPC by name, e.g. artifact_call("List", ListArtifactsRequest(...))."""
        return self._call(getattr(self._artifacts, method), request)


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
        if self.until is None:
            self.until = min(time.monotonic() + self.reconnect_seconds, self.give_up)
        pause = min(self.pause, self.until - time.monotonic())
        if pause <= 0:
            return False
        time.sleep(pause)
        self.pause = min(self.pause * 2, RESEND_MAX_SECONDS)
        return True


ARTIFACT_CHUNK_BYTES = 256 * 1024
