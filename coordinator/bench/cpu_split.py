"""`scriptpool bench cpu`: CPU per trivial Lua job, split by process, under the throughput load.

Each figure is the difference of /proc readings (utime + stime) taken before and after a batch of
jobs, divided by the number of jobs: the coordinator, the worker processes themselves, their
sandbox side (zygote and children, reaped or alive), redis-server and this process (the load
generator's gRPC clients). With `--coordinator` or `--redis-url` the processes this command did not
start are not measured. `system_busy` is the whole machine's busy time per job, for comparison.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.bench.process_cpu import process_cpu_s, system_busy_s, tree_cpu_s
from scriptpool.coordinator.bench.stats import summarize
from scriptpool.languages import Language

if TYPE_CHECKING:
    from scriptpool.coordinator.bench.cases import Options
    from scriptpool.coordinator.bench.stack import BenchStack


def _readings(stack: BenchStack) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    found = {
        "worker": sum(process_cpu_s(w.pid) for w in stack.workers),
        "sandbox_zygote_and_children": sum(tree_cpu_s(w.pid) - process_cpu_s(w.pid) for w in stack.workers),
        "load_generator": own.ru_utime + own.ru_stime,
        "system_busy": system_busy_s(),
    }
    if stack.coordinator is not None:
        found["coordinator"] = tree_cpu_s(stack.coordinator.pid)
    if stack.redis_pid:
        found["redis"] = process_cpu_s(stack.redis_pid)
    return found


def cpu(stack: BenchStack, options: Options) -> dict[str, Any]:
    stack.scale_workers(options.workers)
    per_job: dict[str, list[float]] = {}
    rates: list[float] = []
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        options.run(client, Language.LUA, max(20, options.jobs // 5))
        for _ in range(options.repeat):
            before = _readings(stack)
            started = time.perf_counter()
            options.run(client, Language.LUA, options.jobs)
            rates.append(options.jobs / (time.perf_counter() - started))
            after = _readings(stack)
            for name, value in after.items():
                per_job.setdefault(name, []).append((value - before[name]) * 1000 / options.jobs)
    processes = [name for name in per_job if name != "system_busy"]
    totals = [sum(per_job[name][run] for name in processes) for run in range(options.repeat)]
    out: dict[str, Any] = {
        "workers": options.workers,
        "load": options.load,
        "lua_jobs_per_s": summarize(rates).as_dict(1),
    }
    for name in processes:
        out[f"{name}_ms_per_job"] = summarize(per_job[name]).as_dict(2)
    out["total_ms_per_job"] = summarize(totals).as_dict(2)
    out["system_busy_ms_per_job"] = summarize(per_job["system_busy"]).as_dict(2)
    return out
