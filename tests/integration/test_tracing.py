"""One trace per job: the coordinator's SubmitJob span, the worker's job span (a child of it, carried
in the job record) and the coordinator's span for each global call (children of the job span,
carried in the calls' gRPC metadata), unary and streamed alike.

The coordinator runs in this process with the SDK's InMemorySpanExporter; the worker is a real
worker process writing its spans to a trace file ($SCRIPTPOOL_TRACE_FILE)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core import tracing
from scriptpool.core.otel_tracing import OtelTracer
from scriptpool.core.tracing import TRACE_FILE_VARIABLE
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2_grpc
from tests.conftest import WORKER_COMMAND, stop_process, wait_for

from .helpers import result_of, run_lua

# Three global calls: the first is a unary RPC, the others go on the job's call stream.
SCRIPT = 'State.set("traced", 1)\nState.set("traced", 2)\nreturn State.get("traced")'
STATE_SERVICE = "scriptpool.v1.StateService"


class TracedStack:
    def __init__(self, coordinator: RunningCoordinator, spans: InMemorySpanExporter, trace_file: Path) -> None:
        self.coordinator = coordinator
        self.spans = spans
        self.trace_file = trace_file

    def worker_spans(self) -> list[dict[str, Any]]:
        if not self.trace_file.exists():
            return []
        return [json.loads(line) for line in self.trace_file.read_text().splitlines()]

    def job_span(self, job_id: str) -> dict[str, Any]:
        """The worker's span for `job_id`, once it has written it."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [s for s in self.worker_spans() if s["attributes"].get("scriptpool.job.id") == job_id]
            return bool(found)

        assert wait_for(written, timeout=20), "the worker wrote no job span"
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def traced_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[TracedStack]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(OtelTracer(provider))
    queue = f"traced-{uuid.uuid4().hex[:8]}"  # no other test's worker takes these jobs
    running = start_coordinator(Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=queue))
    trace_file = tmp_path / "worker-spans.jsonl"
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "SCRIPTPOOL_COORDINATOR": f"127.0.0.1:{running.port}",
        "SCRIPTPOOL_QUEUE": queue,
        TRACE_FILE_VARIABLE: str(trace_file),
    }
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            WORKER_COMMAND, cwd=tmp_path, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, process_group=0
        )
    try:
        yield TracedStack(running, exporter, trace_file)
    finally:
        stop_process(worker)
        running.stop(grace=1)
        tracing.install(None)
        provider.shutdown()


def _ids(span: ReadableSpan) -> tuple[str, str, str]:
    context = span.get_span_context()
    assert context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else ""
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


def test_submit_job_and_global_calls_share_one_trace(traced_stack: TracedStack) -> None:
    key = traced_stack.coordinator.auth.create_api_key(f"t-{uuid.uuid4().hex[:8]}")
    with ScriptpoolClient(f"127.0.0.1:{traced_stack.coordinator.port}", key) as client:
        job = run_lua(client, SCRIPT)
    assert result_of(job) == 2

    submits = [s for s in traced_stack.spans.get_finished_spans() if s.name == "scriptpool.v1.JobService/SubmitJob"]
    assert len(submits) == 1
    trace_id, submit_id, submit_parent = _ids(submits[0])
    assert submit_parent == ""  # the client sent no trace context: the submit starts the trace

    job_span = traced_stack.job_span(job.id)
    assert job_span["name"] == "scriptpool.job" and job_span["service"] == "scriptpool-worker"
    assert job_span["trace_id"] == trace_id and job_span["parent_span_id"] == submit_id
    assert job_span["attributes"]["scriptpool.job.language"] == "lua"
    assert job_span["attributes"]["scriptpool.job.outcome"] == "ok"

    calls = [
        s for s in traced_stack.spans.get_finished_spans() if (s.attributes or {}).get("rpc.service") == STATE_SERVICE
    ]
    assert len(calls) == 3, [s.name for s in calls]
    for call in calls:
        assert _ids(call)[0] == trace_id and _ids(call)[2] == job_span["span_id"], call.name
    assert {call.name for call in calls} == {f"{STATE_SERVICE}/Set", f"{STATE_SERVICE}/Get"}


def test_a_client_s_traceparent_makes_the_job_part_of_its_trace(traced_stack: TracedStack) -> None:
    key = traced_stack.coordinator.auth.create_api_key(f"t-{uuid.uuid4().hex[:8]}")
    client_trace, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    metadata = (("authorization", f"Bearer {key}"), ("traceparent", f"00-{client_trace}-{client_span}-01"))
    with grpc.insecure_channel(f"127.0.0.1:{traced_stack.coordinator.port}") as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        request = job_request(Language.LUA, "return 1")
        request.wait_seconds = 20
        answer = stub.SubmitJob(request, metadata=metadata, timeout=30)
    assert answer.finished and answer.job.result.outcome == Outcome.OK.to_proto()

    (submit,) = [s for s in traced_stack.spans.get_finished_spans() if s.name.endswith("JobService/SubmitJob")]
    assert _ids(submit)[0] == client_trace and _ids(submit)[2] == client_span

    job_span = traced_stack.job_span(answer.job.id)
    assert job_span["trace_id"] == client_trace and job_span["parent_span_id"] == _ids(submit)[1]
