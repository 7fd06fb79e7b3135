"""scriptpool needs Redis >= 7.0: an older server, or an older `redis-server` binary, is refused at
start-up in one line naming both versions (never a failure later, in the first artifact query)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scriptpool.coordinator.cli.main import EXIT_USAGE
from scriptpool.coordinator.redis_server import find_redis_server
from scriptpool.core.redis_connect import connect, version_tuple
from scriptpool.errors import FailedPrecondition, Unavailable
from tests.conftest import CLI


def test_version_tuple_reads_redis_versions() -> None:
    assert version_tuple("7.0.15") == (7, 0, 15)
    assert version_tuple("6.2.14") < (7, 0) <= version_tuple("7.0.0")
    assert version_tuple("garbage") == (0,)


def _serve_old_redis(server: socket.socket) -> None:
    """A narrow stand-in for an old Redis: answers every command +OK, PING +PONG, INFO as 6.2.14."""
    connection, _ = server.accept()
    with connection:
        buffered = b""
        while True:
            data = connection.recv(65536)
            if not data:
                return
            buffered += data
            while b"\r\n" in buffered:
                if not buffered.startswith(b"*"):
                    return
                count = int(buffered[1 : buffered.index(b"\r\n")])
                parts = buffered.split(b"\r\n")
                if len(parts) < 1 + 2 * count + 1:
                    break
                command = parts[2].upper()
                buffered = b"\r\n".join(parts[1 + 2 * count :])
                if command == b"PING":
                    connection.sendall(b"+PONG\r\n")
                elif command == b"INFO":
                    body = b"# Server\r\nredis_version:6.2.14\r\n"
                    connection.sendall(b"$%d\r\n%s\r\n" % (len(body), body))
                else:
                    connection.sendall(b"+OK\r\n")


@pytest.fixture
def old_redis_url() -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    thread = threading.Thread(target=_serve_old_redis, args=(server,), daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        server.close()


def test_an_old_redis_server_is_refused_naming_both_versions(old_redis_url: str) -> None:
    with pytest.raises(FailedPrecondition, match=r"is version 6\.2\.14; scriptpool needs Redis 7\.0 or newer"):
        connect(old_redis_url)


def test_the_coordinator_refuses_an_old_redis_in_one_line(old_redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": old_redis_url, "SCRIPTPOOL_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [*CLI, "coordinator", "--listen", "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.count("\n") == 1 and "needs Redis 7.0 or newer" in result.stderr


def _fake_binary(tmp_path: Path, version: str) -> str:
    path = tmp_path / "redis-server"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_an_old_redis_server_binary_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTPOOL_REDIS_SERVER", _fake_binary(tmp_path, "6.2.14"))
    with pytest.raises(Unavailable, match=r"is Redis 6\.2\.14; scriptpool needs Redis 7\.0 or newer"):
        find_redis_server()


def test_a_new_enough_binary_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_binary(tmp_path, "7.2.4")
    monkeypatch.setenv("SCRIPTPOOL_REDIS_SERVER", binary)
    assert find_redis_server() == binary
