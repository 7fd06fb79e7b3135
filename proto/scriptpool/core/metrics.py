"""One process's Prometheus endpoint: where it listens (`[host:]port`) and the HTTP server itself.

Every scriptpool process that serves metrics serves its own `/metrics` (the coordinator, and each
worker process on a port of its own): no prometheus multiprocess directory to share or clean up
(docs/adr/0013-metrics.md). The coordinator and the workers define their metrics next to their
code (`scriptpool.coordinator.metrics`, `scriptpool.workers.metrics`); this module holds what both use.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from scriptpool.errors import AlreadyExists, InvalidArgument

METRICS_VARIABLE = "SCRIPTPOOL_METRICS"
"""`[host:]port` this process serves /metrics on (`off`: none); `--metrics-port` wins over it."""
WORKER_INDEX_VARIABLE = "SCRIPTPOOL_WORKER_INDEX"
"""A worker process's index in its pool (0, 1, ...): it serves on the metrics port plus its index."""
DEFAULT_METRICS_HOST = "127.0.0.1"
"""The host a bare port binds: loopback, so metrics are never exposed unless the operator says so."""
OFF = "off"


class MetricsPortInUse(AlreadyExists):
    """Another process already listens on the metrics address."""


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    host: str
    """The address the HTTP server binds (`0.0.0.0` for every interface)."""
    port: int
    """TCP port, 1-65535."""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def offset(self, index: int, source: str = WORKER_INDEX_VARIABLE) -> MetricsAddress:
        """The address of the pool's worker process `index` (its port is this port plus `index`)."""
        port = self.port + index
        if port > 65535:
            raise InvalidArgument(f"{source}: metrics port {self.port} + index {index} is past 65535")
        return MetricsAddress(self.host, port)


def parse_metrics_address(text: str, source: str = "--metrics-port") -> MetricsAddress | None:
    """`port`, `host:port` or `[v6-host]:port`; `off` is None. Anything else: one InvalidArgument
    line naming `source` (the flag or the variable it came from)."""
    raw = text.strip()
    if raw.lower() == OFF:
        return None
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host = DEFAULT_METRICS_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: its port is ambiguous
    port = int(port_text) if port_text.isdigit() else 0
    if not host or not 1 <= port <= 65535 or any(c.isspace() or c in "/[]" for c in host):
        raise InvalidArgument(
            f"{source}: {text!r} is not a metrics address: use PORT, HOST:PORT or [IPV6]:PORT (port 1-65535) or 'off'"
        )
    return MetricsAddress(host, port)


def worker_index(env: Mapping[str, str]) -> int | None:
    """The pool index in `SCRIPTPOOL_WORKER_INDEX` (None when it is not set)."""
    raw = env.get(WORKER_INDEX_VARIABLE, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidArgument(f"{WORKER_INDEX_VARIABLE} must be a whole number of 0 or more (got {raw!r})")
    return int(raw)


def metrics_address(
    flag: str | None,
    env: Mapping[str, str],
    *,
    default: MetricsAddress | None = None,
    pool_index: bool = False,
) -> MetricsAddress | None:
    """Where this process serves metrics: the flag, else `SCRIPTPOOL_METRICS`, else `default`
    (None: no endpoint). With `pool_index` (a worker process), a set `SCRIPTPOOL_WORKER_INDEX` moves
    the port up by the index, so every process of a pool has its own."""
    if flag is not None:
        address = parse_metrics_address(flag, "--metrics-port")
    elif env.get(METRICS_VARIABLE, "").strip():
        address = parse_metrics_address(env[METRICS_VARIABLE], METRICS_VARIABLE)
    else:
        address = default
    index = worker_index(env) if pool_index else None
    return address.offset(index) if address is not None and index else address


class Combined:
    """One scrape of several collectors (a module's registry and collectors made per server)."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry that serves what `collectors` collect, registered without describing them (a
    collector that reads Redis is not called until a scrape)."""
    registry = CollectorRegistry()
    registry.register(Combined(*collectors))
    return registry


def refuse_taken(address: MetricsAddress) -> None:
    """Raise `MetricsPortInUse` when something listens on `address` already (`up` checks its
    processes' ports before starting them, for one clear error instead of a child that exits)."""
    try:
        with socket.create_server((address.host, address.port), family=_family(address.host)):
            pass
    except OSError as exc:
        raise _bind_error(address, exc) from None


def _bind_error(address: MetricsAddress, exc: OSError) -> InvalidArgument | MetricsPortInUse:
    if exc.errno == errno.EADDRINUSE:
        return MetricsPortInUse(
            f"cannot serve metrics on {address}: the port is already in use (another scriptpool process? "
            f"choose another with --metrics-port or {METRICS_VARIABLE}, or 'off')"
        )
    return InvalidArgument(f"cannot serve metrics on {address}: {exc.strerror or exc}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_SERVING: list[WSGIServer] = []
"""This process's metrics servers: a forked child closes their listening sockets (`_after_fork`)."""


def _after_fork() -> None:
    # A child forked from a serving process (a sandbox spare, say) must not keep the port open:
    # it never answers, and a restarted process could not bind while the child lives.
    for server in _SERVING:
        server.socket.close()
    _SERVING.clear()


os.register_at_fork(after_in_child=_after_fork)


@dataclass
class MetricsServer:
    address: MetricsAddress
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        if self.server in _SERVING:
            _SERVING.remove(self.server)
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(address: MetricsAddress, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on http://address/metrics from a daemon thread. A taken port is
    `MetricsPortInUse`; an address this host cannot bind, `InvalidArgument`."""
    try:
        server, thread = start_http_server(address.port, address.host, registry)
    except OSError as exc:
        raise _bind_error(address, exc) from None
    _SERVING.append(server)
    return MetricsServer(address, server, thread)


__all__ = [
    "METRICS_VARIABLE",
    "WORKER_INDEX_VARIABLE",
    "MetricsAddress",
    "MetricsPortInUse",
    "MetricsServer",
    "metrics_address",
    "parse_metrics_address",
    "refuse_taken",
    "scrape_registry",
    "serve_metrics",
    "worker_index",
]
