"""`scriptpool up` starts again a child that died: a worker, the coordinator, or the private Redis
(from its append-only file). What was acknowledged before the death is still there, and the pool
runs jobs again without a person."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_for
from tests.integration.up_process import cli, free_port, processes_of, start_up, stop_up, up_env


def _pids_of(up_pid: int, kind: str) -> set[int]:
    return set(processes_of(up_pid, kind))  # a worker is a child of up's pool, which starts it again


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["worker", "pool", "coordinator", "redis"])
def test_up_starts_a_dead_child_again_and_serves(kind: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    address = f"127.0.0.1:{free_port()}"
    env = {**up_env(state_dir), "SCRIPTPOOL_COORDINATOR": address}
    up = start_up(state_dir, address, tmp_path / "up.log", workers=1)
    try:
        created = cli(["session", "create", "--name", "kept", "--tag", "acknowledged"], env)
        assert created.returncode == 0, created.stderr
        session_id = created.stdout.strip()
        before = _pids_of(up.pid, kind)
        assert len(before) == 1

        os.kill(before.pop(), signal.SIGKILL)

        assert wait_for(lambda: len(_pids_of(up.pid, kind) - before) == 1, timeout=60), (
            tmp_path / "up.log"
        ).read_text()
        assert up.poll() is None
        ran = cli(["run", str(REPO / "examples" / "quickstart.lua"), "--timeout", "60"], env, timeout=120)
        assert ran.returncode == 0, ran.stderr + (tmp_path / "up.log").read_text()
        listed = cli(["session", "list", "--tag", "acknowledged"], env)
        assert session_id in listed.stdout, listed.stdout + listed.stderr
        assert (
            f"{kind}" in (tmp_path / "up.log").read_text() and "starting it again" in (tmp_path / "up.log").read_text()
        )
    finally:
        stop_up(up)
