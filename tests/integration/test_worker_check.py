"""`scriptpool worker --check` is a probe a person or Kubernetes can act on: one line per check, exit 0
when all pass and 3 when one fails (issue 17)."""

from __future__ import annotations

import os
import socket
import subprocess

from scriptpool.coordinator.cli.main import EXIT_OK, EXIT_UNAVAILABLE
from tests.conftest import CLI, TEST_QUEUE, Stack, wait_for


def _check(redis_url: str, coordinator: str, queue: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "SCRIPTPOOL_COORDINATOR": coordinator, "SCRIPTPOOL_QUEUE": queue}
    return subprocess.run([*CLI, "worker", "--check", *flags], env=env, capture_output=True, text=True, timeout=60)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_healthy_worker_host_passes_every_check(stack: Stack) -> None:
    # the session's two workers may still be starting (a loaded host): wait until both registered
    assert wait_for(lambda: "2 registered" in _check(stack.redis_url, stack.address, TEST_QUEUE).stdout, timeout=60)
    result = _check(stack.redis_url, stack.address, TEST_QUEUE)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ok redis", "ok coordinator", "ok worker"]
    assert "SERVING" in lines[1] and "2 registered" in lines[2]


def test_an_unreachable_coordinator_fails_the_probe(stack: Stack) -> None:
    result = _check(stack.redis_url, f"127.0.0.1:{_closed_port()}", TEST_QUEUE)
    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stdout.splitlines()[1].startswith("FAIL coordinator: 127.0.0.1:") and "UNAVAILABLE" in result.stdout


def test_no_registered_worker_fails_unless_left_out(stack: Stack) -> None:
    result = _check(stack.redis_url, stack.address, "a-queue-nobody-works")
    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stdout.splitlines()[2].startswith("FAIL worker: no worker of host")
    assert _check(stack.redis_url, stack.address, "a-queue-nobody-works", "--no-worker").returncode == EXIT_OK


def test_unreachable_redis_fails_the_probe(stack: Stack) -> None:
    result = _check(f"redis://127.0.0.1:{_closed_port()}/0", stack.address, TEST_QUEUE, "--no-worker")
    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stdout.splitlines()[0].startswith("FAIL redis: cannot reach Redis")
