"""`scriptpool bench worker`: CPU a worker spends per job, and the part of it that is RQ's bookkeeping.

- `rq_bookkeeping_ms_per_job`: no-op jobs run in this process, in burst mode, by RQ's own
  `SimpleWorker` and by the scriptpool worker's `LeanSimpleWorker` (`workers/rq_compat/lean_rq.py`), turn
  about; CPU time (user + system) per job. No sandbox, no coordinator: only what RQ does per job.
- `worker_cpu_ms_per_lua_job`: one scriptpool worker serving trivial Lua jobs submitted over gRPC;
  its own utime + stime from `/proc` per job (its zygote and sandbox children are not counted).
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue, SimpleWorker

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.bench.process_cpu import process_cpu_s
from scriptpool.coordinator.bench.stats import ratio, summarize
from scriptpool.core.redis_urls import open_client
from scriptpool.languages import Language
from scriptpool.workers.rq_compat.lean_rq import LeanSimpleWorker

if TYPE_CHECKING:
    from scriptpool.coordinator.bench.cases import Options
    from scriptpool.coordinator.bench.stack import BenchStack

BOOKKEEPING_QUEUE = "rq-bookkeeping"


def _rq_cpu_ms_per_job(redis: Redis, worker_class: type[SimpleWorker], count: int, run: int) -> float:
    queue = Queue(BOOKKEEPING_QUEUE, connection=redis)
    with redis.pipeline() as pipe:
        jobs = [
            queue.enqueue("scriptpool.coordinator.bench.noop.noop", result_ttl=600, pipeline=pipe) for _ in range(count)
        ]
        pipe.execute()
    worker = worker_class([queue], connection=redis, name=f"bench-{worker_class.__name__}-{os.getpid()}-{run}")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    started = time.process_time()
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():  # RQ's work() installs its own
            signal.signal(sig, handler)
    spent = time.process_time() - started
    with redis.pipeline() as pipe:
        for job in jobs:
            job.delete(pipeline=pipe)
        pipe.execute()
    return spent * 1000 / count


def worker(stack: BenchStack, options: Options) -> dict[str, Any]:
    redis = open_client(stack.redis_url, protocol=2)  # what the scriptpool worker gives RQ
    count = max(50, options.jobs)
    try:
        _rq_cpu_ms_per_job(redis, LeanSimpleWorker, 20, -1)  # warm-up (imports, scripts)
        rq_runs: list[float] = []
        lean_runs: list[float] = []
        for run in range(options.repeat):
            rq_runs.append(_rq_cpu_ms_per_job(redis, SimpleWorker, count, run))
            lean_runs.append(_rq_cpu_ms_per_job(redis, LeanSimpleWorker, count, run))
    finally:
        redis.close()
    rq_simple, lean = summarize(rq_runs), summarize(lean_runs)

    stack.scale_workers(1)
    pid = stack.workers[0].pid
    per_job: list[float] = []
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        options.run(client, Language.LUA, max(20, options.jobs // 5))
        for _ in range(options.repeat):
            before = process_cpu_s(pid)
            options.run(client, Language.LUA, options.jobs)
            per_job.append((process_cpu_s(pid) - before) * 1000 / options.jobs)
    return {
        "rq_bookkeeping_ms_per_job": lean.as_dict(3),
        "rq_simple_worker_bookkeeping_ms_per_job": rq_simple.as_dict(3),
        "bookkeeping_ratio_vs_rq_simple": ratio(lean.median, rq_simple.median),
        "worker_cpu_ms_per_lua_job": summarize(per_job).as_dict(2),
    }
