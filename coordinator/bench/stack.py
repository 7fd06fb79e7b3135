"""A private stack for benchmarks: redis-server, a coordinator process and N worker processes,
plus plain-RQ worker processes for the baselines. Everything is stopped on exit."""

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
    def __init__(self, redis_url: str = "", coordinator: str = "") -> None:
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
        if not self.redis_url:
            self._redis = PrivateRedis(die_with_parent=True).start()
            self.redis_url = self._redis.url
        self.redis = redis_connect.connect(self.redis_url, protocol=None)  # one line if bad or down
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "SCRIPTPOOL_QUEUE": BENCH_QUEUE}
        if not self.address:
            self.address = f"127.0.0.1:{_free_port()}"
            self._socket_dir = tempfile.mkdtemp(prefix="scriptpool-bench-")
            self.local_address = f"unix:{self._socket_dir}/coordinator.sock"
            listen = f"{self.address},{self.local_address}"
            self.env.update({"SCRIPTPOOL_LISTEN": listen, "SCRIPTPOOL_COORDINATOR": self.address})
            self.coordinator = self._spawn([sys.executable, "-m", "scriptpool.coordinator.cli.main", "coordinator"])
        self.env["SCRIPTPOOL_COORDINATOR"] = self.address
        wait_until_serving(self.address)
        if self.local_address:
            self.env["SCRIPTPOOL_COORDINATOR"] = self.local_address  # workers on this host use the socket
        self.api_key = Authenticator(self.redis).create_api_key("bench")
        return self

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        """Started from the main thread: the process ends with this one (`die_with_parent`)."""
        quiet = subprocess.DEVNULL
        return subprocess.Popen(
            die_with_parent(args), env=self.env, stdin=quiet, stdout=quiet, stderr=quiet, process_group=0
        )

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
