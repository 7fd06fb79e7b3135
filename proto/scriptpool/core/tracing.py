"""Optional OpenTelemetry tracing: one trace per job, from SubmitJob to each global call (ADR 0014).

Off unless $SCRIPTPOOL_TRACING is 1 or $SCRIPTPOOL_TRACE_FILE names a file; then `setup_from_env`
loads `scriptpool.core.otel_tracing` (the `tracing` extra: opentelemetry-api and -sdk) and installs
it. Off, nothing of OpenTelemetry is imported and every helper here is a check of one global: the
coordinator, the job store and the worker call them unconditionally.

Where the trace goes: the coordinator's span for an RPC continues the `traceparent` the caller sent
in its metadata (`server_span`); a submitted job's record keeps the submit span's context
(`current_traceparent`, field `traceparent`); the worker's job span continues it (`job_span`), and
the worker's bridge sends the job span's context with each global call, which the coordinator's
span for that call continues.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from scriptpool.errors import InvalidArgument

TRACING_VARIABLE = "SCRIPTPOOL_TRACING"
"""1: trace, to $SCRIPTPOOL_TRACE_FILE and/or OTLP (the standard OTEL_EXPORTER_OTLP_* variables)
when opentelemetry-exporter-otlp is installed. 0 or unset: off unless a trace file is set."""
TRACE_FILE_VARIABLE = "SCRIPTPOOL_TRACE_FILE"
"""A file each process appends its finished spans to, one JSON object a line (turns tracing on)."""
TRACE_FILE_MAX_BYTES_VARIABLE = "SCRIPTPOOL_TRACE_FILE_MAX_BYTES"
TRACE_FILE_MAX_BYTES = 64 * 1024 * 1024
"""Past this size a process writes no more spans to the trace file (it logs once how many it drops):
rotate or delete the file to start again."""
TRACEPARENT = "traceparent"
"""The W3C trace-context header: the gRPC metadata key and the job record's field."""

Metadata = Sequence[tuple[str, str | bytes]]


class JobSpan(Protocol):
    traceparent: str
    """This span's context as a W3C traceparent ("" when not traced): what the bridge sends."""

    def set_outcome(self, outcome: str) -> None: ...


class Tracer(Protocol):
    def server_span(self, method: str, metadata: Metadata) -> AbstractContextManager[object]: ...

    def job_span(self, job_id: str, language: str, traceparent: str) -> AbstractContextManager[JobSpan]: ...

    def current_traceparent(self) -> str: ...

    def shutdown(self) -> None: ...


class _Untraced:
    traceparent = ""

    def set_outcome(self, outcome: str) -> None:
        pass


_UNTRACED = _Untraced()
_active: Tracer | None = None


def install(tracer: Tracer | None) -> None:
    """Make `tracer` the one this process uses (None: tracing off)."""
    global _active
    _active = tracer


def active() -> Tracer | None:
    return _active


def server_span(method: str, metadata: Metadata) -> AbstractContextManager[object]:
    """A span for one RPC the coordinator serves, continuing the caller's `traceparent`."""
    return nullcontext() if _active is None else _active.server_span(method, metadata)


@contextmanager
def job_span(job_id: str, language: str, traceparent: str) -> Iterator[JobSpan]:
    """The worker's span for running one job, a child of its submit when `traceparent` is set."""
    if _active is None:
        yield _UNTRACED
        return
    with _active.job_span(job_id, language, traceparent) as span:
        yield span


def current_traceparent() -> str:
    """The current span's context ("" when tracing is off or there is no span)."""
    return "" if _active is None else _active.current_traceparent()


def _switch(environ: Mapping[str, str]) -> bool:
    value = environ.get(TRACING_VARIABLE, "").strip()
    if value not in ("", "0", "1"):
        raise InvalidArgument(f"{TRACING_VARIABLE}: {value!r} is neither 1 (trace) nor 0 (off)")
    return value == "1"


def _max_bytes(environ: Mapping[str, str]) -> int:
    raw = environ.get(TRACE_FILE_MAX_BYTES_VARIABLE, "").strip()
    if not raw:
        return TRACE_FILE_MAX_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise InvalidArgument(f"{TRACE_FILE_MAX_BYTES_VARIABLE}: {raw!r} is not a positive number of bytes")
    return int(raw)


def setup_from_env(service: str, environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """Install the tracer the environment asks for (`service`: the OpenTelemetry service.name);
    None, with nothing imported, when tracing is off. InvalidArgument (one line) for a bad value, or
    tracing asked for without the `tracing` extra or without an exporter."""
    trace_file = environ.get(TRACE_FILE_VARIABLE, "").strip()
    switched_on = _switch(environ)
    if not switched_on and not trace_file:
        return None
    max_bytes = _max_bytes(environ)
    try:
        from scriptpool.core import otel_tracing
    except ImportError as exc:
        raise InvalidArgument(
            f"tracing is on ({TRACING_VARIABLE}/{TRACE_FILE_VARIABLE}) but OpenTelemetry is not installed "
            f"({exc.name}): pip install 'scriptpool[tracing]'"
        ) from None
    tracer = otel_tracing.tracer_for(service, trace_file, max_bytes, otlp=switched_on)
    install(tracer)
    return tracer


__all__ = [
    "TRACEPARENT",
    "TRACE_FILE_VARIABLE",
    "TRACING_VARIABLE",
    "JobSpan",
    "Tracer",
    "active",
    "current_traceparent",
    "install",
    "job_span",
    "server_span",
    "setup_from_env",
]
