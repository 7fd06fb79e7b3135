"""Prometheus metrics from a real coordinator and a real worker process (each started by the CLI,
each serving its own /metrics), scraped over HTTP after real jobs: the counters moved, with the
right labels. And `up` serving them on its default layout (coordinator, then worker N on +1+N)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.cli.main import EXIT_IN_USE
from scriptpool.coordinator.embedded import wait_until_serving
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.jail import probe_host
from scriptpool.workers.metrics import layer_name
from tests.conftest import CLI, stop_process, wait_for

from .helpers import outcome, result_of, run_js, run_lua, submit_held
from .up_process import cli, start_up, stop_up, up_env

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} consecutive free ports")


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class MetricsStack:
    address: str
    coordinator_metrics: int
    worker_metrics: int
    queue: str
    client: ScriptpoolClient
    worker: subprocess.Popen[bytes] | None


@pytest.fixture
def metrics_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[MetricsStack]:
    with running_stack(redis_server.url, tmp_path, with_worker=True) as stack:
        yield stack


@contextlib.contextmanager
def running_stack(
    redis_url: str, tmp_path: Path, *, with_worker: bool, extra_env: dict[str, str] | None = None
) -> Iterator[MetricsStack]:
    """A coordinator and (`with_worker`) one worker on a queue of their own (no other worker takes
    its jobs), each with metrics on: the coordinator by --metrics-port, the worker by
    SCRIPTPOOL_METRICS plus its pool index (SCRIPTPOOL_WORKER_INDEX=1 moves it one port up)."""
    base = free_ports(4)
    address = f"127.0.0.1:{base}"
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": redis_url, "SCRIPTPOOL_QUEUE": queue, "SCRIPTPOOL_COORDINATOR": address, **(extra_env or {})}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], extra: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log, "wb") as out:
            proc = subprocess.Popen(
                die_with_parent([*CLI, *args]),  # gone with pytest, even a killed one
                env={**_base_env(), **env, **extra},
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        procs.append(proc)
        return proc

    try:
        coordinator = spawn(
            ["coordinator", "--listen", address, "--metrics-port", f"127.0.0.1:{base + 1}"], {}, "coordinator.log"
        )
        wait_until_serving(address, process=coordinator)
        if with_worker:
            worker_env = {"SCRIPTPOOL_METRICS": f"127.0.0.1:{base + 2}", "SCRIPTPOOL_WORKER_INDEX": "1"}
            worker = spawn(["worker"], worker_env, "worker.log")
            assert wait_for(lambda: answers(base + 3), timeout=60), (tmp_path / "worker.log").read_text()
        redis = Redis.from_url(redis_url)
        try:
            key = Authenticator(redis).create_api_key(f"m-{uuid.uuid4().hex[:8]}")
        finally:
            redis.close()
        with ScriptpoolClient(address, key) as client:
            yield MetricsStack(address, base + 1, base + 3, queue, client, worker if with_worker else None)
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def _base_env() -> dict[str, str]:
    drop = ("SCRIPTPOOL_METRICS", "SCRIPTPOOL_WORKER_INDEX", "SCRIPTPOOL_API_KEY")
    return {k: v for k, v in os.environ.items() if k not in drop}


STATE_CALLS = "State.set('global', 'k', 1)\nState.get('global', 'k')\nState.get('global', 'k')\nreturn 1"


@pytest.mark.slow
def test_coordinator_and_worker_metrics_move_with_the_jobs(metrics_stack: MetricsStack) -> None:
    client = metrics_stack.client
    began = time.monotonic()
    assert result_of(run_lua(client, "return 1")) == 1
    assert result_of(run_lua(client, "return 2")) == 2  # same principal, same limits: the child is reused
    assert outcome(run_lua(client, "error('boom')")) is Outcome.SCRIPT_ERROR
    assert outcome(run_lua(client, "while true do end", limits={"cpu_time_ms": 300})) is Outcome.CPU_TIME_EXCEEDED
    assert result_of(run_js(client, "1 + 1")) == 2
    assert result_of(run_lua(client, STATE_CALLS)) == 1  # three global calls: one unary, then the stream
    key = uuid.uuid4().hex
    first = client.submit(Language.JAVASCRIPT, "2 + 2", idempotency_key=key)
    assert client.submit(Language.JAVASCRIPT, "2 + 2", idempotency_key=key).id == first.id  # queued once
    assert result_of(client.wait(first.id, timeout=60)) == 4
    with pytest.raises(Exception, match="NOT_FOUND|not found"):
        client.get_job(str(uuid.uuid4()))
    with grpc.insecure_channel(metrics_stack.address) as channel:
        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary("/no.such.Service/Method", None, None)(b"", timeout=5)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED

    coordinator = scrape(metrics_stack.coordinator_metrics)
    assert value(coordinator, "scriptpool_jobs_submitted_total", language="lua") == 5
    assert value(coordinator, "scriptpool_jobs_submitted_total", language="javascript") == 2
    submit = "/scriptpool.v1.JobService/SubmitJob"
    submitted_ok = value(coordinator, "scriptpool_calls_total", method=submit, code="OK")
    assert submitted_ok is not None and submitted_ok >= 8
    assert value(coordinator, "scriptpool_call_duration_seconds_count", method=submit) == submitted_ok
    get_job = "/scriptpool.v1.JobService/GetJob"
    assert value(coordinator, "scriptpool_calls_total", method=get_job, code="NOT_FOUND") == 1
    assert value(coordinator, "scriptpool_calls_total", method="unknown", code="UNIMPLEMENTED") == 1
    # the script's three global calls, the first unary and the next two carried by the call stream
    assert value(coordinator, "scriptpool_calls_total", method="/scriptpool.v1.StateService/Set", code="OK") == 1
    assert value(coordinator, "scriptpool_calls_total", method="/scriptpool.v1.StateService/Get", code="OK") == 2
    assert value(coordinator, "scriptpool_queue_depth", queue=metrics_stack.queue) == 0
    assert value(coordinator, "scriptpool_rq_workers", queue=metrics_stack.queue) == 1
    assert value(coordinator, "scriptpool_redis_errors_total") == 0
    assert not [labels for (name, labels) in coordinator if name.startswith("scriptpool_") and _has_id(labels)]

    worker = scrape(metrics_stack.worker_metrics)
    finished = "scriptpool_jobs_finished_total"
    assert value(worker, finished, language="lua", outcome="ok") == 3
    assert value(worker, finished, language="lua", outcome="script_error") == 1
    assert value(worker, finished, language="lua", outcome="cpu_time_exceeded") == 1
    assert value(worker, finished, language="javascript", outcome="ok") == 2
    took = time.monotonic() - began
    for histogram in ("scriptpool_job_queue_wait_seconds", "scriptpool_job_run_seconds"):
        assert value(worker, f"{histogram}_count", language="lua") == 5
        assert value(worker, f"{histogram}_count", language="javascript") == 2
        # in seconds, and measured from the right moments (a time zone slip would be hours)
        assert 0 < (value(worker, f"{histogram}_sum", language="lua") or 0) < took
    assert value(worker, "scriptpool_sandbox_setup_seconds_count", language="lua") == 5
    fresh = value(worker, "scriptpool_sandbox_children_total", kind="fresh") or 0
    reused = value(worker, "scriptpool_sandbox_children_total", kind="reused") or 0
    assert reused >= 1 and fresh >= 1 and fresh + reused == 7
    assert value(worker, "scriptpool_worker_processes", state="idle") == 1
    assert value(worker, "scriptpool_worker_processes", state="busy") == 0
    report = probe_host()
    for layer in report.applied:
        assert value(worker, "scriptpool_jail_layer_applied", layer=layer_name(layer)) == 1
    for layer in report.unavailable:
        assert value(worker, "scriptpool_jail_layer_applied", layer=layer) == 0
    assert value(worker, "scriptpool_redis_errors_total") == 0


@pytest.mark.slow
def test_a_worker_running_a_job_is_busy(metrics_stack: MetricsStack) -> None:
    held = submit_held(metrics_stack.client)
    held.wait_running()  # the job is in its sandbox child, waiting for the release
    try:
        worker = scrape(metrics_stack.worker_metrics)
        assert value(worker, "scriptpool_worker_processes", state="busy") == 1
        assert value(worker, "scriptpool_worker_processes", state="idle") == 0
    finally:
        held.release()
    assert result_of(metrics_stack.client.wait(held.job.id, timeout=60)) == "released"
    assert wait_for(
        lambda: value(scrape(metrics_stack.worker_metrics), "scriptpool_worker_processes", state="idle") == 1
    )


def _has_id(labels: frozenset[tuple[str, str]]) -> bool:
    """A label value that looks like a job id (a UUID): it must never be one."""
    return any(len(v) == 36 and v.count("-") == 4 for _, v in labels)


@pytest.mark.slow
def test_queue_depth_counts_the_jobs_no_worker_took(redis_server: PrivateRedis, tmp_path: Path) -> None:
    with running_stack(redis_server.url, tmp_path, with_worker=False) as stack:
        coordinator = scrape(stack.coordinator_metrics)
        assert value(coordinator, "scriptpool_queue_depth", queue=stack.queue) == 0
        assert value(coordinator, "scriptpool_rq_workers", queue=stack.queue) == 0
        jobs = [stack.client.submit(Language.LUA, "return 1") for _ in range(3)]
        assert value(scrape(stack.coordinator_metrics), "scriptpool_queue_depth", queue=stack.queue) == 3
        assert outcome(stack.client.cancel(jobs[0].id)) is Outcome.CANCELLED  # ended while queued
        coordinator = scrape(stack.coordinator_metrics)
        assert value(coordinator, "scriptpool_jobs_ended_by_coordinator_total", outcome="cancelled") == 1
        assert value(coordinator, "scriptpool_queue_depth", queue=stack.queue) == 2


@pytest.mark.slow
def test_a_job_whose_worker_died_is_counted_worker_lost(tmp_path: Path) -> None:
    """On a Redis of its own: any other coordinator's sweeper on a shared Redis could end the job."""
    lease = {"SCRIPTPOOL_LEASE_SECONDS": "1"}
    own = PrivateRedis(tmp_path / "redis", die_with_parent=True).start()
    try:
        with running_stack(own.url, tmp_path, with_worker=True, extra_env=lease) as stack:
            assert stack.worker is not None
            held = submit_held(stack.client)
            held.wait_running()
            os.killpg(stack.worker.pid, signal.SIGKILL)  # the worker and its sandbox children
            stack.worker.wait()
            assert outcome(stack.client.wait(held.job.id, timeout=60)) is Outcome.WORKER_LOST
            port = stack.coordinator_metrics

            # the sweeper counts right after the finish it published, which the wait may beat
            def counted() -> float | None:
                return value(scrape(port), "scriptpool_jobs_ended_by_coordinator_total", outcome="worker_lost")

            assert wait_for(lambda: counted() == 1, timeout=10), counted()
    finally:
        own.stop()


@pytest.mark.slow
def test_redis_going_away_counts_errors_and_drops_the_queue_gauges(tmp_path: Path) -> None:
    """While the coordinator's Redis is down, a scrape still answers (the process's own metrics),
    the queue gauges are left out rather than stale, and Redis errors are counted; back they come."""
    own = PrivateRedis(tmp_path / "redis", die_with_parent=True).start()
    try:
        with running_stack(own.url, tmp_path, with_worker=False) as stack:
            port = stack.coordinator_metrics
            before = scrape(port)
            assert value(before, "scriptpool_queue_depth", queue=stack.queue) == 0
            assert value(before, "scriptpool_redis_errors_total") == 0
            own.stop()
            assert wait_for(lambda: (value(scrape(port), "scriptpool_redis_errors_total") or 0) > 0, timeout=30)
            assert value(scrape(port), "scriptpool_queue_depth", queue=stack.queue) is None
            own.start()
            assert wait_for(lambda: value(scrape(port), "scriptpool_queue_depth", queue=stack.queue) == 0, timeout=30)
    finally:
        own.stop()


@pytest.mark.slow
def test_up_serves_metrics_for_the_coordinator_and_each_worker(tmp_path: Path) -> None:
    metrics_base = free_ports(3)
    address = f"127.0.0.1:{free_ports(1)}"
    state_dir = tmp_path / "state"
    up = start_up(
        state_dir, address, tmp_path / "up.log", workers=2, extra=["--metrics-port", f"127.0.0.1:{metrics_base}"]
    )
    try:
        for worker_port in (metrics_base + 1, metrics_base + 2):  # each worker process, on its own port
            assert wait_for(lambda port=worker_port: answers(port), timeout=60), (tmp_path / "up.log").read_text()
            assert value(scrape(worker_port), "scriptpool_worker_processes", state="idle") == 1
        with ScriptpoolClient(address, (state_dir / "api-key").read_text().strip()) as client:
            assert result_of(run_lua(client, "return 7")) == 7
        assert value(scrape(metrics_base), "scriptpool_jobs_submitted_total", language="lua") == 1
        ran = [scrape(port) for port in (metrics_base + 1, metrics_base + 2)]
        assert sum(value(w, "scriptpool_jobs_finished_total", language="lua", outcome="ok") or 0 for w in ran) == 1
    finally:
        stop_up(up)
    assert up_env(state_dir)["SCRIPTPOOL_METRICS"] == "off"  # the other `up` tests bind no fixed port


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        (["coordinator", "--metrics-port", "nope"], {}, "--metrics-port"),
        (["worker", "--metrics-port", "70000"], {}, "--metrics-port"),
        (["up", "--metrics-port", "host:"], {}, "--metrics-port"),
        (["coordinator"], {"SCRIPTPOOL_METRICS": "127.0.0.1:x"}, "SCRIPTPOOL_METRICS"),
        (["worker"], {"SCRIPTPOOL_METRICS": "9000", "SCRIPTPOOL_WORKER_INDEX": "two"}, "SCRIPTPOOL_WORKER_INDEX"),
    ],
)
def test_a_bad_metrics_address_is_one_line_and_exit_2(
    command: list[str], env: dict[str, str], named: str, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    full_env = {**up_env(tmp_path / "state"), "REDIS_URL": redis_server.url, **env}
    if command[0] == "up":
        del full_env["REDIS_URL"]
    ran = cli(command, full_env, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.count("\n") == 1 and named in ran.stderr, ran.stderr


@pytest.mark.parametrize("command", [["coordinator", "--listen", "127.0.0.1:0"], ["worker"], ["up", "--workers", "1"]])
def test_a_taken_metrics_port_is_one_line_and_exit_5(
    command: list[str], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**up_env(tmp_path / "state"), "REDIS_URL": redis_server.url}
        if command[0] == "up":  # a private Redis, and a free port for the coordinator
            del env["REDIS_URL"]
            command = [*command, "--listen", f"127.0.0.1:{free_ports(1)}"]
        ran = cli([*command, "--metrics-port", f"127.0.0.1:{port}"], env, timeout=60)
    assert ran.returncode == EXIT_IN_USE, ran.stderr
    assert ran.stderr.count("\n") == 1, ran.stderr
    assert f"127.0.0.1:{port}: the port is already in use" in ran.stderr
