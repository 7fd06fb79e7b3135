"""The OpenTelemetry side of `scriptpool.core.tracing`: imported only when tracing is on.

A tracer of its own `TracerProvider` (not OpenTelemetry's global one, which a process may set only
once: tests install and remove ours), W3C trace-context propagation, and two exporters: the JSON
lines trace file (`JsonLinesFileExporter`, synchronous: a span is on disk when it ends) and, when
opentelemetry-exporter-otlp is installed and $SCRIPTPOOL_TRACING=1, OTLP configured by the standard
OTEL_EXPORTER_OTLP_* variables (batched).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from scriptpool.core.tracing import TRACEPARENT, TRACING_VARIABLE, Metadata
from scriptpool.errors import InvalidArgument

log = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
JOB_ID = "scriptpool.job.id"
LANGUAGE = "scriptpool.job.language"
OUTCOME = "scriptpool.job.outcome"


class OtelJobSpan:
    def __init__(self, span: Span) -> None:
        self._span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        self.traceparent = carrier.get(TRACEPARENT, "")

    def set_outcome(self, outcome: str) -> None:
        self._span.set_attribute(OUTCOME, outcome)


class OtelTracer:
    """`scriptpool.core.tracing.Tracer` over an OpenTelemetry TracerProvider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("scriptpool")

    @contextmanager
    def server_span(self, method: str, metadata: Metadata) -> Iterator[object]:
        carrier = {key: value for key, value in metadata if key == TRACEPARENT and isinstance(value, str)}
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        with self._tracer.start_as_current_span(
            method.lstrip("/"), context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    @contextmanager
    def job_span(self, job_id: str, language: str, traceparent: str) -> Iterator[OtelJobSpan]:
        parent = _PROPAGATOR.extract({TRACEPARENT: traceparent}) if traceparent else None
        with self._tracer.start_as_current_span(
            "scriptpool.job", context=parent, kind=SpanKind.CONSUMER, attributes={JOB_ID: job_id, LANGUAGE: language}
        ) as span:
            yield OtelJobSpan(span)

    def current_traceparent(self) -> str:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get(TRACEPARENT, "")

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as the trace file holds it."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else "",
        "kind": span.kind.name,
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name", ""),
        "attributes": dict(span.attributes or {}),
    }


class JsonLinesFileExporter(SpanExporter):
    """Appends each span to `path` as one JSON line (one write each: processes sharing the file do
    not interleave within a line), until the file reaches `max_bytes`; then drops spans, logging
    that once."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InvalidArgument(f"cannot open the trace file {path}: {exc.strerror}") from None
        self._path = path
        self._lock = threading.Lock()
        self._dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = b"".join(json.dumps(span_record(span), default=str).encode() + b"\n" for span in spans)
        with self._lock:
            if self._fd < 0:
                return SpanExportResult.FAILURE
            if os.fstat(self._fd).st_size + len(data) > self.max_bytes:
                if not self._dropped:
                    log.warning("trace file %s is full (%d bytes): dropping spans", self._path, self.max_bytes)
                self._dropped += len(spans)
                return SpanExportResult.FAILURE
            os.write(self._fd, data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _otlp_exporter() -> SpanExporter | None:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError:
        return None
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter


def tracer_for(service: str, trace_file: str, max_bytes: int, *, otlp: bool) -> OtelTracer:
    """`otlp`: $SCRIPTPOOL_TRACING=1 (OTLP too, when its exporter is installed)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesFileExporter(trace_file, max_bytes)))
    if otlp:
        exporter = _otlp_exporter()
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        elif not trace_file:
            raise InvalidArgument(
                f"{TRACING_VARIABLE}=1 but no exporter: set SCRIPTPOOL_TRACE_FILE=PATH, or install "
                "opentelemetry-exporter-otlp-proto-grpc and set OTEL_EXPORTER_OTLP_ENDPOINT"
            )
    return OtelTracer(provider)


__all__ = ["JsonLinesFileExporter", "OtelJobSpan", "OtelTracer", "span_record", "tracer_for"]
