"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.core.job_records import text
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import events_pb2, jobs_pb2
from scriptpool.values import PlainValue, from_value


def run_lua(client: ScriptpoolClient, source: str, timeout: float = 60, **kwargs: Any) -> jobs_pb2.Job:
    return client.run(Language.LUA, source, timeout=timeout, **kwargs)


def run_js(client: ScriptpoolClient, source: str, timeout: float = 60, **kwargs: Any) -> jobs_pb2.Job:
    return client.run(Language.JAVASCRIPT, source, timeout=timeout, **kwargs)


def outcome(job: jobs_pb2.Job) -> Outcome:
    return Outcome.from_proto(job.result.outcome)


def result_of(job: jobs_pb2.Job) -> PlainValue:
    assert outcome(job) is Outcome.OK, f"job failed: {outcome(job)}: {job.result.message}"
    return from_value(job.result.result)


def assert_worker_healthy(client: ScriptpoolClient) -> None:
    """A normal job still runs correctly after whatever the test did."""
    job = run_lua(client, "local t = {} for i = 1, 100 do t[i] = i * i end return t[12] + #t")
    assert result_of(job) == 244


def running_job_credential(client: ScriptpoolClient, redis: Redis, wall_time_ms: int = 0) -> tuple[str, str]:
    """Start a held job (it runs until `release_job`, or its wall time: 30 s unless given); once it
    says it is running, its id and its job credential (read from Redis)."""
    limits = {"cpu_time_ms": 10000} | ({"wall_time_ms": wall_time_ms} if wall_time_ms else {})
    held = submit_held(client, 1, limits=limits)
    held.wait_running()
    _HELD[held.job.id] = held
    credential = redis.hget(f"sp:job:{held.job.id}", "credential")
    assert credential, "a running job has a credential"
    return held.job.id, text(credential)


_HELD: dict[str, HeldJob] = {}


def release_job(job_id: str) -> None:
    """Let a job of `running_job_credential` finish (it returns 1)."""
    _HELD.pop(job_id).release()


def subscribe(client: ScriptpoolClient, pattern: str) -> str:
    """A client subscription to events named like `pattern`; its id."""
    sub: events_pb2.Subscription = client.events.subscribe(events_pb2.SubscribeRequest(pattern=pattern))
    return sub.subscription_id


def next_event(client: ScriptpoolClient, subscription_id: str, within_seconds: float = 60) -> events_pb2.Event | None:
    """The subscription's next event, waited for up to `within_seconds` (None if none came): a
    readiness handshake with a script that emits it. Waits in steps of 3 s: the coordinator's Redis
    connection times out blocking reads of 5 s and more."""
    request = events_pb2.ReceiveRequest(subscription_id=subscription_id, timeout_ms=3_000)
    give_up = time.monotonic() + within_seconds
    while time.monotonic() < give_up:
        response: events_pb2.ReceiveResponse = client.events.receive(request)
        if response.received:
            return response.event
    return None


HELD_LUA = """
local go = Event.subscribe(INPUT.go)
Event.emit(INPUT.ready, {})
repeat local released = Event.receive(go, 3000) until released
return INPUT.result
"""
"""A job that says it is running, then waits (in a global call) until the test releases it."""


@dataclass
class HeldJob:
    """A job of `HELD_LUA`: it cannot finish before `release()`, so a test needs no timing to know
    the job is unfinished, and `wait_running()` is a handshake, not a poll."""

    client: ScriptpoolClient
    job: jobs_pb2.Job
    ready_subscription: str
    go: str

    def wait_running(self) -> None:
        event = next_event(self.client, self.ready_subscription)
        if event is None:
            raise AssertionError(f"the held job did not start: {self.client.get_job(self.job.id).result.message}")
        assert event.job_id == self.job.id

    def release(self) -> None:
        self.client.events.emit(events_pb2.EmitEventRequest(name=self.go))


def submit_held(client: ScriptpoolClient, result: PlainValue = "released", **kwargs: Any) -> HeldJob:
    """Submit a held job (kwargs as for `client.submit`); it returns `result` once released."""
    tag = uuid.uuid4().hex
    ready, go = f"held.ready.{tag}", f"held.go.{tag}"
    subscription = subscribe(client, ready)
    inputs = {**kwargs.pop("inputs", {}), "ready": ready, "go": go, "result": result}
    job = client.submit(Language.LUA, HELD_LUA, inputs=inputs, **kwargs)
    return HeldJob(client, job, subscription, go)
