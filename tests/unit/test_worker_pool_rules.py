"""The pool's rules with stand-in children (small Python processes, not workers): under `--burst` a
child that exits 0 is done and one that fails is started again; the settings refuse what is out of
bounds. The real pool with real workers: tests/integration/test_worker_pool.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scriptpool.errors import InvalidArgument
from scriptpool.workers.pool import EXIT_CLEAN, MAX_PROCESSES, PoolSettings, WorkerPool

# Fails (exit 3) on its first run for its index, succeeds (exit 0) after: a worker that crashed once.
FAILS_ONCE = (
    "import os, sys\n"
    "mark = os.path.join(sys.argv[1], os.environ['SCRIPTPOOL_WORKER_INDEX'])\n"
    "runs = open(mark).read() if os.path.exists(mark) else ''\n"
    "open(mark, 'a').write('x')\n"
    "sys.exit(0 if runs else 3)\n"
)


def test_burst_restarts_a_failed_child_and_ends_when_each_exited_0(tmp_path: Path) -> None:
    settings = PoolSettings(
        processes=2, worker_command=(sys.executable, "-c", FAILS_ONCE, str(tmp_path)), grace_seconds=5, burst=True
    )
    pool = WorkerPool(settings, env={"PATH": "/usr/bin:/bin"})
    assert pool.run() == EXIT_CLEAN
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == {"0": "xx", "1": "xx"}
    assert [slot.restarts.count for slot in pool.slots] == [1, 1]
    assert all(slot.finished for slot in pool.slots)


@pytest.mark.parametrize(
    ("processes", "grace", "command"),
    [(0, 1.0, ("x",)), (MAX_PROCESSES + 1, 1.0, ("x",)), (1, -1.0, ("x",)), (1, 3601.0, ("x",)), (1, 1.0, ())],
)
def test_settings_out_of_bounds_are_refused(processes: int, grace: float, command: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument):
        PoolSettings(processes=processes, worker_command=command, grace_seconds=grace)
