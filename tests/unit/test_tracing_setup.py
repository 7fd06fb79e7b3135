"""Tracing is off unless asked for, and then costs nothing: scriptpool imports nothing of
OpenTelemetry (its tracing SDK is never loaded; redis-py 8 itself imports OpenTelemetry's *metrics*
SDK when it is installed, for its own observability, which stays off). The client loads none of it.
Asked for wrongly, tracing is one line and exit 2."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scriptpool.core import tracing
from scriptpool.errors import InvalidArgument
from tests.conftest import CLI

PROBE = """
import sys
import scriptpool.coordinator.cli.main, scriptpool.coordinator.server, scriptpool.workers.worker
from scriptpool.core import tracing
tracer = tracing.setup_from_env("probe")
loaded = [name for name in ("scriptpool.core.otel_tracing", "opentelemetry.sdk.trace") if name in sys.modules]
print(tracer is not None, loaded)
"""
CLIENT_PROBE = """
import sys
import scriptpool.client
print(sorted(name for name in sys.modules if name.startswith(("opentelemetry", "pythonjsonlogger", "redis"))))
"""


def _probe(code: str = PROBE, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_TRAC")}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_off_by_default_and_opentelemetry_is_not_loaded() -> None:
    assert _probe() == "False []"
    assert _probe(SCRIPTPOOL_TRACING="0") == "False []"


def test_on_with_a_trace_file(tmp_path: Path) -> None:
    assert _probe(SCRIPTPOOL_TRACE_FILE=str(tmp_path / "spans.jsonl")) == (
        "True ['scriptpool.core.otel_tracing', 'opentelemetry.sdk.trace']"
    )


def test_the_client_loads_nothing_of_opentelemetry_or_the_log_formatter() -> None:
    assert _probe(CLIENT_PROBE) == "[]"


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"SCRIPTPOOL_TRACING": "yes"}, "SCRIPTPOOL_TRACING: 'yes'"),
        ({"SCRIPTPOOL_TRACE_FILE": "/x", "SCRIPTPOOL_TRACE_FILE_MAX_BYTES": "-1"}, "SCRIPTPOOL_TRACE_FILE_MAX_BYTES"),
        ({"SCRIPTPOOL_TRACING": "1"}, "no exporter"),  # (no OTLP exporter installed here)
    ],
)
def test_a_bad_setting_is_refused(environ: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        tracing.setup_from_env("test", environ)
    assert tracing.active() is None


def test_a_worker_with_a_bad_tracing_setting_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SCRIPTPOOL_TRACING": "yes", "REDIS_URL": "redis://127.0.0.1:1"}
    result = subprocess.run([*CLI, "worker"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: INVALID_ARGUMENT: SCRIPTPOOL_TRACING: 'yes' is neither 1 (trace) nor 0 (off)"
    ]


def test_the_trace_file_stops_growing_at_its_bound(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from scriptpool.core.otel_tracing import JsonLinesFileExporter

    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesFileExporter(str(path), max_bytes=2000)))
    tracer = provider.get_tracer("test")
    with caplog.at_level(logging.WARNING, logger="scriptpool.core.otel_tracing"):
        for index in range(100):
            with tracer.start_as_current_span(f"span {index}"):
                pass
    provider.shutdown()
    lines = path.read_text().splitlines()
    assert 0 < len(lines) < 100 and path.stat().st_size <= 2000
    assert [json.loads(line)["name"] for line in lines] == [f"span {index}" for index in range(len(lines))]
    assert [r.getMessage() for r in caplog.records] == [f"trace file {path} is full (2000 bytes): dropping spans"]
