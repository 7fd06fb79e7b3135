"""`scriptpool up`: everything on one machine, in the foreground.

A private redis-server (unless REDIS_URL is set), the coordinator and a worker pool of N workers
(`scriptpool worker --processes N`, `workers/pool.py`), each a child process in its own process
group (so a terminal's Ctrl-C reaches only this supervisor, which then stops the children in
order). Stop: SIGTERM to the pool (its workers finish their job within `POOL_GRACE_SECONDS`, then
the pool kills them), then the coordinator, then Redis; anything still alive after the grace period
is killed. A child that dies unexpectedly (the pool, the coordinator, the private Redis) is logged
and started again, after a pause that doubles while it keeps dying young
(`proto/scriptpool/core/restarts.py`); the pool does the same for a worker. The private Redis comes
back from its append-only file, and the others reconnect to it as they do after any outage.

One stack per state directory: the stack holds `StateDirLock` (an `flock` on STATE_DIR/up.lock)
from before it starts anything until it has stopped everything, and a second `up` refuses. Every
child is started through `die_with_parent` (from the main thread), so SIGKILL of `up` still ends
its Redis, coordinator and workers (they get SIGTERM and stop as they would on Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import listen_addresses
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.single_instance import StateDirLock, refuse_address_in_use
from scriptpool.coordinator.stores.api_keys import ALL_SCOPES, digest_of
from scriptpool.core import redis_connect
from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.core.durability import ACK_AFTER_FSYNC_VARIABLE
from scriptpool.core.metrics import METRICS_VARIABLE, OFF, MetricsAddress, refuse_taken
from scriptpool.core.restarts import Restarts
from scriptpool.errors import InvalidArgument, Unavailable
from scriptpool.tls import ClientTls, open_channel

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0
POOL_GRACE_SECONDS = STOP_GRACE_SECONDS - 2.0
"""The pool's own grace for its workers' jobs: it kills them itself before `up` would kill it (a
pool killed by `up` could not kill its workers, which would drain on their own after `up` exits)."""
UP_METRICS = MetricsAddress("127.0.0.1", 9464)
"""`up` serves metrics by default: the coordinator here, worker process N on this port + 1 + N."""


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        die_with_parent([sys.executable, "-m", "scriptpool.coordinator.cli.main", *args]),
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )


def wait_until_serving(
    address: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None, tls: ClientTls | None = None
) -> None:
    """Return once the coordinator at `address` answers SERVING (dialled with `tls`, if given). With
    `process` (the coordinator just started), fail as soon as it exits: the answer could otherwise
    come from another one."""
    give_up = time.monotonic() + timeout
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < give_up:
            if process is not None and process.poll() is not None:
                raise Unavailable(f"the coordinator exited at start-up (code {process.returncode})")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise Unavailable(f"the coordinator did not become healthy at {address} within {timeout:.0f}s")


def dial_address(listen: str) -> str:
    """Where a client on this host reaches a coordinator listening on `listen` (its first address;
    a wildcard host is dialled on loopback)."""
    address = listen_addresses(listen)[0]
    for wildcard, loopback in (("0.0.0.0:", "127.0.0.1:"), ("[::]:", "[::1]:")):
        if address.startswith(wildcard):
            return loopback + address.removeprefix(wildcard)
    return address


UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin


def local_socket_address(state_dir: Path) -> str:
    """The coordinator's Unix socket for workers on this host: cheaper than TCP loopback. In
    state_dir when its path is short enough for a socket, else in a private temporary directory."""
    path = state_dir / "coordinator.sock"
    if len(str(path)) > UNIX_PATH_MAX:
        path = Path(tempfile.mkdtemp(prefix="scriptpool-")) / "coordinator.sock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # left by a coordinator that was killed
    return f"unix:{path}"


@dataclass
class EmbeddedStack:
    settings: Settings
    workers: int = 2
    redis: PrivateRedis | None = None
    coordinator: subprocess.Popen[bytes] | None = None
    pool: subprocess.Popen[bytes] | None = None
    """`scriptpool worker --processes N`: the workers' supervisor."""
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)
    address: str = ""
    """Where this host's clients reach the coordinator: the first `--listen` address."""
    lock: StateDirLock | None = None
    local_socket: str = ""
    """The coordinator's Unix socket for the workers on this host."""
    restarts: dict[str, Restarts] = field(default_factory=dict)
    """Each child's restart schedule, by name: "redis", "coordinator", "worker pool"."""

    def start(self) -> EmbeddedStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.lock = StateDirLock(self.settings.state_dir).acquire()
        for address in listen_addresses(self.settings.listen):
            refuse_address_in_use(address)
        self.address = dial_address(self.settings.listen)
        if self.address.endswith(":0"):
            raise InvalidArgument(f"`up` needs a fixed port to check and to tell clients: --listen {self.address}")
        redis_url = self.settings.redis_url
        if not redis_url:
            redis_dir = self.settings.state_dir / "redis"
            self.redis = PrivateRedis(
                redis_dir, persistent=True, die_with_parent=True, appendfsync=self.settings.private_redis_appendfsync
            ).start()
            redis_url = self.redis.url
        self.local_socket = local_socket_address(self.settings.state_dir)
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "SCRIPTPOOL_LISTEN": f"{self.settings.listen},{self.local_socket}",
            "SCRIPTPOOL_COORDINATOR": self.address,
            "SCRIPTPOOL_QUEUE": self.settings.queue,
            ACK_AFTER_FSYNC_VARIABLE: "1" if self.settings.ack_after_fsync else "0",
            **self.settings.tls_variables(),
        }
        self.api_key = self._ensure_api_key(redis_url)
        self.env.update(self._metrics_env())  # (after Redis: its errors are the ones to report first)
        self.coordinator = _spawn(["coordinator"], self._coordinator_env())
        # With TLS (SCRIPTPOOL_TLS_CERT/KEY, `up --tls-cert`) the TCP address needs a CA to dial: ask the
        # plaintext Unix socket this host's workers use instead.
        wait_until_serving(self.local_socket if self.settings.tls_cert else self.address, process=self.coordinator)
        self.env["SCRIPTPOOL_COORDINATOR"] = self.local_socket  # the workers on this host dial the Unix socket
        self._start_pool()
        now = time.monotonic()
        self.restarts = {name: Restarts(started_at=now) for name in ("redis", "coordinator", "worker pool")}

    def _ensure_api_key(self, redis_url: str) -> str:
        """The local principal's key, kept in state_dir/api-key (mode 0600) for the CLI to find: an
        admin key (scopes submit, read, admin), so `scriptpool keys ...` works against `up` at once."""
        path = self.settings.api_key_file
        redis = redis_connect.connect(redis_url)
        try:
            auth = Authenticator(redis)
            if path.exists():
                key = path.read_text().strip()
                try:
                    caller = auth.authenticate([("authorization", f"Bearer {key}")])
                except Exception:
                    pass
                else:
                    if caller.scopes != ALL_SCOPES:  # (a key of an earlier version: it becomes an admin key)
                        auth.keys.set_scopes(digest_of(key), ALL_SCOPES)
                    return key
            key = auth.create_api_key("local", name="up", scopes=ALL_SCOPES)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            return key
        finally:
            redis.close()

    def supervise(self, stop: threading.Event) -> int:
        """Watch the children until `stop` is set, starting again any that died. Returns the exit
        code for `scriptpool up`."""
        while not stop.wait(0.5):
            self.restart_dead(time.monotonic())
        return 0

    def restart_dead(self, now: float) -> None:
        """One look at every child: note the ones that died and start those whose pause is over."""
        if self.redis is not None and self.redis.process is not None:
            self._restart_if_dead("redis", self.redis.process, self._start_redis, now)
        if self.coordinator is not None:
            self._restart_if_dead("coordinator", self.coordinator, self._start_coordinator, now)
        if self.pool is not None:
            self._restart_if_dead("worker pool", self.pool, self._start_pool, now)

    def _restart_if_dead(self, name: str, proc: subprocess.Popen[bytes], start: Callable[[], None], now: float) -> None:
        if proc.poll() is None:
            return
        restarts = self.restarts[name]
        if not restarts.waiting:
            pause = restarts.died(now)
            log.error(
                "%s (pid %d) exited (code %s); starting it again in %.1fs", name, proc.pid, proc.returncode, pause
            )
        if not restarts.due(now):
            return
        restarts.started(now)
        try:
            start()
        except Unavailable as exc:
            log.error("%s did not start again: %s", name, exc)
            restarts.died(now)

    def _start_redis(self) -> None:
        assert self.redis is not None
        self.redis.start()  # the same directory and socket: it loads its append-only file

    def _start_coordinator(self) -> None:
        self.local_socket_path().unlink(missing_ok=True)  # left by the coordinator that died
        self.coordinator = _spawn(["coordinator"], {**self._coordinator_env(), "SCRIPTPOOL_COORDINATOR": self.address})

    def _start_pool(self) -> None:
        grace = f"{POOL_GRACE_SECONDS:g}"
        self.pool = _spawn(["worker", "--processes", str(self.workers), "--grace", grace], self.env)

    def _metrics_env(self) -> dict[str, str]:
        """The workers' metrics (their first port: each worker process adds its index), checked free."""
        metrics = self.settings.metrics
        if metrics is None:
            return {METRICS_VARIABLE: OFF}
        for index in range(self.workers + 1):
            refuse_taken(metrics.offset(index, "--metrics-port"))
        return {METRICS_VARIABLE: str(metrics.offset(1, "--metrics-port"))}

    def _coordinator_env(self) -> dict[str, str]:
        metrics = self.settings.metrics
        return {**self.env, METRICS_VARIABLE: str(metrics) if metrics is not None else OFF}

    def local_socket_path(self) -> Path:
        return Path(self.local_socket.removeprefix("unix:"))

    def stop(self) -> None:
        if self.pool is not None:
            _terminate([self.pool])
            self.pool = None
        if self.coordinator is not None:
            _terminate([self.coordinator])
            self.coordinator = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0fs; killing it", proc.pid, STOP_GRACE_SECONDS)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_up(settings: Settings, workers: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = EmbeddedStack(settings, workers=workers).start()
    try:
        print(
            f"scriptpool is up: coordinator {stack.address}, {workers} workers, "
            f"redis {stack.env['REDIS_URL']}. API key in {settings.api_key_file}. Ctrl-C stops it.",
            flush=True,
        )
        return stack.supervise(stop)
    finally:
        stack.stop()
