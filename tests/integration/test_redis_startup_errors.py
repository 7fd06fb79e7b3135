"""Every command that talks to Redis fails at start-up in one line naming the URL (without its
password) and the cause, with a documented exit code, when Redis is down or the URL is malformed."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from scriptpool.coordinator.cli.main import EXIT_UNAVAILABLE, EXIT_USAGE
from scriptpool.core.redis_connect import redacted
from tests.conftest import CLI

PASSWORD = "hunter2"

COMMANDS = {
    "coordinator": ["coordinator", "--listen", "127.0.0.1:0"],
    "worker": ["worker", "--burst", "--coordinator", "127.0.0.1:1"],
    "up": ["up", "--listen", "127.0.0.1:1", "--workers", "1"],  # Redis is checked before anything listens
    "apikey": ["apikey", "create", "someone"],
    "bench": ["bench", "latency", "--redis-url", "{url}"],  # bench reads only its flag
}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


def _run(command: list[str], redis_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCRIPTPOOL_COORDINATOR", "SCRIPTPOOL_LISTEN")}
    env.update({"REDIS_URL": redis_url, "SCRIPTPOOL_STATE_DIR": str(tmp_path / "state")})
    return subprocess.run(
        [*CLI, *(arg.format(url=redis_url) for arg in command)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_redis_unreachable_at_start_up_is_one_line_and_exit_code_3(name: str, tmp_path: Path) -> None:
    port = _closed_port()
    result = _run(COMMANDS[name], f"redis://user:{PASSWORD}@127.0.0.1:{port}/0", tmp_path)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: UNAVAILABLE: cannot reach Redis at 'redis://user:***@127.0.0.1:")
    assert str(port) in line and "Connection refused" in line and PASSWORD not in line


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:notaport/0", "Port could not be cast"),
        ("http://127.0.0.1:6379", "must specify one of the following schemes"),
    ],
)
def test_malformed_redis_url_is_one_line_and_exit_code_2(name: str, url: str, cause: str, tmp_path: Path) -> None:
    result = _run(COMMANDS[name], url, tmp_path)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"error: INVALID_ARGUMENT: bad Redis URL {redacted(url)!r}: ") and cause in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:1/2", "redis://:***@host:1/2"),
        ("rediss://user:p:w@host", "rediss://user:***@host"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://user@host", "redis://user@host"),
    ],
)
def test_redacted_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
