"""`scriptpool worker`: an RQ worker whose jobs run in sandbox children.

It is an RQ `SimpleWorker` (the job function runs in the worker process, no fork per job by RQ)
whose per-job bookkeeping goes to Redis in two transactions (`workers/lean_rq.py`):
the job function itself hands the script to a pre-forked, jailed sandbox child and supervises it.
Signals follow RQ: the first SIGINT/SIGTERM finishes the current job then exits (warm), a second
one kills the running child and exits at once (cold). Exit codes: 0 after a clean stop, 1 when
start-up fails (bad settings, Redis unreachable).
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue

from sandbox.jail import probe_host
from sandbox.runner import prewarm
from workers import rq_entry
from workers.execution import JobExecutor
from workers.lean_rq import LeanSimpleWorker
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)


class ScriptpoolWorker(LeanSimpleWorker):
    """An RQ SimpleWorker (with its per-job writes packed, `workers/lean_rq.py`); kept as its own class
    so `rq info` shows what runs the queue."""


def run_worker(settings: WorkerSettings, *, burst: bool = False, logging_level: str = "WARNING") -> None:
    redis = Redis.from_url(settings.redis_url, protocol=2)  # RESP2: redis-py parses it in half the time
    redis.ping()
    report = probe_host()
    log.warning("scriptpool worker %s: sandbox jail %s", settings.name, report.summary())
    if not settings.zygote:  # otherwise the zygote warms the engines, and the worker never runs them
        log.info("scriptpool worker %s: engines ready: %s", settings.name, ", ".join(prewarm()))
    executor = JobExecutor(settings, redis)
    rq_entry.install_executor(executor)
    executor.pool.refill()
    # RQ's own connection speaks RESP2: redis-py 8's default, RESP3, has a pure-Python parser that
    # takes about twice as long over the job hash RQ reads for every job (no hiredis here).
    rq_redis = Redis.from_url(settings.redis_url, protocol=2)
    try:
        worker = ScriptpoolWorker([Queue(settings.queue, connection=rq_redis)], connection=rq_redis, name=settings.name)
        worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)
    finally:
        rq_entry.install_executor(None)
        executor.close()
        rq_redis.close()
