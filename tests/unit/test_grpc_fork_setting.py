"""gRPC's fork handlers are off in every process that forks sandbox children.

With them on, a fork while another thread is inside gRPC can leave the child aborting (SIGABRT) on
gRPC's inconsistent poller; the children never use gRPC, so the handlers only add that risk.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "entry", ["scriptpool.coordinator.cli.main", "scriptpool.workers", "scriptpool.workers.rq_entry"]
)
def test_fork_handlers_are_off_before_grpc_starts(entry: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    probe = (
        f"import importlib, os; importlib.import_module({entry!r}); "
        "from grpc._cython import cygrpc; "
        "print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'), cygrpc.is_fork_support_enabled())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "False"]


def test_an_explicit_setting_is_respected() -> None:
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "1"}
    probe = "import scriptpool.workers, os; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "1"
