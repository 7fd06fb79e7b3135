"""A private stack for benchmarks: redis-server, a coordinator process and N worker processes,
plus plain-RQ worker processes for the baselines, and optionally network-namespace "hosts" whose
workers reach Redis and the coordinator over TCP (`coordinator/bench/netns_hosts.py`). Everything is
stopped (and every namespace removed) on exit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.bench.netns_hosts import NamespacesUnavailable, NetnsHost, make_hosts, remove_hosts
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.core import redis_connect
from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.errors import Unavailable

BENCH_QUEUE = "scriptpool-bench"
BASELINE_QUEUE = "rq-baseline"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class BenchStack:
    def __init__(self, redis_url: str = "", coordinator: str = "", *, hosts: int = 0) -> None:
        """`hosts`: network-namespace hosts to make (only with the stack's own Redis and coordinator)."""
        self._want_hosts = hosts
        self.hosts: list[NetnsHost] = []
        self.host_workers: list[subprocess.Popen[bytes]] = []
        self.hosts_unavailable = ""
        """Why there are no namespace hosts when some were asked for ("" otherwise)."""
        self._redis_port = 0
        self._coordinator_port = 0
        self._redis: PrivateRedis | None = None
        self.redis_url = redis_url
        self.address = coordinator
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.baseline_workers: list[subprocess.Popen[bytes]] = []
        self.api_key = ""
        self.env: dict[str, str] = {}
        self.local_address = ""
        """The coordinator's Unix socket, which workers on this host dial ("" with --coordinator)."""
        self._socket_dir = ""

    @property
    def redis_pid(self) -> int:
        """The private redis-server's pid (0 with --redis-url)."""
        return self._redis.process.pid if self._redis is not None and self._redis.process is not None else 0

    def start(self) -> BenchStack:
        try:
            return self._start()
        except BaseException:
            remove_hosts(self.hosts)  # the rest ends with this process (`die_with_parent`)
            self.hosts = []
            raise

    def _start(self) -> BenchStack:
        if not self.redis_url:
            self._redis = PrivateRedis(die_with_parent=True).start()
            self.redis_url = self._redis.url
        self.redis = redis_connect.connect(self.redis_url, protocol=None)  # one line if bad or down
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "SCRIPTPOOL_QUEUE": BENCH_QUEUE}
        if self._want_hosts:
            self._make_hosts()
        if not self.address:
            self._coordinator_port = _free_port()
            self.address = f"127.0.0.1:{self._coordinator_port}"
            self._socket_dir = tempfile.mkdtemp(prefix="scriptpool-bench-")
            self.local_address = f"unix:{self._socket_dir}/coordinator.sock"
            listen = ",".join([self.address, *(f"{h.gateway}:{self._coordinator_port}" for h in self.hosts)])
            listen += f",{self.local_address}"
            self.env.update({"SCRIPTPOOL_LISTEN": listen, "SCRIPTPOOL_COORDINATOR": self.address})
            self.coordinator = self._spawn([sys.executable, "-m", "scriptpool.coordinator.cli.main", "coordinator"])
        self.env["SCRIPTPOOL_COORDINATOR"] = self.address
        wait_until_serving(self.address)
        if self.local_address:
            self.env["SCRIPTPOOL_COORDINATOR"] = self.local_address  # workers on this host use the socket
        self.api_key = Authenticator(self.redis).create_api_key("bench")
        return self

    def _make_hosts(self) -> None:
        """Namespace hosts, and a TCP port on the private Redis bound to their host-side addresses."""
        if self._redis is None or self.address:
            self.hosts_unavailable = "namespace hosts need the benchmark's own Redis and coordinator"
            return
        try:
            self.hosts = make_hosts(self._want_hosts)
        except NamespacesUnavailable as exc:
            self.hosts_unavailable = exc.message
            return
        self._redis_port = _free_port()
        self.redis.config_set("bind", " ".join(host.gateway for host in self.hosts))
        # Only the namespace hosts' links carry this port; Redis's protected mode would refuse
        # them (no password on the benchmark's throwaway Redis).
        self.redis.config_set("protected-mode", "no")
        self.redis.config_set("port", self._redis_port)

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Started from the main thread: the process ends with this one (`die_with_parent`)."""
        quiet = subprocess.DEVNULL
        return subprocess.Popen(
            die_with_parent(args), env=env or self.env, stdin=quiet, stdout=quiet, stderr=quiet, process_group=0
        )

    def start_host_workers(self) -> None:
        """One scriptpool worker on each namespace host (none on this host), over TCP."""
        self.scale_workers(0)
        for host in self.hosts:
            env = {
                **self.env,
                "REDIS_URL": f"redis://{host.gateway}:{self._redis_port}/0",
                "SCRIPTPOOL_COORDINATOR": f"{host.gateway}:{self._coordinator_port}",
            }
            command = host.command([sys.executable, "-m", "scriptpool.coordinator.cli.main", "worker"])
            self.host_workers.append(self._spawn(command, env))
        self._wait_registered(BENCH_QUEUE, len(self.hosts))
        time.sleep(0.3)  # let each worker fork its spare sandbox child

    def stop_host_workers(self) -> None:
        for proc in self.host_workers:
            _stop(proc)
        self.host_workers = []

    def _wait_registered(self, queue: str, count: int) -> None:
        from rq import Worker

        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            if len([w for w in Worker.all(connection=self.redis) if queue in w.queue_names()]) >= count:
                return
            time.sleep(0.05)
        raise Unavailable(f"{count} workers did not register on {queue}")

    def scale_workers(self, count: int) -> None:
        """Run exactly `count` scriptpool workers."""
        while len(self.workers) > count:
            _stop(self.workers.pop())
        while len(self.workers) < count:
            self.workers.append(self._spawn([sys.executable, "-m", "scriptpool.coordinator.cli.main", "worker"]))
        self._wait_registered(BENCH_QUEUE, count)
        time.sleep(0.3)  # let each worker fork its spare sandbox child

    def start_baseline(self, count: int, worker_class: str) -> None:
        self.stop_baseline()
        for _ in range(count):
            self.baseline_workers.append(
                self._spawn(
                    [
                        sys.executable,
                        "-m",
                        "rq.cli",
                        "worker",
                        "--url",
                        self.redis_url,
                        "--worker-class",
                        worker_class,
                        "--quiet",
                        BASELINE_QUEUE,
                    ]
                )  # fmt: skip
            )
        self._wait_registered(BASELINE_QUEUE, count)

    def stop_baseline(self) -> None:
        for proc in self.baseline_workers:
            _stop(proc)
        self.baseline_workers = []
        time.sleep(0.1)

    def stop(self) -> None:
        self.stop_baseline()
        self.stop_host_workers()
        for proc in self.workers:
            _stop(proc)
        self.workers = []
        if self.coordinator is not None:
            _stop(self.coordinator)
        self.redis.close()
        if self._redis is not None:
            self._redis.stop()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        remove_hosts(self.hosts)
        self.hosts = []

    def __enter__(self) -> BenchStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
