"""A worker's zygote and its sandbox children never outlive the worker, however it stops."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, Stack, stop_process, wait_for


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(_status(int(entry))["PPid"]) == pid:
                found.append(int(entry))
        except (OSError, KeyError):
            continue
    return found


def _cmdline(pid: int) -> str:
    """The process's command line, or "" when it has exited meanwhile (the worker's jail probe forks and reaps
    a short-lived child while this test lists the worker's children)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return not _status(pid)["State"].startswith("Z")
    except OSError:
        return False


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_the_zygote_and_its_children_stop_with_the_worker(stack: Stack, tmp_path: Path, stop: str) -> None:
    env = {**os.environ, "REDIS_URL": stack.redis_url, "SCRIPTPOOL_COORDINATOR": stack.address,
           "SCRIPTPOOL_QUEUE": f"scriptpool-zygote-{stop}"}  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([*CLI, "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    try:
        zygotes: list[int] = []

        def spare_ready() -> bool:
            zygotes[:] = [pid for pid in _children(worker.pid) if "scriptpool.sandbox.zygote" in _cmdline(pid)]
            return len(zygotes) == 1 and bool(_children(zygotes[0]))

        assert wait_for(spare_ready, timeout=60), "the worker's zygote never forked a spare"
        zygote = zygotes[0]
        spares = _children(zygote)
        if stop == "sigterm":
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        else:
            os.kill(worker.pid, signal.SIGKILL)  # only the worker: the zygote must notice by itself
            worker.wait(timeout=30)
        assert wait_for(lambda: not _alive(zygote) and not any(_alive(pid) for pid in spares), timeout=10)
    finally:
        stop_process(worker)
