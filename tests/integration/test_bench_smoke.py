"""`scriptpool bench` runs and produces sane numbers (figures themselves are not asserted: no timed tests)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import CLI
from tests.integration.up_process import alive, descendants


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


@pytest.mark.slow
def test_bench_all_runs_and_reports_every_figure_with_its_baseline() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCRIPTPOOL_COORDINATOR")}
    namespaces_before = _namespaces()
    result = subprocess.run(
        [*CLI, "bench", "all", "--jobs", "12", "--repeat", "1",
         "--calls", "20", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    cases = {c["case"]: c for c in map(json.loads, result.stdout.splitlines())}
    assert _namespaces() == namespaces_before  # `scale`'s namespace hosts are gone with it
    assert set(cases) == {
        "throughput", "latency", "callbacks", "sessions", "sandbox", "scale", "memory", "artifacts", "worker", "cpu",
        "waits",
    }  # fmt: skip
    throughput = cases["throughput"]
    for key in ("workers", "jobs_per_s", "rq_fork_jobs_per_s", "rq_simple_jobs_per_s", "ratio_vs_rq_fork",
                "ratio_vs_rq_simple"):  # fmt: skip
        assert throughput[key] > 0, key
    # each Lua run is paired with the baseline run next to it: the ratio is the median of the pairs'
    assert throughput["ratio_vs_rq_simple"] == throughput["ratio_vs_rq_simple_per_pair"]["median"]
    assert throughput["ratio_vs_rq_simple_per_pair"]["n"] == 1
    assert throughput["jobs_per_s"] == throughput["lua_jobs_per_s"]["median"]  # the batched load
    assert throughput["lua_jobs_per_s"]["n"] == 2  # one run paired with each baseline
    assert throughput["per_call_ratio_vs_rq_simple"] == pytest.approx(
        throughput["lua_per_call_jobs_per_s"]["median"] / throughput["rq_simple_jobs_per_s"], rel=0.01
    )
    assert cases["scale"]["load"] == cases["cpu"]["load"] == "batched"
    assert 0 < cases["latency"]["lua_submit_to_result_ms"]["median"] < 10_000
    assert cases["callbacks"]["raw_grpc_unary_us"]["median"] > 0
    callbacks = cases["callbacks"]
    assert callbacks["global_call_us"]["n"] == 19  # one gap between each of the 20 recorded calls
    assert 0 < callbacks["global_call_us"]["median"] <= callbacks["global_call_us"]["p99"]
    assert cases["sessions"]["lua_job_create_get_update_per_s"]["median"] > 0
    assert cases["sandbox"]["lua"]["bare_engine_ms"]["median"] > 0
    scale = cases["scale"]
    assert scale["scaling_1_to_2"] > 0 and scale["rq_simple_scaling_1_to_2"] > 0
    assert scale["scaling_ratio_vs_rq_simple"] == pytest.approx(
        scale["scaling_1_to_2"] / scale["rq_simple_scaling_1_to_2"], rel=0.01
    )
    for figure in ("lua_jobs_per_s_4_workers", "rq_simple_jobs_per_s_4_workers", "lua_jobs_per_s_2_hosts"):
        assert scale[figure]["median"] > 0, figure
    assert "two_hosts_unavailable" not in scale  # this machine can make network namespaces
    assert scale["two_hosts_vs_one_host_2_workers"] == pytest.approx(
        scale["lua_jobs_per_s_2_hosts"]["median"] / scale["lua_jobs_per_s_2_workers"]["median"], rel=0.01
    )
    assert scale["cores"] == len(os.sched_getaffinity(0))
    assert 0 < scale["busy_cores_1_worker"]["median"] <= scale["cores"] + 0.5  # /proc/stat ticks are coarse
    assert scale["ceiling_1_to_2_on_this_machine"] == pytest.approx(
        scale["cores"] / scale["busy_cores_1_worker"]["median"], rel=0.01
    )
    assert cases["memory"]["idle_worker_rss_mb"] > 1 and cases["memory"]["coordinator_rss_mb"] > 1
    assert cases["memory"]["worker_zygote_and_spare_rss_mb"] > 1  # the zygote and its waiting spare
    assert cases["artifacts"]["10MB_mb_per_s"]["median"] > 0 and cases["artifacts"]["10MB_ratio_vs_raw_redis"] > 0
    worker = cases["worker"]
    assert worker["rq_bookkeeping_ms_per_job"]["median"] > 0 and worker["bookkeeping_ratio_vs_rq_simple"] > 0
    assert worker["worker_cpu_ms_per_lua_job"]["n"] == 1
    cpu = cases["cpu"]
    parts = ("worker", "sandbox_zygote_and_children", "coordinator", "redis", "load_generator")
    # 12 jobs are below /proc's 10 ms tick for some processes: sane, not necessarily non-zero
    assert all(cpu[f"{part}_ms_per_job"]["median"] >= 0 for part in parts)
    waits = cases["waits"]
    assert waits["waits_answered"] == waits["waiting_calls"] == 1000  # each held, then answered finished
    assert waits["get_job_ms_1000_waits"]["n"] == waits["get_job_ms_no_waits"]["n"] == 100
    assert waits["ratio_p50_with_waits_vs_without"] > 0
    total = cpu["total_ms_per_job"]["median"]
    assert total > 0 and abs(total - sum(cpu[f"{part}_ms_per_job"]["median"] for part in parts)) < 0.1


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_terminated_bench_stops_the_stack_it_started(how: str) -> None:
    """SIGTERM mid-run: the bench stops its private redis-server, coordinator and workers. SIGKILL:
    they go anyway (each was started to die with the bench, `proto/scriptpool/core/die_with_parent.py`)."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCRIPTPOOL_COORDINATOR")}
    bench = subprocess.Popen(
        [*CLI, "bench", "throughput", "--jobs", "2000", "--repeat", "5"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up and len(descendants(bench.pid)) < 4:  # redis, coordinator, workers
            time.sleep(0.2)
        started = descendants(bench.pid)
        assert len(started) >= 4
        bench.send_signal(getattr(signal, how))
        bench.wait(timeout=60)
        gone_by = time.monotonic() + 30
        while time.monotonic() < gone_by and any(alive(pid) for pid in started):
            time.sleep(0.2)
        assert not [pid for pid in started if alive(pid)]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
