"""The operator CLI (issue 17 item 7) against a real stack: `--version`; global flags before or
after the subcommand; `job get|wait|cancel|list`; `status` (queues, workers, running jobs, failures
by outcome) read from Redis, `--json` and `--watch`; `doctor --json`; and a table of CLI mistakes,
each one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from tests.conftest import CLI, REPO, TEST_QUEUE, Stack, stop_process
from tests.integration.helpers import outcome, run_lua, submit_held


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No coordinator, key or Redis from the outer environment: each command names what it uses."""
    drop = ("REDIS_URL", "SCRIPTPOOL_API_KEY", "SCRIPTPOOL_COORDINATOR", "SCRIPTPOOL_LISTEN")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "SCRIPTPOOL_STATE_DIR": str(tmp_path / "state")}


def cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def reach(stack: Stack, principal_and_key: tuple[str, str]) -> list[str]:
    """The global flags that point a command at the test stack."""
    return ["--coordinator", stack.address, "--api-key", principal_and_key[1]]


@pytest.fixture
def unserved(stack: Stack) -> Iterator[tuple[ScriptpoolClient, list[str], str]]:
    """A coordinator of its own on a queue no worker serves (its jobs stay queued): a client, the
    flags that reach it, and the queue's name."""
    name = f"scriptpool-unserved-{uuid.uuid4().hex[:8]}"
    running: RunningCoordinator = start_coordinator(
        Settings(redis_url=stack.redis_url, listen="127.0.0.1:0", queue=name, max_wait_seconds=30)
    )
    address = f"127.0.0.1:{running.port}"
    key = running.auth.create_api_key("operator")
    try:
        with ScriptpoolClient(address, key) as client:
            yield client, ["--coordinator", address, "--api-key", key], name
    finally:
        running.stop(grace=0)


def test_version_names_the_installed_package(env: dict[str, str]) -> None:
    done = cli(["--version"], env)
    assert done.returncode == 0 and done.stdout.strip() == f"scriptpool {version('scriptpool')}", done


def test_global_flags_work_before_or_after_the_subcommand(
    client: ScriptpoolClient, reach: list[str], env: dict[str, str]
) -> None:
    job = run_lua(client, "return 'seen'")
    before = cli([*reach, "--json", "job", "get", job.id], env)
    after = cli(["job", "get", job.id, *reach, "--json"], env)
    mixed = cli(["--json", "job", *reach[:2], "get", job.id, f"--api-key={reach[3]}"], env)
    assert before.returncode == after.returncode == mixed.returncode == 0, (before, after, mixed)
    assert json.loads(before.stdout)["id"] == job.id
    assert before.stdout == after.stdout == mixed.stdout
    waited = cli(["-v", "job", "wait", job.id, *reach], env)
    assert waited.returncode == 0 and waited.stdout.strip() == '"seen"', waited


def test_job_cancel_ends_a_queued_job_cancelled(
    unserved: tuple[ScriptpoolClient, list[str], str], env: dict[str, str]
) -> None:
    client, reach, _ = unserved
    job = client.submit(Language.LUA, "return 1")
    done = cli(["job", "cancel", job.id, *reach], env)
    assert done.returncode == 0 and done.stdout.strip() == f"{job.id} cancelled", done
    assert outcome(client.get_job(job.id)) is Outcome.CANCELLED
    as_json = cli(["job", "cancel", job.id, "--json", *reach], env)  # again: the finished job, unchanged
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["outcome"] == "cancelled", as_json


def test_job_list_shows_a_sessions_jobs_newest_first_a_page_at_a_time(
    unserved: tuple[ScriptpoolClient, list[str], str], env: dict[str, str]
) -> None:
    client, reach, _ = unserved
    first = client.submit(Language.LUA, "return 1")
    later = [client.submit(Language.LUA, "return 2", session_id=first.session_id) for _ in range(2)]
    listed = cli(["job", "list", "--session", first.session_id, "--json", *reach], env)
    assert listed.returncode == 0, listed
    assert [job["id"] for job in json.loads(listed.stdout)] == [later[1].id, later[0].id, first.id]
    page = cli(["job", "list", "--session", first.session_id, "--limit", "2", *reach], env)
    assert page.returncode == 0 and "more jobs remain: pass --cursor" in page.stderr, page
    rows = page.stdout.splitlines()
    assert rows[0].startswith("ID") and [row.split()[:3] for row in rows[1:]] == [
        [later[1].id, "lua", "queued"],
        [later[0].id, "lua", "queued"],
    ]


def test_job_list_without_a_session_says_how_to_name_one(reach: list[str], env: dict[str, str]) -> None:
    done = cli(["job", "list", *reach], env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--session" in done.stderr, done


def test_status_shows_queues_busy_workers_running_jobs_and_failures_by_outcome(
    stack: Stack, client: ScriptpoolClient, unserved: tuple[ScriptpoolClient, list[str], str], env: dict[str, str]
) -> None:
    idle_client, _, idle_queue = unserved
    for _ in range(2):
        idle_client.submit(Language.LUA, "return 1")
    failed = run_lua(client, "error('on purpose')")
    assert outcome(failed) is Outcome.SCRIPT_ERROR
    held = submit_held(client)
    held.wait_running()
    try:
        done = cli(["status", "--json", "--redis-url", stack.redis_url], env)
        assert done.returncode == 0, done
        status = json.loads(done.stdout)
        queues = {q["name"]: q for q in status["queues"]}
        assert queues[idle_queue]["queued"] == 2
        assert queues[TEST_QUEUE]["running"] >= 1 and queues[TEST_QUEUE]["failed"] >= 1
        assert held.job.id in status["running"]
        busy = [w for w in status["workers"] if w["job"] == held.job.id]
        assert len(busy) == 1 and busy[0]["state"] == "busy" and TEST_QUEUE in busy[0]["queues"]
        assert status["busy"] >= 1 and status["busy"] + status["idle"] == len(status["workers"])
        assert status["failures_by_outcome"]["script_error"] >= 1
        text = cli(["status", "--redis-url", stack.redis_url], env)
        assert text.returncode == 0 and idle_queue in text.stdout and "script_error" in text.stdout, text
    finally:
        held.release()
    assert outcome(client.wait(held.job.id, timeout=60)) is Outcome.OK


def test_status_watch_renders_live_on_a_terminal_until_ctrl_c(stack: Stack, env: dict[str, str]) -> None:
    controller, terminal = pty.openpty()
    watch = subprocess.Popen(
        [*CLI, "status", "--watch", "--interval", "0.2", "--redis-url", stack.redis_url],
        env={**env, "COLUMNS": "160", "LINES": "60"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        process_group=0,
    )
    os.close(terminal)
    seen = b""
    try:
        give_up = time.monotonic() + 60
        while seen.count(b"scriptpool status:") < 2 and time.monotonic() < give_up:
            if select.select([controller], [], [], 1)[0]:
                try:
                    seen += os.read(controller, 65536)
                except OSError:  # the terminal closed: the command exited
                    break
        assert seen.count(b"scriptpool status:") >= 2, seen[-2000:]  # rendered, then rendered again
        assert b"queues" in seen and b"workers" in seen
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    finally:
        stop_process(watch)
        os.close(controller)


def test_doctor_json_and_its_exit_code_agree(env: dict[str, str]) -> None:
    done = cli(["doctor", "--json"], env)
    report = json.loads(done.stdout)
    assert set(report) == {"applied", "unavailable", "missing_required", "ok"} and report["applied"]
    assert set(report["missing_required"]) <= set(report["unavailable"])
    assert report["ok"] is (not report["missing_required"])
    assert done.returncode == (0 if report["ok"] else 4), done
    plain = cli(["--json", "doctor"], env)  # the global --json, before the subcommand
    assert json.loads(plain.stdout) == report


MISTAKES: list[tuple[str, list[str]]] = [
    ("unknown flag before the subcommand", ["--bogus", "status"]),
    ("unknown flag after the subcommand", ["status", "--bogus"]),
    ("unknown flag after a sub-subcommand", ["job", "get", "x", "--bogus"]),
    ("unknown subcommand", ["frobnicate"]),
    ("missing subcommand", []),
    ("negative CPU limit", ["run", "{script}", "--cpu-ms", "-1"]),
    ("negative memory limit", ["run", "{script}", "--memory-bytes", "-5"]),
    ("negative timeout", ["run", "{script}", "--timeout", "-1"]),
    ("NaN timeout", ["job", "wait", "x", "--timeout", "nan"]),
    ("not a number", ["run", "{script}", "--wall-ms", "ten"]),
    ("a fraction where a whole number goes", ["run", "{script}", "--max-retries", "1.5"]),
    ("zero workers", ["up", "--workers", "0"]),
    ("negative pool size", ["worker", "--processes", "-1"]),
    ("zero page", ["job", "list", "--session", "s", "--limit", "0"]),
    ("negative count", ["events", "tail", "--count", "-2"]),
    ("negative session listing", ["session", "list", "--limit", "-3"]),
    ("negative bench jobs", ["bench", "--jobs", "-1"]),
    ("zero watch interval", ["status", "--watch", "--interval", "0"]),
    ("watch and JSON at once", ["--json", "status", "--watch"]),
    ("a directory as the script", ["run", "{dir}"]),
    ("a missing script", ["run", "{dir}/missing.lua"]),
    ("a directory as the artifact to store", ["artifact", "put", "--session", "s", "{dir}"]),
    ("a global flag without its value", ["job", "get", "x", "--coordinator"]),
    ("a value given to a switch", ["--json=yes", "status"]),
    ("a bad Redis URL", ["status", "--redis-url", "nope://x"]),
    ("an unknown language", ["run", "{script}", "--lang", "cobol"]),
]


@pytest.mark.parametrize(("what", "words"), MISTAKES, ids=[what for what, _ in MISTAKES])
def test_every_cli_mistake_is_one_line_and_exit_2(
    what: str, words: list[str], reach: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    script = REPO / "examples" / "quickstart.lua"
    words = [word.format(script=script, dir=tmp_path) for word in words]
    done = cli([*words, *reach] if words and words[0] in ("run", "job", "artifact") else words, env)
    assert done.returncode == 2, (what, done)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), (what, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout


def test_a_directory_as_the_download_target_is_one_line(
    client: ScriptpoolClient, reach: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    session = client.create_session("operator")
    stored = cli(["artifact", "put", "--session", session.id, str(REPO / "examples" / "quickstart.lua"), *reach], env)
    assert stored.returncode == 0, stored
    done = cli(["artifact", "get", "--session", session.id, stored.stdout.strip(), "-o", str(tmp_path), *reach], env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "directory" in done.stderr, done


def _bench_stderr_on_a_terminal(env: dict[str, str], *flags: str) -> tuple[int, bytes, str]:
    """`bench sessions` (a short case) with stderr on a terminal: (exit code, stderr bytes, stdout)."""
    controller, terminal = pty.openpty()
    bench = subprocess.Popen(
        [*CLI, "bench", "sessions", "--jobs", "2", "--repeat", "1", *flags],
        env={**env, "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        process_group=0,
    )
    os.close(terminal)
    seen = b""
    try:
        while True:
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the command exited
                    break
                if not chunk:
                    break
                seen += chunk
            elif bench.poll() is not None:
                break
        assert bench.stdout is not None
        stdout = bench.stdout.read().decode()
        return bench.wait(timeout=120), seen, stdout
    finally:
        stop_process(bench)
        if bench.stdout is not None:
            bench.stdout.close()
        os.close(controller)


@pytest.mark.slow
def test_bench_shows_progress_on_a_terminal_and_none_with_json(env: dict[str, str]) -> None:
    code, shown, stdout = _bench_stderr_on_a_terminal(env)
    assert code == 0 and "== sessions" in stdout, (shown[-2000:], stdout)
    assert b"case sessions" in shown and b"0/1" in shown, shown[-2000:]  # the bar, on stderr
    code, shown, stdout = _bench_stderr_on_a_terminal(env, "--json")
    assert code == 0 and json.loads(stdout)["case"] == "sessions"
    assert b"case sessions" not in shown, shown[-2000:]
