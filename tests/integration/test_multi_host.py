"""Workers on more than one host (issue 19 item 4): two network namespaces, each its own address,
stand in for two machines; a worker runs in each, pointed over the veth links at one Redis and one
coordinator on this host. Jobs spread over both hosts and all complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.bench.netns_hosts import NetnsHost, hosts
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.core.keys import job_key
from scriptpool.languages import Language
from tests.conftest import CLI, stop_process, wait_for
from tests.integration.helpers import outcome, result_of
from tests.integration.up_process import free_port

JOBS = 40


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server on a TCP port of every address of this host (the namespaces reach it over veth)."""
    port = free_port()
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed"
    command = [server, "--port", str(port), "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(die_with_parent(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = Redis(port=port)

    def answers() -> bool:
        try:
            return bool(redis.ping())
        except Exception:
            return False

    try:
        assert wait_for(answers, timeout=20), "redis-server did not answer"
        yield port
    finally:
        redis.close()
        stop_process(proc)


def test_jobs_spread_over_workers_on_two_hosts(tcp_redis: int, tmp_path: Path) -> None:
    queue = f"multi-host-{uuid.uuid4().hex[:8]}"
    coordinator_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTPOOL_") and k != "REDIS_URL"}
    env["SCRIPTPOOL_QUEUE"] = queue
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with hosts(2) as machines:
            with open(tmp_path / "coordinator.log", "wb") as log:
                coordinator = subprocess.Popen(
                    die_with_parent([*CLI, "coordinator", "--listen", f"0.0.0.0:{coordinator_port}"]),
                    env={**env, "REDIS_URL": f"redis://127.0.0.1:{tcp_redis}/0"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
            processes.append(coordinator)
            wait_until_serving(f"127.0.0.1:{coordinator_port}", process=coordinator)
            names = {}
            for machine in machines:
                names[machine.name] = f"worker-on-{machine.name}"
                processes.append(
                    _start_worker(machine, names[machine.name], tcp_redis, coordinator_port, env, tmp_path)
                )
            rq = Redis(port=tcp_redis)

            def registered() -> set[str]:
                return {w.name for w in Worker.all(queue=Queue(queue, connection=rq))}

            assert wait_for(lambda: registered() == set(names.values()), timeout=60), (
                f"workers registered: {registered()}; logs: {_logs(tmp_path)}"
            )
            # each worker (registered, so past `ip netns exec`) lives in a network namespace of its own
            worker_namespaces = {os.readlink(f"/proc/{proc.pid}/ns/net") for proc in processes[1:]}
            assert len(worker_namespaces) == 2 and os.readlink("/proc/self/ns/net") not in worker_namespaces
            key = Authenticator(rq).create_api_key("multi-host")
            with ScriptpoolClient(f"127.0.0.1:{coordinator_port}", key) as client:
                source = "local s = 0 for i = 1, 200000 do s = s + i end return INPUT.n"
                submitted = [client.submit(Language.LUA, source, inputs={"n": n}) for n in range(JOBS)]
                done = [client.wait(job.id, timeout=120) for job in submitted]
            assert [result_of(job) for job in done] == list(range(JOBS)), [outcome(job) for job in done]
            ran_on = [worker_name(rq.hget(job_key(job.id), "worker")) for job in submitted]
            assert set(ran_on) == set(names.values()), f"jobs ran on {sorted(set(ran_on))}"
            rq.close()
    finally:
        for proc in reversed(processes):
            stop_process(proc)


def worker_name(raw: object) -> str:
    assert isinstance(raw, bytes), "a finished job's record names the worker that ran it"
    return raw.decode()


def _start_worker(
    machine: NetnsHost, name: str, redis_port: int, coordinator_port: int, env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    """A worker on `machine`: it reaches Redis and the coordinator at the host side's address."""
    worker_env = {
        **env,
        "REDIS_URL": f"redis://{machine.gateway}:{redis_port}/0",
        "SCRIPTPOOL_COORDINATOR": f"{machine.gateway}:{coordinator_port}",
        "SCRIPTPOOL_WORKER_NAME": name,
        "TMPDIR": tempfile.mkdtemp(prefix=f"{machine.name}-", dir=logs),  # its own scratch root, as on its own disk
    }
    with open(logs / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            die_with_parent(machine.command([*CLI, "worker"])),
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))
