"""Where a process serves its metrics (`--metrics-port`, SCRIPTPOOL_METRICS, SCRIPTPOOL_WORKER_INDEX),
and the endpoint itself: served, refused when the port is taken, closed in a forked child."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from scriptpool.coordinator.embedded import UP_METRICS
from scriptpool.core.metrics import (
    MetricsAddress,
    MetricsPortInUse,
    metrics_address,
    parse_metrics_address,
    refuse_taken,
    serve_metrics,
)
from scriptpool.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9464", MetricsAddress("127.0.0.1", 9464)),
        (" 9464 ", MetricsAddress("127.0.0.1", 9464)),
        ("0.0.0.0:9000", MetricsAddress("0.0.0.0", 9000)),
        ("localhost:1", MetricsAddress("localhost", 1)),
        ("[::1]:65535", MetricsAddress("::1", 65535)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_metrics_addresses_that_parse(text: str, expected: MetricsAddress | None) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "0", "65536", "-1", "host:", ":80", "::1:80", "a b:80", "1.2.3.4:80x", "[::1]80", "on"]
)
def test_bad_metrics_addresses_are_one_clear_error(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^SCRIPTPOOL_METRICS: .* is not a metrics address: use PORT"):
        parse_metrics_address(text, "SCRIPTPOOL_METRICS")


def test_an_address_prints_as_it_is_written() -> None:
    assert str(MetricsAddress("::1", 80)) == "[::1]:80"
    assert str(MetricsAddress("0.0.0.0", 80)) == "0.0.0.0:80"


def test_the_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"SCRIPTPOOL_METRICS": "127.0.0.1:7000"}
    assert metrics_address("8000", env, default=UP_METRICS) == MetricsAddress("127.0.0.1", 8000)
    assert metrics_address(None, env, default=UP_METRICS) == MetricsAddress("127.0.0.1", 7000)
    assert metrics_address(None, {}, default=UP_METRICS) == MetricsAddress("127.0.0.1", 9464)
    assert metrics_address(None, {}) is None  # coordinator and worker: off unless asked
    assert metrics_address(None, {"SCRIPTPOOL_METRICS": "off"}, default=UP_METRICS) is None
    assert metrics_address("off", env, default=UP_METRICS) is None


def test_a_worker_process_serves_on_the_port_plus_its_pool_index() -> None:
    env = {"SCRIPTPOOL_METRICS": "0.0.0.0:9465", "SCRIPTPOOL_WORKER_INDEX": "3"}
    assert metrics_address(None, env, pool_index=True) == MetricsAddress("0.0.0.0", 9468)
    assert metrics_address("9000", env, pool_index=True) == MetricsAddress("127.0.0.1", 9003)
    assert metrics_address(None, env) == MetricsAddress("0.0.0.0", 9465)  # the coordinator has no index
    assert metrics_address(None, {"SCRIPTPOOL_WORKER_INDEX": "3"}, pool_index=True) is None
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_WORKER_INDEX must be a whole number"):
        metrics_address(None, {**env, "SCRIPTPOOL_WORKER_INDEX": "-1"}, pool_index=True)
    with pytest.raises(InvalidArgument, match="past 65535"):
        metrics_address("65535", env, pool_index=True)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_the_endpoint_serves_its_registry_and_a_taken_port_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("scriptpool_test_things", "Things.", registry=registry).inc(3)
    with _listener() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortInUse, match=f"127.0.0.1:{port}: the port is already in use"):
            serve_metrics(MetricsAddress("127.0.0.1", port), registry)
        with pytest.raises(MetricsPortInUse):
            refuse_taken(MetricsAddress("127.0.0.1", port))
    server = serve_metrics(MetricsAddress("127.0.0.1", port), registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert "scriptpool_test_things_total 3.0" in response.read().decode()
    finally:
        server.close()
    refuse_taken(MetricsAddress("127.0.0.1", port))  # closed: the port is free again


def test_a_forked_child_does_not_keep_the_metrics_port_open() -> None:
    with _listener() as probe:
        port = probe.getsockname()[1]
    server = serve_metrics(MetricsAddress("127.0.0.1", port), CollectorRegistry())
    try:
        pid = os.fork()
        if pid == 0:  # the child: its copy of the listening socket is closed at fork
            os._exit(0 if server.server.socket.fileno() == -1 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.server.socket.fileno() != -1  # the parent still serves
    finally:
        server.close()


def test_an_address_this_host_cannot_bind_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="cannot serve metrics on 192.0.2.1:9"):
        serve_metrics(MetricsAddress("192.0.2.1", 9), CollectorRegistry())
