"""Clients keep their jobs across a coordinator restart (issue 14): `scriptpool run` and the SDK's
`run` resume waiting and get the result, and the job is queued and run once."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.languages import Language
from tests.conftest import CLI, REPO, WORKER_COMMAND, Stack, stop_process, wait_for

from .helpers import result_of

RESTART_QUEUE = "scriptpool-restart-test"
# Counts its runs: a job run twice would return 2.
COUNTING = "return State.increment('global', INPUT.tag, 1)"


@dataclass
class Restartable:
    """A coordinator on a fixed address that a test can stop and start again, and a queue no worker
    serves until the test starts one."""

    settings: Settings
    redis_url: str
    redis: Redis
    api_key: str
    log_dir: Path
    coordinator: RunningCoordinator
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.settings.listen

    def restart(self) -> None:
        self.coordinator.stop(grace=0)
        self.coordinator = start_coordinator(self.settings)

    def start_worker(self) -> None:
        env = {**os.environ, "REDIS_URL": self.redis_url, "SCRIPTPOOL_COORDINATOR": self.address,
               "SCRIPTPOOL_QUEUE": RESTART_QUEUE}  # fmt: skip
        with open(self.log_dir / "worker.log", "ab") as log:
            self.workers.append(subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, process_group=0))  # fmt: skip

    def queued(self) -> list[str]:
        return Queue(RESTART_QUEUE, connection=self.redis).get_job_ids()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def restartable(stack: Stack, redis_client: Redis, tmp_path: Path) -> Iterator[Restartable]:
    settings = Settings(redis_url=stack.redis_url, listen=f"127.0.0.1:{_free_port()}", queue=RESTART_QUEUE)
    coordinator = start_coordinator(settings)
    key = coordinator.auth.create_api_key(f"restart-{uuid.uuid4().hex[:8]}")
    own = Restartable(settings, stack.redis_url, redis_client, key, tmp_path, coordinator)
    try:
        yield own
    finally:
        for worker in own.workers:
            stop_process(worker)
        own.coordinator.stop(grace=0)


def test_the_sdk_resumes_across_a_coordinator_restart_and_the_job_runs_once(restartable: Restartable) -> None:
    tag = uuid.uuid4().hex
    outcome: dict[str, object] = {}
    with ScriptpoolClient(restartable.address, restartable.api_key) as client:

        def run() -> None:
            try:
                outcome["job"] = client.run(Language.LUA, COUNTING, inputs={"tag": tag}, timeout=120)
            except Exception as exc:  # (reported by the assertion below)
                outcome["error"] = exc

        waiting = threading.Thread(target=run)
        waiting.start()
        # Queued (no worker serves the queue yet), so the client is inside its SubmitJob wait.
        assert wait_for(lambda: len(restartable.queued()) == 1, timeout=30)
        restartable.restart()  # the SubmitJob call breaks; the SDK sends it again with its key
        restartable.start_worker()
        waiting.join(timeout=120)
        assert not waiting.is_alive()
        assert "error" not in outcome, outcome
        job = outcome["job"]
        assert result_of(job) == 1 and job.attempt == 1  # type: ignore[arg-type,attr-defined]
        assert len(client.list_sessions().sessions) == 1  # one job queued (each made its own session)
    assert restartable.queued() == []


def test_scriptpool_run_prints_the_job_id_first_and_survives_a_coordinator_restart(
    restartable: Restartable, tmp_path: Path
) -> None:
    script = tmp_path / "count.lua"
    script.write_text(COUNTING.replace("INPUT.tag", f"'{uuid.uuid4().hex}'"))
    env = {**os.environ, "SCRIPTPOOL_API_KEY": restartable.api_key, "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    run = subprocess.Popen(
        [*CLI, "run", str(script), "--coordinator", restartable.address,
         "--timeout", "120"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert run.stderr is not None
        first = run.stderr.readline()  # printed before it waits: a handshake
        assert first.startswith("job "), first
        job_id = first.split()[1].strip()
        assert restartable.queued() == [job_id]
        restartable.restart()
        restartable.start_worker()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert out == "1\n"  # ran once
    assert "Traceback" not in err
    with ScriptpoolClient(restartable.address, restartable.api_key) as client:
        assert client.get_job(job_id).attempt == 1
        assert len(client.list_sessions().sessions) == 1


def test_job_get_and_job_wait(restartable: Restartable, tmp_path: Path) -> None:
    with ScriptpoolClient(restartable.address, restartable.api_key) as client:
        job = client.submit(Language.LUA, "print('hi') return 7")
    env = {**os.environ, "SCRIPTPOOL_API_KEY": restartable.api_key, "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    cli = [*CLI, "job"]
    where = ["--coordinator", restartable.address]
    got = subprocess.run([*cli, *where, "get", job.id], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and '"status": "JOB_STATUS_QUEUED"' in got.stdout and '"attempt": 1' in got.stdout
    restartable.start_worker()
    waited = subprocess.run([*cli, *where, "wait", job.id], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert waited.returncode == 0 and waited.stdout == "hi\n7\n", waited.stderr
    unknown = subprocess.run([*cli, *where, "get", str(uuid.uuid4())], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert (
        unknown.returncode == 2
        and unknown.stderr.startswith("error: NOT_FOUND")
        and len(unknown.stderr.splitlines()) == 1
    )


@pytest.mark.parametrize(
    "flags, named",
    [(["--cpu-ms", "-1"], "--cpu-ms"), (["--timeout", "-5"], "--timeout"), (["--max-retries", "-1"], "--max-retries"),
     (["--max-retries", "11"], "max_retries: 11 is above the maximum of 10")],
)  # fmt: skip
def test_bad_run_flags_are_one_line_and_exit_2(
    restartable: Restartable, tmp_path: Path, flags: list[str], named: str
) -> None:
    script = tmp_path / "a.lua"
    script.write_text("return 1")
    env = {**os.environ, "SCRIPTPOOL_API_KEY": restartable.api_key, "SCRIPTPOOL_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        [*CLI, "run", str(script), "--coordinator", restartable.address,
         *flags],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: INVALID_ARGUMENT") and named in result.stderr
    assert len(result.stderr.splitlines()) == 1
