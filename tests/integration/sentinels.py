"""A real Sentinel group for tests: a primary, its replicas and three sentinels, each a redis-server
process of the test's own on its own loopback port and directory.

Readiness is a handshake, never a sleep: the replicas report `master_link_status:up`, every sentinel
names the primary (`SENTINEL get-master-addr-by-name`), knows the replicas and the other sentinels,
and `SENTINEL CKQUORUM` says the group can fail over. Failover is quick (`down-after-milliseconds`
1000, `failover-timeout` 3000). `kill_primary` SIGKILLs the current primary; `wait_for_failover`
polls until every sentinel names another node and that node answers ROLE master.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from scriptpool.coordinator.redis_server import find_redis_server
from scriptpool.core.die_with_parent import die_with_parent

HOST = "127.0.0.1"
SERVICE = "mymaster"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _deadline_poll(what: str, check: object, timeout: float, interval: float = 0.05) -> None:
    assert callable(check)
    give_up = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < give_up:
        try:
            if check():
                return
        except (RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f}s (last error: {last})")


class SentinelGroup:
    """Start with `start()` (or as a context manager); `stop()` ends every process it started."""

    def __init__(
        self,
        base_dir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = SERVICE,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        """`password`: the data nodes' `requirepass` (and the replicas' `masterauth`);
        `sentinel_password`: the sentinels' own `requirepass`."""
        self.base_dir = base_dir
        self.password = password
        self.sentinel_password = sentinel_password
        self.service = service
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        """Data nodes (primary and replicas) by port."""
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        self.first_primary = 0

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0{query}"

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SentinelGroup:
        try:
            self.first_primary = self.start_node()
            for _ in range(self.replica_count):
                self.start_node(replica_of=self.first_primary)
            for _ in range(self.sentinel_count):
                self._start_sentinel()
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, replica_of: int | None = None, port: int | None = None) -> int:
        """A data node (a replica of `replica_of`, else a primary); its port once it answers (and,
        for a replica, once its link to the primary is up)."""
        port = port or free_port()
        directory = self.base_dir / f"node-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port", str(port), "--bind", HOST, "--dir", str(directory),
            "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of)]
        self.nodes[port] = subprocess.Popen(die_with_parent(args), stdin=subprocess.DEVNULL, process_group=0)
        if replica_of is None:
            _deadline_poll(f"node {port} answering", lambda: self.ask_node(port, "PING"), 10)
        else:
            _deadline_poll(f"replica {port} linked", lambda: self.replica_linked(port), 20)
        return port

    def replica_linked(self, port: int) -> bool:
        info = self.ask_node(port, "INFO", "replication")
        return isinstance(info, dict) and info.get("master_link_status") == "up"

    def _start_sentinel(self) -> None:
        port = free_port()
        directory = self.base_dir / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind {HOST}\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} {HOST} {self.first_primary} 2\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 3000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        if self.password:
            config.write_text(config.read_text() + f"sentinel auth-pass {self.service} {self.password}\n")
        if self.sentinel_password:
            config.write_text(
                config.read_text() + f"requirepass {self.sentinel_password}\n"
                f"sentinel sentinel-pass {self.sentinel_password}\n"
            )
        args = [find_redis_server(), str(config), "--sentinel"]
        self.sentinels[port] = subprocess.Popen(die_with_parent(args), stdin=subprocess.DEVNULL, process_group=0)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Every sentinel names the primary, knows every replica and every other sentinel, and has
        a quorum that can authorize a failover."""
        for port in self.sentinels:

            def ready(port: int = port) -> bool:
                known = self.ask_sentinel(port, "SENTINEL", "REPLICAS", self.service)
                peers = self.ask_sentinel(port, "SENTINEL", "SENTINELS", self.service)
                quorum = self.ask_sentinel(port, "SENTINEL", "CKQUORUM", self.service)
                return (
                    self.primary_port(port) is not None
                    and len(known) >= self.replica_count
                    and len(peers) >= self.sentinel_count - 1
                    and bool(quorum)
                )

            _deadline_poll(f"sentinel {port} ready", ready, timeout, interval=0.1)

    def primary_port(self, sentinel_port: int | None = None) -> int | None:
        """The primary's port as a sentinel (the first unless named) says it is now."""
        port = sentinel_port or next(iter(self.sentinels))
        answer = self.ask_sentinel(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(answer[1]) if answer else None

    def kill_primary(self) -> int:
        """SIGKILL the current primary; its port."""
        port = self.primary_port()
        assert port is not None
        self.nodes[port].send_signal(signal.SIGKILL)  # (the die_with_parent prelude exec'd redis-server)
        self.nodes[port].wait()
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 60.0) -> int:
        """The new primary's port, once every sentinel names it and it answers ROLE master."""
        found: list[int] = []

        def promoted() -> bool:
            ports = {self.primary_port(port) for port in self.sentinels}
            if len(ports) != 1:
                return False
            (port,) = ports
            if port is None or port == old_port:
                return False
            role = self.ask_node(port, "ROLE")
            found[:] = [port]
            return bool(role[0] == b"master")

        _deadline_poll("failover", promoted, timeout, interval=0.1)
        return found[0]

    def stop_node(self, port: int) -> None:
        proc = self.nodes.pop(port)
        _end(proc)

    def ask_node(self, port: int, *command: str) -> Any:
        return ask(port, *command, password=self.password)

    def ask_sentinel(self, port: int, *command: str) -> Any:
        return ask(port, *command, password=self.sentinel_password)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.nodes.values()]:
            _end(proc)
        self.sentinels.clear()
        self.nodes.clear()


def ask(port: int, *command: str, password: str | None = None) -> Any:
    """One command to the redis-server (or sentinel) on `port`, over a connection of its own."""
    with Redis(
        HOST, port, password=password, socket_timeout=2, socket_connect_timeout=2, single_connection_client=True
    ) as node:
        return node.execute_command(*command)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["HOST", "SERVICE", "SentinelGroup", "ask", "free_port"]
