"""`scriptpool worker`: an RQ worker whose jobs run in sandbox children.

It is an RQ `SimpleWorker` (the job function runs in the worker process, no fork per job by RQ)
whose per-job bookkeeping goes to Redis in two transactions (`workers/rq_compat/lean_rq.py`):
the job function itself hands the script to a pre-forked, jailed sandbox child and supervises it.
Signals follow RQ: the first SIGINT/SIGTERM finishes the current job then exits (warm), a second
one kills the running child and exits at once (cold). Exit codes (`scriptpool worker`): 0 after a
clean stop; at start-up, one line on stderr and 2 for bad settings or a malformed Redis URL, 3 when
Redis cannot be reached (`proto/scriptpool/core/redis_connect.py`), 4 when a required jail layer is
missing on this host (`proto/scriptpool/sandbox/jail/policy.py`): the jail is checked first.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job

from scriptpool.core import redis_connect, rq_dates, rq_internals, rq_serializers
from scriptpool.core.durability import check_ack_after_fsync
from scriptpool.core.job_records import LEGACY_RQ_FUNCTIONS, RQ_FUNCTION
from scriptpool.core.lean_redis import Arg
from scriptpool.core.metrics import serve_metrics
from scriptpool.core.rq_internals import Execution
from scriptpool.sandbox.jail import require_jail
from scriptpool.sandbox.runner import prewarm
from scriptpool.workers import metrics, rq_entry
from scriptpool.workers.execution import JobExecutor
from scriptpool.workers.rq_compat.lean_rq import LeanSimpleWorker
from scriptpool.workers.rq_entry import JobNotOk
from scriptpool.workers.settings import WorkerSettings

log = logging.getLogger(__name__)


class ScriptpoolJob(Job):
    """An RQ job whose function name, when an older version wrote it (`LEGACY_RQ_FUNCTIONS`), reads as
    the name it has now: a job queued before an upgrade in place runs, and is recognised as a scriptpool
    job, like one queued after it. The job hash keeps what was written."""

    @property
    def func_name(self) -> str | None:
        name = super().func_name
        return LEGACY_RQ_FUNCTIONS.get(name, name) if name is not None else None

    @func_name.setter
    def func_name(self, value: str | None) -> None:
        rq_internals.set_job_func_name(self, value)  # RQ's own setter


class ScriptpoolWorker(LeanSimpleWorker):
    """An RQ SimpleWorker (with its per-job writes packed, `workers/rq_compat/lean_rq.py`); kept as its own class
    so `rq info` shows what runs the queue. A scriptpool job's claim on its record travels in RQ's
    start transaction and its finish in RQ's finishing transaction (two round trips fewer per job);
    when RQ takes another path (failure, repeats), the finish is sent on its own."""

    job_class = ScriptpoolJob

    def __init__(self, *args: Any, executor: JobExecutor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor = executor
        self._not_ok: dict[str, str] = {}
        """Jobs that ended not `ok` (`JobNotOk`) -> the text RQ records as their failure."""

    def handle_exception(
        self, job: Job, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """A job that ended not `ok` is an outcome, not a worker error: one INFO line, and RQ records
        its failure as "JobNotOk: outcome: message" (no traceback). Any other exception is RQ's."""
        if not isinstance(exc, JobNotOk):
            super().handle_exception(job, exc_type, exc, tb)
            return
        self.log.info("Worker %s: job %s ended %s", self.name, job.id, exc.outcome)
        self._not_ok[job.id] = f"{JobNotOk.__name__}: {exc}"

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        exc_string = self._not_ok.pop(job.id, exc_string)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    @staticmethod
    def _scriptpool_job_id(job: Job) -> str | None:
        if job.func_name != RQ_FUNCTION or len(job.args) != 1 or not isinstance(job.args[0], str):
            return None
        return job.args[0]

    def job_start_commands(self, job: Job) -> list[tuple[Arg, ...]]:
        job_id = self._scriptpool_job_id(job)
        return [] if job_id is None else [self.executor.claim_command(job_id)]

    def job_started(self, job: Job, replies: list[Any]) -> None:
        job_id = self._scriptpool_job_id(job)
        if job_id is not None:
            self.executor.claim_answered(job_id, replies[0])

    def job_finish_commands(self, job: Job) -> list[tuple[Arg, ...]]:
        job_id = self._scriptpool_job_id(job)
        return [] if job_id is None else self.executor.finish_commands(job_id)

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        job_id = self._scriptpool_job_id(job)
        if job_id is not None:
            self.executor.queue_waits[job_id] = metrics.seconds_since(job.enqueued_at)
        metrics.set_busy(True)
        try:
            return super().perform_job(job, queue, execution)
        finally:
            metrics.set_busy(False)
            if job_id is not None:
                self.executor.finish_pending(job_id)


def run_worker(settings: WorkerSettings, *, burst: bool = False, logging_level: str = "WARNING") -> None:
    rq_dates.install()  # RQ's date parsing and formatting, identical and faster
    rq_serializers.install()  # RQ's serializer check, remembered per serializer
    # First: a taken metrics port stops the worker before it probes, connects or forks anything.
    metrics.set_busy(False)
    metrics_server = serve_metrics(settings.metrics, metrics.REGISTRY) if settings.metrics is not None else None
    if metrics_server is not None:
        log.warning("scriptpool worker %s: metrics on http://%s/metrics", settings.name, metrics_server.address)
    try:
        # Redis before the jail: a start-up error is then its one line, not after the jail's log line.
        redis = redis_connect.connect(settings.redis_url)  # one line naming the URL if it is bad or down
        if settings.ack_after_fsync:
            check_ack_after_fsync(redis, settings.redis_url)
        report = require_jail(settings.jail_policy)  # JailIncomplete when a required layer is missing
        log.warning("scriptpool worker %s: sandbox jail %s", settings.name, report.summary())
        for layer, why in settings.jail_policy.missing_allowed(report).items():
            log.warning(
                "scriptpool worker %s: running WITHOUT the %s layer (%s), as allowed", settings.name, layer, why
            )
        metrics.record_jail(report)
        _work(settings, redis, burst=burst, logging_level=logging_level)
    finally:
        if metrics_server is not None:
            metrics_server.close()


def _work(settings: WorkerSettings, redis: Redis, *, burst: bool, logging_level: str) -> None:
    if not settings.zygote:  # otherwise the zygote warms the engines, and the worker never runs them
        log.info("scriptpool worker %s: engines ready: %s", settings.name, ", ".join(prewarm()))
    executor = JobExecutor(settings, redis)
    rq_entry.install_executor(executor)
    executor.pool.refill()
    # RQ's own connection speaks RESP2: redis-py 8's default, RESP3, has a pure-Python parser that
    # takes about twice as long over the job hash RQ reads for every job.
    rq_redis = Redis.from_url(settings.redis_url, protocol=2)
    try:
        worker = ScriptpoolWorker(
            [Queue(name, connection=rq_redis) for name in settings.listen_queues()],
            connection=rq_redis,
            name=settings.name,
            executor=executor,
        )
        worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)
    finally:
        rq_entry.install_executor(None)
        executor.close()
        rq_redis.close()
