"""`scriptpool up` starts everything and stops it cleanly; `scriptpool run` prints and exits right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from scriptpool.coordinator.embedded import wait_until_serving
from tests.conftest import CLI, REPO, stop_process, wait_for
from tests.integration.up_process import cli, free_port, processes_with_marker


@pytest.mark.slow
def test_up_runs_jobs_from_the_cli_and_stops_without_orphans(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCRIPTPOOL_API_KEY")}
    env.update(
        {
            "SCRIPTPOOL_STATE_DIR": str(state_dir),
            "SCRIPTPOOL_COORDINATOR": address,
            "SCRIPTPOOL_LISTEN": address,
            "SCRIPTPOOL_METRICS": "off",  # not the default fixed ports: tests run side by side
        }
    )
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen(
            [*CLI, "up", "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        wait_until_serving(address, timeout=30)
        assert (state_dir / "api-key").exists() and oct((state_dir / "api-key").stat().st_mode)[-3:] == "600"
        ok = cli(["run", str(REPO / "examples" / "quickstart.lua")], env)
        assert ok.returncode == 0, ok.stderr
        assert "created session" in ok.stdout and '"name": "quickstart"' in ok.stdout

        bad = tmp_path / "bad.lua"
        bad.write_text("local x = 1\nerror('nope')\n")
        failed = cli(["run", str(bad)], env)
        assert failed.returncode == 1
        job_line, failure = failed.stderr.splitlines()  # the job's id comes first, before the wait
        assert job_line.startswith("job ") and failure == "script_error: line 2: nope"

        spin = tmp_path / "spin.lua"
        spin.write_text("while true do end")
        limited = cli(["run", str(spin), "--cpu-ms", "300"], env)
        assert limited.returncode == 1 and limited.stderr.splitlines()[1].startswith("cpu_time_exceeded: ")

        created = cli(["session", "create", "--name", "from-cli", "--tag", "x"], env)
        assert created.returncode == 0
        session_id = created.stdout.strip()
        listed = cli(["session", "list", "--tag", "x"], env)
        assert session_id in listed.stdout and "from-cli" in listed.stdout
        in_session = tmp_path / "cur.lua"
        in_session.write_text("return Session.getCurrent()")
        current = cli(["run", str(in_session), "--session", session_id], env)
        assert current.stdout.strip() == f'"{session_id}"'

        keys = cli(["keys", "list", "--principal", "local", "--json"], env)  # up's key is an admin key
        assert keys.returncode == 0, keys.stderr
        assert [key["scopes"] for key in json.loads(keys.stdout)] == [["admin", "read", "submit"]]

        unknown = cli(["run", str(tmp_path / "x.rb")], env)
        assert unknown.returncode == 2 and "language" in unknown.stderr

        # `status` finds up's private Redis through the state directory: its pool's two workers, and
        # the two failures above counted by outcome.
        status = cli(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        seen = json.loads(status.stdout)
        assert len(seen["workers"]) == 2 and {q["name"] for q in seen["queues"]} == {"scriptpool"}
        assert seen["failures_by_outcome"] == {"script_error": 1, "cpu_time_exceeded": 1}
        assert processes_with_marker(str(state_dir))  # the stack really is running
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=30)
        finally:
            stop_process(up)
    assert code == 0
    assert wait_for(lambda: processes_with_marker(str(state_dir)) == [], timeout=10)


def test_run_against_no_coordinator_fails_clearly(tmp_path: Path) -> None:
    script = tmp_path / "a.lua"
    script.write_text("return 1")
    env = {**os.environ, "SCRIPTPOOL_API_KEY": "spk_x", "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    result = cli(["run", str(script), "--coordinator", f"127.0.0.1:{free_port()}", "--timeout", "3"], env)
    assert result.returncode == 3
    assert result.stderr.startswith("error: UNAVAILABLE")
    assert "Traceback" not in result.stderr


def test_doctor_reports_every_layer() -> None:
    result = cli(["doctor"], dict(os.environ))
    assert result.returncode == 0
    for layer in ("rlimits", "no-new-privs", "seccomp", "landlock", "network-namespace"):
        assert layer in result.stdout
