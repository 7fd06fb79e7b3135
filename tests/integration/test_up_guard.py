"""One stack per state directory and port: a second `up` refuses, a second coordinator on a port in
use refuses, SIGKILL of `up` ends everything it started, and `up --listen X` serves (and checks) X."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scriptpool.coordinator.cli.main import EXIT_IN_USE
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.single_instance import StateDirLock
from tests.conftest import REPO, Stack, wait_for
from tests.integration.up_process import (
    alive,
    children_of,
    cli,
    descendants,
    free_port,
    kind_of,
    processes_of,
    processes_with_marker,
    start_up,
    stop_up,
    up_env,
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


@pytest.mark.slow
def test_second_up_on_a_state_dir_refuses_in_one_line_and_the_first_keeps_serving(
    state_dir: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"  # not the default port: `up` checks and serves --listen
    first = start_up(state_dir, address, tmp_path / "first.log")
    try:
        redis_before = {pid for pid, cmd in children_of(first.pid).items() if "redis-server" in cmd}
        socket_path = state_dir / "redis" / "redis.sock"
        assert len(redis_before) == 1 and socket_path.is_socket()
        inode_before = socket_path.stat().st_ino

        second = cli(["up", "--listen", f"127.0.0.1:{free_port()}"], up_env(state_dir))
        assert second.returncode == EXIT_IN_USE
        assert second.stderr.count("\n") == 1, second.stderr
        assert str(state_dir) in second.stderr and f"pid {first.pid}" in second.stderr

        # The first stack is untouched: same Redis, same socket file, and it still runs jobs.
        assert {pid for pid, cmd in children_of(first.pid).items() if "redis-server" in cmd} == redis_before
        assert socket_path.stat().st_ino == inode_before
        ran = cli(["run", str(REPO / "examples" / "quickstart.lua"), "--coordinator", address], up_env(state_dir))
        assert ran.returncode == 0, ran.stderr
    finally:
        stop_up(first)


@pytest.mark.slow
def test_sigkill_of_up_ends_its_redis_coordinator_and_workers(state_dir: Path, tmp_path: Path) -> None:
    up = start_up(state_dir, f"127.0.0.1:{free_port()}", tmp_path / "up.log", workers=2)
    try:
        children = children_of(up.pid)
        kinds = sorted(kind_of(cmd) for cmd in children.values())
        assert kinds == ["coordinator", "pool", "redis"], children
        assert wait_for(lambda: len(processes_of(up.pid, "worker")) == 2, timeout=60), descendants(up.pid)
        workers = list(processes_of(up.pid, "worker"))
        # Each worker has started its sandbox processes (zygote, spare child: environments emptied,
        # so only the process tree finds them).
        assert wait_for(lambda: all(children_of(pid) for pid in workers), timeout=60)
        started = {*descendants(up.pid), *processes_with_marker(str(state_dir))} - {up.pid}
        assert len(started) > len(children)
    finally:
        up.kill()
        up.wait()
        assert up.stdout is not None
        up.stdout.close()
    assert wait_for(lambda: not any(alive(pid) for pid in started), timeout=60), [
        (pid, Path(f"/proc/{pid}/cmdline").read_bytes()) for pid in started if alive(pid)
    ]
    assert processes_with_marker(str(state_dir)) == []
    StateDirLock(state_dir).acquire().release()  # the kernel dropped the dead `up`'s lock


def test_up_refuses_port_0_in_one_line(tmp_path: Path) -> None:
    result = cli(["up", "--listen", "127.0.0.1:0"], up_env(tmp_path / "state"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "fixed port" in result.stderr and not (tmp_path / "state" / "redis").exists()


def test_a_second_coordinator_on_a_port_in_use_refuses_in_one_line(
    stack: Stack, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    second = cli(["coordinator", "--listen", stack.address], env, timeout=30)
    assert second.returncode == EXIT_IN_USE
    assert second.stderr.count("\n") == 1, second.stderr
    assert "already in use" in second.stderr and stack.address in second.stderr
    wait_until_serving(stack.address, timeout=10)  # the first one keeps serving
