"""Start a private, real `redis-server` when no REDIS_URL is given.

The binary comes from PATH (`SCRIPTPOOL_REDIS_SERVER` names another) and must be Redis >= 7.0. The
server listens only on a Unix socket in its own directory (no TCP port), and is stopped with the
process that started it. A persistent one keeps an append-only file, fsynced as `appendfsync` says
(docs/DURABILITY.md); a restart on the same directory loads it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis

from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.core.durability import APPENDFSYNC_CHOICES, DEFAULT_APPENDFSYNC
from scriptpool.core.redis_connect import MIN_REDIS_VERSION, version_tuple
from scriptpool.errors import Unavailable


def find_redis_server() -> str:
    """The `redis-server` binary to start: `$SCRIPTPOOL_REDIS_SERVER`, else the one on PATH; it must
    be Redis >= 7.0 (`Unavailable` naming what was found otherwise)."""
    found = os.environ.get("SCRIPTPOOL_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise Unavailable("no redis-server found: install Redis 7.0 or newer, or set REDIS_URL")
    try:
        answer = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"cannot run {found}: {exc}") from None
    match = re.search(r"v=(\S+)", answer)
    version = match.group(1) if match else "unknown"
    if version_tuple(version) < MIN_REDIS_VERSION:
        needed = ".".join(map(str, MIN_REDIS_VERSION))
        raise Unavailable(f"{found} is Redis {version}; scriptpool needs Redis {needed} or newer (or set REDIS_URL)")
    return found


class PrivateRedis:
    """A redis-server child process on a Unix socket. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        persistent: bool = False,
        die_with_parent: bool = False,
        appendfsync: str = DEFAULT_APPENDFSYNC,
    ) -> None:
        """`persistent`: keep an append-only file, fsynced per `appendfsync` (always, everysec, no).
        `die_with_parent`: the server gets SIGTERM when the thread that starts it ends
        (`proto/scriptpool/core/die_with_parent.py`); for a benchmark's or a test's own server."""
        if appendfsync not in APPENDFSYNC_CHOICES:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC_CHOICES} (got {appendfsync!r})")
        self.appendfsync = appendfsync
        self.die_with_parent = die_with_parent
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scriptpool-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.persistent = persistent
        self.socket_path = data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.die_with_parent:
            args = die_with_parent(args)
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, process_group=0)
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise Unavailable(f"redis-server exited at start-up; see {self.data_dir / 'redis.log'}")
            try:
                client = Redis.from_url(self.url)
                client.ping()
                client.close()
                return self
            except Exception:
                time.sleep(0.02)
        self.stop()
        raise Unavailable(f"redis-server did not start within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
