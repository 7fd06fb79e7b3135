"""One stack per state directory and port: a second `up` refuses, a second coordinator on a port in
use refuses, SIGKILL of `up` ends everything it started, and `up --listen X` serves (and checks) X."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from coordinator.cli.main import EXIT_IN_USE
from coordinator.embedded import wait_until_serving
from coordinator.redis_server import PrivateRedis
from coordinator.single_instance import StateDirLock
from tests.conftest import REPO, Stack, stop_process, wait_for

READY_LINE = "scriptpool is up"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(state_dir: Path) -> dict[str, str]:
    """No REDIS_URL (a private redis-server), no SCRIPTPOOL_COORDINATOR/LISTEN: `--listen` alone says
    where the coordinator is."""
    drop = ("REDIS_URL", "SCRIPTPOOL_API_KEY", "SCRIPTPOOL_COORDINATOR", "SCRIPTPOOL_LISTEN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["SCRIPTPOOL_STATE_DIR"] = str(state_dir)
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _start_up(
    state_dir: Path, address: str, log: Path, workers: int = 1, extra: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """`scriptpool up --listen address [extra...]`, returned once it printed its ready line."""
    with open(log, "ab") as stderr:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coordinator.cli.main",
                "up",
                "--listen",
                address,
                "--workers",
                str(workers),
                *extra,
            ],  # fmt: skip
            env=_env(state_dir),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            process_group=0,
        )
    assert up.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(up.stdout, selectors.EVENT_READ)
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            if selector.select(timeout=1) and READY_LINE in up.stdout.readline():
                return up
            if up.poll() is not None:
                break
    stop_process(up)  # type: ignore[arg-type]
    up.stdout.close()
    raise AssertionError(f"`up` did not report ready: {log.read_text()}")


def _stop_up(up: subprocess.Popen[str]) -> None:
    """SIGTERM, as Ctrl-C would: `up` stops everything and exits 0."""
    up.send_signal(signal.SIGTERM)
    try:
        assert up.wait(timeout=60) == 0
    finally:
        stop_process(up)  # type: ignore[arg-type]
        assert up.stdout is not None
        up.stdout.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _processes_with_marker(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (marker.encode() in environ or marker.encode() in cmdline) and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_second_up_on_a_state_dir_refuses_in_one_line_and_the_first_keeps_serving(
    state_dir: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{_free_port()}"  # not the default port: `up` checks and serves --listen
    first = _start_up(state_dir, address, tmp_path / "first.log")
    try:
        redis_before = {pid for pid, cmd in _children(first.pid).items() if "redis-server" in cmd}
        socket_path = state_dir / "redis" / "redis.sock"
        assert len(redis_before) == 1 and socket_path.is_socket()
        inode_before = socket_path.stat().st_ino

        second = _cli(["up", "--listen", f"127.0.0.1:{_free_port()}"], _env(state_dir))
        assert second.returncode == EXIT_IN_USE
        assert second.stderr.count("\n") == 1, second.stderr
        assert str(state_dir) in second.stderr and f"pid {first.pid}" in second.stderr

        # The first stack is untouched: same Redis, same socket file, and it still runs jobs.
        assert {pid for pid, cmd in _children(first.pid).items() if "redis-server" in cmd} == redis_before
        assert socket_path.stat().st_ino == inode_before
        ran = _cli(["run", str(REPO / "examples" / "quickstart.lua"), "--coordinator", address], _env(state_dir))
        assert ran.returncode == 0, ran.stderr
    finally:
        _stop_up(first)


@pytest.mark.slow
def test_sigkill_of_up_ends_its_redis_coordinator_and_workers(state_dir: Path, tmp_path: Path) -> None:
    up = _start_up(state_dir, f"127.0.0.1:{_free_port()}", tmp_path / "up.log", workers=2)
    try:
        children = _children(up.pid)
        kinds = sorted("redis" if "redis-server" in cmd else cmd.split()[-1] for cmd in children.values())
        assert kinds == ["coordinator", "redis", "worker", "worker"], children
        workers = [pid for pid, cmd in children.items() if cmd.split()[-1] == "worker"]
        # Each worker has started its sandbox processes (zygote, spare child: environments emptied,
        # so only the process tree finds them).
        assert wait_for(lambda: all(_children(pid) for pid in workers), timeout=60)
        started = {*_descendants(up.pid), *_processes_with_marker(str(state_dir))} - {up.pid}
        assert len(started) > len(children)
    finally:
        up.kill()
        up.wait()
        assert up.stdout is not None
        up.stdout.close()
    assert wait_for(lambda: not any(_alive(pid) for pid in started), timeout=60), [
        (pid, Path(f"/proc/{pid}/cmdline").read_bytes()) for pid in started if _alive(pid)
    ]
    assert _processes_with_marker(str(state_dir)) == []
    StateDirLock(state_dir).acquire().release()  # the kernel dropped the dead `up`'s lock


def test_up_refuses_port_0_in_one_line(tmp_path: Path) -> None:
    result = _cli(["up", "--listen", "127.0.0.1:0"], _env(tmp_path / "state"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "fixed port" in result.stderr and not (tmp_path / "state" / "redis").exists()


def test_a_second_coordinator_on_a_port_in_use_refuses_in_one_line(
    stack: Stack, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    second = _cli(["coordinator", "--listen", stack.address], env, timeout=30)
    assert second.returncode == EXIT_IN_USE
    assert second.stderr.count("\n") == 1, second.stderr
    assert "already in use" in second.stderr and stack.address in second.stderr
    wait_until_serving(stack.address, timeout=10)  # the first one keeps serving
