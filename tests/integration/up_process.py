"""Helpers for tests that run `scriptpool up` and other CLI processes: ports, environments, the
ready handshake, and finding the processes a stack started (through the process tree and the state
directory's path in their environments or command lines)."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import CLI, stop_process

READY_LINE = "scriptpool is up"
CLI_MODULE = CLI[-1]
"""The module every scriptpool process runs (`python -m scriptpool.coordinator.cli.main ...`)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def up_env(state_dir: Path) -> dict[str, str]:
    """No REDIS_URL (a private redis-server), no SCRIPTPOOL_COORDINATOR/LISTEN: `--listen` alone says
    where the coordinator is. No metrics unless a test asks (`--metrics-port` wins over this)."""
    drop = ("REDIS_URL", "SCRIPTPOOL_API_KEY", "SCRIPTPOOL_COORDINATOR", "SCRIPTPOOL_LISTEN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["SCRIPTPOOL_STATE_DIR"] = str(state_dir)
    env["SCRIPTPOOL_METRICS"] = "off"  # `up` serves metrics on fixed ports by default; tests run side by side
    return env


def cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_up(
    state_dir: Path,
    address: str,
    log: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """`scriptpool up --listen address [extra...]`, returned once it printed its ready line."""
    with open(log, "ab") as stderr:
        up = subprocess.Popen(
            [*CLI, "up", "--listen", address, "--workers", str(workers), *extra],
            env=env if env is not None else up_env(state_dir),
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


def children_of(pid: int) -> dict[int, str]:
    """The live processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def kind_of(cmdline: str) -> str:
    """What a process of `up` is, from its command line: "redis", "coordinator", "pool" (`worker
    --processes N`, a child of `up`) or "worker" (a child of the pool); "" for a process caught
    between fork and exec, whose command line is still empty or its parent's."""
    if "redis-server" in cmdline:
        return "redis"
    words = cmdline.split()
    if CLI_MODULE not in words:
        return ""
    command = [word for word in words[words.index(CLI_MODULE) + 1 :] if not word.startswith("-")][:1]
    if command == ["worker"] and "--processes" in words:
        return "pool"
    return command[0] if command and command[0] in ("coordinator", "worker") else ""


def processes_of(pid: int, kind: str) -> dict[int, str]:
    """The live processes of `kind` under `pid` at any depth (a worker is a child of `up`'s pool)."""
    found = {}
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if alive(child) and kind_of(cmdline) == kind:
            found[child] = cmdline
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def processes_with_marker(marker: str) -> list[int]:
    """Live processes (not this one) whose environment or command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (marker.encode() in environ or marker.encode() in cmdline) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_up(up: subprocess.Popen[str]) -> None:
    """SIGTERM to `up`, which must stop everything and exit 0 (killed if it does not stop)."""
    up.send_signal(signal.SIGTERM)
    try:
        assert up.wait(timeout=60) == 0
    finally:
        stop_process(up)  # type: ignore[arg-type]
        assert up.stdout is not None
        up.stdout.close()
