"""Durability stated and tested (issue 14, item 6; docs/DURABILITY.md, docs/adr/0007-durability.md).

The private Redis keeps an append-only file fsynced once a second unless told otherwise; with
acknowledgements after fsync on it fsyncs every write before answering, and what was acknowledged
(submissions and results) is there after a kill -9 of redis-server and a restart from its file. A
coordinator or worker asked to acknowledge only after fsync refuses, in one line, a Redis that
answers first.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from scriptpool.client import ScriptpoolClient, job_request
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.settings import Settings
from scriptpool.core.job_records import text
from scriptpool.core.keys import job_key
from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.workers.settings import WorkerSettings
from tests.conftest import CLI, WORKER_COMMAND, stop_process

from .helpers import outcome, result_of
from .up_process import free_port, start_up, stop_up, up_env

DURABLE_QUEUE = "scriptpool-durable-test"
EXIT_USAGE = 2


def _appendfsync(client: Redis) -> tuple[str, str]:
    config = client.config_get("append*")
    return text(config["appendonly"]), text(config["appendfsync"])


def test_the_private_redis_keeps_an_aof_fsynced_once_a_second_unless_told(tmp_path: Path) -> None:
    assert Settings().private_redis_appendfsync == "everysec"
    assert Settings(ack_after_fsync=True).private_redis_appendfsync == "always"
    assert Settings(redis_appendfsync="no").private_redis_appendfsync == "no"
    for appendfsync in ("everysec", "always"):
        with PrivateRedis(tmp_path / appendfsync, persistent=True, appendfsync=appendfsync) as server:
            client = Redis.from_url(server.url)
            assert _appendfsync(client) == ("yes", appendfsync)
            client.close()


def test_up_with_ack_after_fsync_runs_its_redis_with_appendfsync_always(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    address = f"127.0.0.1:{free_port()}"
    up = start_up(state_dir, address, tmp_path / "up.log", extra=["--ack-after-fsync"])
    try:
        client = Redis.from_url(f"unix://{state_dir / 'redis' / 'redis.sock'}")
        assert _appendfsync(client) == ("yes", "always")
        client.close()
    finally:
        stop_up(up)


def test_acknowledged_submissions_and_results_survive_kill_9_of_redis(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis = PrivateRedis(redis_dir, persistent=True, appendfsync="always", die_with_parent=True).start()
    settings = Settings(redis_url=redis.url, listen="127.0.0.1:0", queue=DURABLE_QUEUE, ack_after_fsync=True)
    coordinator = start_coordinator(settings)  # it checked the Redis: appendonly yes, appendfsync always
    address = f"127.0.0.1:{coordinator.port}"
    env = {**os.environ, "REDIS_URL": redis.url, "SCRIPTPOOL_COORDINATOR": address, "SCRIPTPOOL_QUEUE": DURABLE_QUEUE,
           "SCRIPTPOOL_ACK_AFTER_FSYNC": "1"}  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(WORKER_COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
    key = coordinator.auth.create_api_key("durable")
    try:
        with ScriptpoolClient(address, key) as client:
            finished = client.run_many(Language.LUA, [f"return {i}" for i in range(20)], timeout=120)
            assert [result_of(job) for job in finished] == list(range(20))
            stop_process(worker)  # the next jobs stay queued: acknowledged submissions, nothing run
            requests = [job_request(Language.LUA, f"return {i}") for i in range(30)]
            queued = [answer.job.id for answer in client.submit_many(requests)]
            assert len(queued) == 30
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGKILL)  # right after the last acknowledgement
        redis.process.wait()
        coordinator.stop(grace=0)
        redis = PrivateRedis(redis_dir, persistent=True, appendfsync="always", die_with_parent=True).start()

        client_after = Redis.from_url(redis.url)
        for job in finished:
            record = client_after.hgetall(job_key(job.id))
            assert text(record[b"status"]) == "finished" and record[b"result"] == job.result.SerializeToString()
            assert outcome(job) is Outcome.OK
        rq_queue = Queue(DURABLE_QUEUE, connection=client_after)
        assert set(rq_queue.get_job_ids()) == set(queued)
        for job_id in queued:
            assert text(client_after.hget(job_key(job_id), "status")) == "queued"
            assert client_after.exists(f"rq:job:{job_id}")
        client_after.close()
    finally:
        stop_process(worker)
        coordinator.stop(grace=0)
        redis.stop()


@pytest.mark.parametrize("command", ["coordinator", "worker"])
def test_ack_after_fsync_refuses_a_redis_that_answers_before_fsync_in_one_line(tmp_path: Path, command: str) -> None:
    with PrivateRedis(tmp_path / "redis", persistent=True, appendfsync="everysec") as server:
        env = {**up_env(tmp_path / "state"), "REDIS_URL": server.url, "SCRIPTPOOL_ACK_AFTER_FSYNC": "1",
               "SCRIPTPOOL_LISTEN": f"127.0.0.1:{free_port()}"}  # fmt: skip
        done = subprocess.run([*CLI, command], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: INVALID_ARGUMENT: SCRIPTPOOL_ACK_AFTER_FSYNC is on")
    assert "appendonly yes, appendfsync everysec" in done.stderr and server.url in done.stderr


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SCRIPTPOOL_REDIS_APPENDFSYNC": "sometimes"}, "SCRIPTPOOL_REDIS_APPENDFSYNC"),
        ({"SCRIPTPOOL_ACK_AFTER_FSYNC": "maybe"}, "SCRIPTPOOL_ACK_AFTER_FSYNC"),
        ({"SCRIPTPOOL_ACK_AFTER_FSYNC": "1", "SCRIPTPOOL_REDIS_APPENDFSYNC": "everysec"}, "appendfsync always"),
    ],
)
def test_bad_durability_settings_are_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidArgument, match=named):
        Settings.from_env()


def test_workers_read_the_same_ack_after_fsync_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SCRIPTPOOL_ACK_AFTER_FSYNC", "1")
    assert WorkerSettings.from_env().ack_after_fsync and Settings.from_env().ack_after_fsync
    monkeypatch.setenv("SCRIPTPOOL_ACK_AFTER_FSYNC", "maybe")
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_ACK_AFTER_FSYNC"):
        WorkerSettings.from_env()
