"""`scriptpool up`'s log settings reach the coordinator and the workers it starts, and a finished
job is one line on `scriptpool.jobs` with its fields (docs/adr/0014-logs-and-tracing.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stop_process, wait_for
from tests.integration.up_process import cli, free_port, start_up, up_env


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _pid_of(records: list[dict[str, Any]], logger: str, starts: str) -> int:
    pids = {r["process"] for r in records if r["logger"] == logger and r["message"].startswith(starts)}
    assert len(pids) == 1, (logger, starts, pids)
    return int(pids.pop())


@pytest.mark.slow
def test_verbose_json_logging_reaches_the_coordinator_and_the_worker(tmp_path: Path) -> None:
    state_dir, log = tmp_path / "state", tmp_path / "up.log"
    address = f"127.0.0.1:{free_port()}"
    env = up_env(state_dir)
    up = start_up(state_dir, address, log, workers=1, env=env, global_flags=["-v", "--log-format", "json"])
    try:
        script = tmp_path / "answer.lua"
        script.write_text("return 6 * 7")
        ran = cli(["run", str(script)], {**env, "SCRIPTPOOL_COORDINATOR": address})
        assert ran.returncode == 0 and ran.stdout.strip() == "42", ran.stderr
        job_id = ran.stderr.splitlines()[0].removeprefix("job ")

        def job_lines() -> list[dict[str, Any]]:
            return [r for r in _records(log) if r["logger"] == "scriptpool.jobs" and r.get("job_id") == job_id]

        assert wait_for(lambda: job_lines(), timeout=20), log.read_text()[-3000:]
    finally:
        stop_process(up)  # type: ignore[arg-type]
        if up.stdout is not None:
            up.stdout.close()

    records = _records(log)  # every line of up, its coordinator and its worker is JSON
    coordinator = _pid_of(records, "scriptpool.coordinator.server", "scriptpool coordinator listening")
    worker = _pid_of(records, "scriptpool.workers.worker", "scriptpool worker ")
    assert coordinator != worker != up.pid
    for pid in (up.pid, coordinator, worker):  # -v: DEBUG in each process
        assert any(r["process"] == pid and r["level"] == "DEBUG" for r in records), pid

    (job,) = job_lines()
    assert job["process"] == worker and job["level"] == "INFO"
    assert {k: job[k] for k in ("principal", "language", "outcome", "attempt")} == {
        "principal": "local", "language": "lua", "outcome": "ok", "attempt": 1,
    }  # fmt: skip
    assert job["queue_wait_seconds"] >= 0 and job["run_seconds"] > 0
