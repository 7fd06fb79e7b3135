"""Fixtures that start real services: a private redis-server, the coordinator's gRPC server on
loopback, and worker processes. Everything started here is stopped here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.die_with_parent import die_with_parent

REPO = Path(__file__).resolve().parent.parent
TEST_QUEUE = "scriptpool-test"

# Property tests draw the same examples on every run (a failure seen once is seen again), and keep
# no example database between runs. HYPOTHESIS_PROFILE=explore draws fresh random examples.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis(die_with_parent=True) as server:  # gone with pytest, even a killed one
        yield server


@pytest.fixture(scope="session")
def redis_client(redis_server: PrivateRedis) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


@dataclass
class Stack:
    redis_url: str
    address: str
    coordinator: RunningCoordinator
    workers: list[subprocess.Popen[bytes]]
    settings: Settings

    def new_api_key(self, principal: str | None = None) -> tuple[str, str]:
        principal = principal or f"t-{uuid.uuid4().hex[:12]}"
        return principal, self.coordinator.auth.create_api_key(principal)


# A test's worker gets SIGTERM when pytest goes away without tearing down (killed, or a timeout that
# exits at once), so no worker outlives the run (`proto/scriptpool/core/die_with_parent.py`).
CLI = (sys.executable, "-m", "scriptpool.coordinator.cli.main")
"""The `scriptpool` command, as the code spawns it."""
WORKER_COMMAND = die_with_parent([*CLI, "worker"])


def start_worker(
    redis_url: str, address: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A worker started outside the repository (in its log's folder), so it imports what an installed
    `scriptpool` provides and nothing else: no top-level `coordinator`/`workers`/`sandbox` folder.
    `extra_env`: variables set on top (another queue, TLS files)."""
    env = {**os.environ, "REDIS_URL": redis_url, "SCRIPTPOOL_COORDINATOR": address, "SCRIPTPOOL_QUEUE": TEST_QUEUE}
    env.update(extra_env or {})
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            WORKER_COMMAND,
            cwd=log_path.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="session")
def stack(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue=TEST_QUEUE, max_wait_seconds=30)
    running = start_coordinator(settings)
    address = f"127.0.0.1:{running.port}"
    logs = tmp_path_factory.mktemp("workers")
    workers = [start_worker(redis_server.url, address, logs / f"worker{i}.log") for i in range(2)]
    try:
        yield Stack(redis_server.url, address, running, workers, settings)
    finally:
        for proc in workers:
            stop_process(proc)
        running.stop(grace=1)


@pytest.fixture
def principal_and_key(stack: Stack) -> tuple[str, str]:
    return stack.new_api_key()


@pytest.fixture
def client(stack: Stack, principal_and_key: tuple[str, str]) -> Iterator[ScriptpoolClient]:
    with ScriptpoolClient(stack.address, principal_and_key[1]) as c:
        yield c


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    assert callable(predicate)
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


__all__ = ["CLI", "REPO", "Stack", "stop_process", "wait_for"]
