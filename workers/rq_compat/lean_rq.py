"""`LeanSimpleWorker`: RQ's `SimpleWorker` with its per-job Redis writes packed into two transactions.

RQ 3.0's `SimpleWorker` spends about 20 round trips and 60 redis-py commands on each job (a
profile of a scriptpool worker put that at ~60 % of its CPU per trivial job; redis-py costs tens of
microseconds of Python per command and per round trip). This class keeps RQ's own writes, keys and
formats, so `rq info`, rq-dashboard and RQ's APIs (`Job.fetch`, `latest_result()`, the started,
finished and failed registries, `Worker.all()`, worker commands) see the same state, but sends them
as: the dequeue (`LMOVE` + the job's `HGETALL`, one script: `workers/rq_compat/lean_dequeue.py`), **one**
`MULTI` when a job starts and **one** `MULTI` when it finishes. Both transactions are queued on a
redis-py pipeline by RQ's helpers and sent over the lean RESP2 connection of `proto/scriptpool/core/lean_redis.py`
(`_execute`): redis-py's packing and parsing of those ~25 commands were a third of the worker's CPU
per job.

What is reimplemented here, and why (every write below is made by calling RQ's own helpers with a
shared pipeline, never by writing RQ's keys by hand):

- `prepare_execution` does the work of RQ's `prepare_execution` *and* `prepare_job_execution` in
  one transaction (execution hash and registries, worker state `busy`, worker heartbeat, job
  `started` with its heartbeat, `PERSIST`, removal from the intermediate queue); the job's separate
  `last_heartbeat` write is dropped because `Job.prepare_for_execution` writes the same field in
  the same transaction. `prepare_job_execution` then only sets the process title for that job.
- `handle_execution_ended` only sets `ended_at`/`last_heartbeat` in memory: `Job.save` in the
  finishing transaction writes both (RQ wrote `last_heartbeat` in a round trip of its own just
  before). For a failure that RQ retries or a job stopped by a stop-job command it is RQ's.
- `handle_job_success` sends RQ's success writes (counters, working time, `Job._handle_success`:
  status, job hash, result stream, FinishedJobRegistry; `Job.cleanup`; the execution's cleanup)
  plus the worker's `idle` state, its heartbeat and a read of `rq:suspended` in one transaction.
  RQ instead `WATCH`es the job's dependents set, reads it, and moves ready dependents inside the
  transaction; here the transaction counts the dependents (`SCARD`) and, when there are any, RQ's
  own `Queue.enqueue_dependents` runs after the commit (what RQ's failure path does). A dependent
  added before the commit is counted; one added after it finds this job finished when it is
  enqueued, so none is lost. Jobs with repeats left go through RQ's method unchanged.
  The worker's `idle` state reaches Redis in that transaction, a few Python statements before
  RQ would have written it; in memory (what signal handlers look at) it stays `busy` until then.
  The transaction also asks whether RQ still lists the worker (`SISMEMBER rq:workers`): the
  coordinator's sweeper unlists the worker of a job whose lease lapsed, and a worker that was only
  paused lists itself again (`_list_again`).
- `handle_job_failure` does the same for a job that raised: RQ's failure writes (status `failed`,
  FailedJobRegistry with the exception text, the failure result, the failed count) plus the same
  worker writes, in one transaction, so a failed job costs no more round trips than a finished one.
  A job RQ retries (an RQ `Retry`) or stops on a stop-job command goes through RQ's method.
- `heartbeat`, `set_state` and `check_for_suspension` skip a standalone write or read that repeats
  what the finishing transaction has just done: a heartbeat whose key still has nearly the TTL asked
  for (`HEARTBEAT_SLACK_SECONDS`), a state Redis already holds, a suspension check answered by that
  transaction. While idle, RQ's own heartbeats around the blocking dequeue still run.

The job timeout is RQ's SIGALRM death penalty with its handler installed once per process
(`workers/rq_compat/death_penalty.py`). RQ retries, callbacks, worker
registration, signals and pub/sub commands (`send_shutdown_command`, `send_kill_horse_command`,
`send_stop_job_command`) are RQ's code unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.worker import WorkerStatus

from scriptpool.core import rq_internals
from scriptpool.core.lean_redis import Arg, LeanPool, is_transient_reply, read, transaction
from scriptpool.core.rq_internals import WORKERS_SUSPENDED, Execution, now, release_slot
from scriptpool.core.rq_serializers import pass_default_serializer_as_none
from scriptpool.workers import metrics
from scriptpool.workers.rq_compat.death_penalty import AlarmDeathPenalty
from scriptpool.workers.rq_compat.lean_dequeue import lean_queue_class

if TYPE_CHECKING:
    from redis.client import Pipeline

FINISH_RETRY_FIRST_SECONDS = 0.1
"""First wait before sending a job's finishing transaction again after Redis was out of reach."""
FINISH_RETRY_MAX_SECONDS = 2.0
"""Longest wait between attempts (the waits double up to it): an outage is noticed this soon after it ends."""
FINISH_GRACE_AFTER_STOP_SECONDS = 10.0
"""A worker asked to stop (SIGTERM: an operator, a pod ending, or `up` that started it dying) waits
this much longer for Redis to record the end of the job it holds, then exits with
`EXIT_END_NOT_RECORDED`: Redis that does not come back must not leave it running for ever (an
orphan). The job's lease then expires, and the coordinator ends it `worker_lost`."""
EXIT_END_NOT_RECORDED = 1

HEARTBEAT_SLACK_SECONDS = 10
"""A standalone heartbeat is skipped while the worker key's TTL, as last set, is within this many
seconds of the TTL asked for (a busy worker heartbeats in every job's transactions anyway)."""


class LeanSimpleWorker(SimpleWorker):
    """RQ's SimpleWorker, writing the same keys in fewer round trips (see the module docstring)."""

    death_penalty_class = AlarmDeathPenalty  # RQ's SIGALRM timeout, its handler installed once

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeat_expires_at = 0.0
        """Monotonic time at which the worker key expires, as of the last heartbeat sent."""
        self._state_in_redis: str | None = None
        """The worker state last written (None: unknown)."""
        self._not_suspended_checked = False
        """The finishing transaction just read `rq:suspended` and found it absent."""
        self._prepared_job_id: str | None = None
        """The job whose start `prepare_execution` wrote (so `prepare_job_execution` has nothing to do)."""
        self._deferred_job_heartbeat: str | None = None
        """A job whose `last_heartbeat`/`ended_at` are set in memory, for the finishing transaction."""
        self._lean = LeanPool(self.connection)
        """Where the dequeue and the two per-job transactions are sent (`_execute`)."""
        self.queue_class = lean_queue_class(self.queue_class, self.connection, self._lean)
        pass_default_serializer_as_none(self)

    def _execute(self, pipeline: Pipeline) -> list[Any]:
        """Send a pipeline's transaction: RQ's helpers queue the commands on a redis-py pipeline, and
        they go out as one write over the lean RESP2 connection (`proto/scriptpool/core/lean_redis.py`), whose
        packing and parsing cost a fraction of redis-py's. Replies are raw (bytes, int, lists)."""
        if not self._lean.supported:
            return pipeline.execute()
        commands = [args for args, _ in pipeline.command_stack]
        pipeline.reset()
        return transaction(self._lean, commands)

    # --- what a subclass adds to the two transactions -------------------------------------------

    def job_start_commands(self, job: Job) -> list[tuple[Arg, ...]]:
        """Commands a subclass sends inside `job`'s start transaction, after RQ's own (scriptpool's
        claim on its job record: one round trip instead of two). Their replies go to `job_started`."""
        return []

    def job_started(self, job: Job, replies: list[Any]) -> None:
        """The replies to `job_start_commands`, once the start transaction has run."""

    def job_finish_commands(self, job: Job) -> list[tuple[Arg, ...]]:
        """Commands a subclass sends inside `job`'s finishing transaction, finished or failed (after
        RQ's writes, before the suspension and dependents reads). Their replies are not used."""
        return []

    def teardown(self) -> None:
        """RQ's deregistration; with Redis out of reach the worker still exits cleanly (its key
        expires with its TTL, and RQ's registry clean-up drops it)."""
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.log.warning("Worker %s: Redis out of reach at exit, not deregistered (%s)", self.name, exc)
        finally:
            self._lean.close()

    def set_shutdown_requested_date(self) -> None:
        """Called from the SIGTERM handler: Redis out of reach there must not raise into the job
        being finished (it would quit the worker with a traceback instead of a warm shutdown)."""
        try:
            super().set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.log.warning("Worker %s: stopping; Redis out of reach to record it (%s)", self.name, exc)

    # --- skipping writes that repeat the last transaction -------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        ttl = timeout or self.worker_ttl + 60
        if pipeline is not None:  # known only once the pipeline has run: see _sent_in_transaction
            self._heartbeat_expires_at = 0.0
            super().heartbeat(ttl, pipeline=pipeline)
            return
        if self._heartbeat_expires_at - time.monotonic() >= ttl - HEARTBEAT_SLACK_SECONDS:
            return
        super().heartbeat(ttl)
        self._heartbeat_expires_at = time.monotonic() + ttl

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            self._state_in_redis = None
        elif state == self._state_in_redis:
            rq_internals.set_state_in_memory(self, state)
            return
        super().set_state(state, pipeline=pipeline)
        if pipeline is None:
            self._state_in_redis = state

    def _sent_in_transaction(self, state: str, heartbeat_ttl: int) -> None:
        """Record the state and heartbeat a transaction of ours has just written."""
        self._state_in_redis = state
        self._heartbeat_expires_at = time.monotonic() + heartbeat_ttl

    def check_for_suspension(self, burst: bool) -> None:
        if self._not_suspended_checked:
            self._not_suspended_checked = False
            return
        super().check_for_suspension(burst)

    # --- one transaction to start a job ---------------------------------------------------------

    def prepare_execution(self, job: Job) -> Execution:
        with self.connection.pipeline() as pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            execution = Execution.create(job, heartbeat_ttl, pipeline=pipeline, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if len(self.queues) == 1:  # what RQ's perform_job passes as remove_from_intermediate_queue
                pipeline.lrem(self._queue_of(job).intermediate_queue_key, 1, job.id)
            extra = self.job_start_commands(job)
            for command in extra:
                pipeline.execute_command(*command)  # type: ignore[no-untyped-call]
            replies = self._execute(pipeline)
        self._sent_in_transaction(WorkerStatus.BUSY, heartbeat_ttl)
        if extra:
            self.job_started(job, replies[len(replies) - len(extra) :])
        self._prepared_job_id = job.id
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._prepared_job_id != job.id:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        self._prepared_job_id = None
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[no-untyped-call]

    def _queue_of(self, job: Job) -> Queue:
        for queue in self.queues:
            if queue.name == job.origin:
                return queue
        return Queue(job.origin, connection=self.connection)

    # --- one transaction to finish a job --------------------------------------------------------

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        status = job.get_status(refresh=False)  # the failure path sets FAILED first
        if status != JobStatus.STARTED and not (status == JobStatus.FAILED and self._lean_failure(job)):
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = job.last_heartbeat = now()
        self._deferred_job_heartbeat = job.id

    def handle_job_retry(self, job: Job, queue: Queue, retry: Any, started_job_registry: Any, execution: Any) -> None:
        self._write_deferred_job_heartbeat(job)
        super().handle_job_retry(job, queue, retry, started_job_registry, execution)

    def _write_deferred_job_heartbeat(self, job: Job) -> None:
        if self._deferred_job_heartbeat == job.id:
            self._deferred_job_heartbeat = None
            job.heartbeat(job.last_heartbeat or now(), 0)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        if job.repeats_left is not None and job.repeats_left > 0:
            self._write_deferred_job_heartbeat(job)
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        self._deferred_job_heartbeat = None  # Job.save below writes last_heartbeat and ended_at
        assert job.started_at is not None and job.ended_at is not None
        working_time: timedelta = job.ended_at - job.started_at
        with self.connection.pipeline() as pipeline:
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(working_time, pipeline)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                rq_internals.handle_success(
                    job,
                    result_ttl,
                    pipeline=pipeline,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            self._end_job_transaction(job, queue, pipeline)
        if self.log.isEnabledFor(logging.INFO):
            done = job.description if self.log_job_description else f"job {job.id}"
            self.log.info("Successfully completed %s in %ss on worker %s", done, working_time, self.name)

    def _lean_failure(self, job: Job) -> bool:
        """Whether a failed job's end goes in one transaction (`handle_job_failure`): not when RQ
        retries it (an RQ `Retry`, which scriptpool jobs never have), stops it on a stop-job command,
        or skips its failure record (`disable_default_exception_handler`)."""
        return not (job.should_retry or rq_internals.stopping_job(self, job) or self.disable_default_exception_handler)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's failure writes (status `failed`, the execution's cleanup, FailedJobRegistry with
        `exc_string`, the failure result, the failed count and working time) in one transaction with
        the worker's `idle` state and heartbeat and what a subclass adds (`job_finish_commands`), as
        on the success path: a failed job costs the same round trips as a finished one. A retry, a
        stopped job, or no execution: RQ's own method."""
        if execution is None or not self._lean_failure(job):
            self._write_deferred_job_heartbeat(job)
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        self._deferred_job_heartbeat = None  # FailedJobRegistry.add saves the job: last_heartbeat, ended_at
        with self.connection.pipeline() as pipeline:
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            rq_internals.handle_failure(
                job,
                exc_string,
                pipeline,
                worker_name=self.name,
                execution_id=execution.id,
                execution_started_at=execution.created_at,
                execution_ended_at=job.ended_at,
            )
            self.increment_failed_job_count(pipeline)
            if job.started_at and job.ended_at:
                self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            self._end_job_transaction(job, queue, pipeline)
        job.send_webhooks(JobStatus.FAILED, exc_string=exc_string)

    def _end_job_transaction(self, job: Job, queue: Queue, pipeline: Pipeline) -> None:
        """Add the worker's side of a job's end to `pipeline` (which holds RQ's writes for the job),
        send it as one transaction, then enqueue the job's dependents if it has any."""
        self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
        # Only Redis hears `idle` now; in memory the worker stays busy until SimpleWorker's
        # execute_job says idle (a warm-shutdown signal in between must find it busy: RQ's
        # `_shutdown` raises StopRequested out of an idle worker, and perform_job would take
        # that for this job failing).
        rq_internals.set_state_in_memory(self, WorkerStatus.BUSY)
        self.heartbeat(pipeline=pipeline)
        for command in self.job_finish_commands(job):
            pipeline.execute_command(*command)  # type: ignore[no-untyped-call]
        pipeline.sismember(self.redis_workers_keys, self.key)
        pipeline.exists(WORKERS_SUSPENDED)
        pipeline.scard(job.dependents_key)
        if self._lean.supported:
            commands = [args for args, _ in pipeline.command_stack]
            pipeline.reset()
            *_, listed, suspended, dependents = self._deliver_job_end(job, commands)
        else:
            *_, listed, suspended, dependents = pipeline.execute()
        self._sent_in_transaction(WorkerStatus.IDLE, self.worker_ttl + 60)
        self._not_suspended_checked = not suspended
        if not listed:
            self._list_again()
        if dependents:
            rq_internals.enqueue_dependents(self, queue, job)
        release_slot(job)

    def _list_again(self) -> None:
        """List this worker in RQ again after RQ's worker list dropped it while it lived: the
        coordinator's sweeper does that to the worker of a job whose lease lapsed (it takes it for
        dead; it was only paused, e.g. SIGSTOP or a VM pause). RQ's `register_birth` writes, without
        its refusal of a name whose key is there and the reset of the worker's counts."""
        self.log.warning("Worker %s: RQ's worker list had dropped it (taken for dead); listed again", self.name)
        with self.connection.pipeline() as pipeline:
            pipeline.hdel(self.key, "death")
            pipeline.hset(self.key, mapping=self.serialize())
            rq_internals.register_worker(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def _give_up_job_end(self, job: Job) -> NoReturn:
        """Exit without recording the end of `job` (Redis stayed out of reach after a stop request).
        `os._exit`: RQ's job code catches every exception, SystemExit included, and would try Redis
        again; the sandbox children end with this process (their parent-death signal)."""
        self.log.error(
            "Worker %s: asked to stop, and Redis stayed out of reach for %.0fs more: exiting without "
            "recording the end of job %s (it ends worker_lost when its lease expires)",
            self.name, FINISH_GRACE_AFTER_STOP_SECONDS, job.id,
        )  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_END_NOT_RECORDED)

    def _deliver_job_end(self, job: Job, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Send a job's finishing transaction, waiting out a Redis outage (the worker holds the only
        copy of the result): on a lost connection, or Redis loading its data after a restart, or busy
        with a script, back off (`FINISH_RETRY_*`) and send it again, until it is delivered. MULTI/EXEC
        is all or nothing, so before sending again the job's status in RQ tells whether the lost
        attempt ran (then it is not sent twice; its replies are lost, so the suspension check and the
        dependents are left to RQ's own code). A second SIGINT/SIGTERM (cold shutdown) ends the wait, and so
        does `FINISH_GRACE_AFTER_STOP_SECONDS` after a first one."""
        wait = FINISH_RETRY_FIRST_SECONDS
        stop_seen: float | None = None
        while True:
            try:
                return transaction(self._lean, commands)
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not is_transient_reply(exc):
                    raise
                metrics.REDIS_ERRORS.inc()
                self.log.warning(
                    "Worker %s: Redis unavailable while recording the end of job %s (%s); retrying in %.1fs",
                    self.name, job.id, exc, wait,
                )  # fmt: skip
            if rq_internals.stop_requested(self):
                stop_seen = time.monotonic() if stop_seen is None else stop_seen
                if time.monotonic() - stop_seen >= FINISH_GRACE_AFTER_STOP_SECONDS:
                    self._give_up_job_end(job)
            time.sleep(wait)
            wait = min(wait * 2, FINISH_RETRY_MAX_SECONDS)
            try:
                status = read(self._lean, "HGET", job.key, "status")
            except (RedisConnectionError, RedisTimeoutError, ResponseError):
                continue  # still out of reach (or loading): wait on
            if status != JobStatus.STARTED.encode():
                self.log.warning("Worker %s: the end of job %s was recorded before the outage", self.name, job.id)
                # (listed: assumed; suspension: check again; dependents: RQ's)
                return [*[None] * (len(commands) - 3), 1, 1, 1]
