"""Every use scriptpool makes of RQ beyond its documented API, in one module.

RQ's documented surface is `Queue`, `Worker`/`SimpleWorker` and their public methods, `Job`, the
registries, the serializers and the exceptions. Past it, for measured reasons (docs/PERFORMANCE.md,
ADR 0002, ADR 0006), scriptpool uses the names below; nothing else in the project touches an RQ
name that starts with `_`, imports an RQ module outside the documented ones, or replaces anything
inside RQ (`tests/unit/test_private_api_pins.py` checks all three). RQ is pinned (pyproject.toml);
an upgrade fails that test until this module has been read against the new version.

- the worker's per-job bookkeeping in two transactions (`workers/rq_compat/lean_rq.py`):
  `Job._handle_success`, `Job._handle_failure` (a job that ended not `ok`, failed in RQ in the same
  one transaction), the job a stop command is stopping `Worker._stopped_job_id`, the worker's
  in-memory state `Worker._state`, `Worker._stop_requested`,
  `Worker._enqueue_dependents_safely`, and the undocumented `Execution`, `release_slot`,
  `WORKERS_SUSPENDED`, `now`, and `worker_registration.register` (a live worker the coordinator's
  sweeper took for dead lists itself again);
- the lean dequeue (`workers/rq_compat/lean_dequeue.py`): `IntermediateQueue`, `get_version`;
- a retry or a `worker_lost` in one transaction (`coordinator/sweeper.py`): `Queue._enqueue_job`,
  `record_job_failure`, `Execution`;
- the job class that reads a legacy function name (`workers/worker.py`): RQ's own `func_name` setter;
- the drop-ins in `scriptpool.core.rq_dates` and `rq_serializers`: the module globals of `rq.job`,
  `rq.registry` and `rq.results` they replace.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import rq.job
import rq.registry
import rq.results
import rq.serializers
import rq.utils
import rq.worker_registration
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job_lifecycle import record_job_failure
from rq.rate_limit import release_slot
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import get_version, now

if TYPE_CHECKING:
    from redis.client import Pipeline
    from rq import Queue
    from rq.job import Job
    from rq.worker import BaseWorker

RQ_RESOLVE_SERIALIZER: Callable[..., Any] = rq.serializers.resolve_serializer
"""RQ's own serializer check, before `install_serializer_resolver` replaces it."""
RQ_STR_TO_DATE: Callable[[bytes | str], datetime] = rq.utils.str_to_date
RQ_UTCFORMAT: Callable[[datetime], str] = rq.utils.utcformat
WORKERS_BY_QUEUE_KEY: str = rq.worker_registration.WORKERS_BY_QUEUE_KEY
"""RQ's per-queue worker set key pattern (`% queue_name`), read by the coordinator's metrics."""
MODULES_THAT_RESOLVE = (rq.job, rq.registry, rq.results)
"""The RQ modules whose per-job objects resolve a serializer (each imported the name itself)."""


# --- the worker ---------------------------------------------------------------------------------


def handle_success(job: Job, result_ttl: int, pipeline: Pipeline, **execution: Any) -> None:
    """RQ's success writes for `job` (result, status, registries), queued on `pipeline`."""
    job._handle_success(result_ttl, pipeline=pipeline, **execution)


def handle_failure(job: Job, exc_string: str, pipeline: Pipeline, **execution: Any) -> None:
    """RQ's failure writes for `job` (FailedJobRegistry with `exc_string`, the failure result),
    queued on `pipeline` (the status is set by the caller, as RQ's worker does)."""
    job._handle_failure(exc_string, pipeline, **execution)


def stopping_job(worker: BaseWorker, job: Job) -> bool:
    """Whether `job` is the one an RQ stop-job command is stopping (RQ marks it STOPPED, not FAILED)."""
    return bool(worker._stopped_job_id == job.id)


def set_state_in_memory(worker: BaseWorker, state: str) -> None:
    """The worker's state as RQ's own code reads it, without writing it to Redis."""
    worker._state = state


def stop_requested(worker: BaseWorker) -> bool:
    """Whether the worker has been asked to stop (a first SIGINT/SIGTERM)."""
    return bool(worker._stop_requested)


def enqueue_dependents(worker: BaseWorker, queue: Queue, job: Job) -> None:
    """RQ's enqueueing of `job`'s dependents, as its own success path does it."""
    worker._enqueue_dependents_safely(queue, job)


def register_worker(worker: BaseWorker, pipeline: Pipeline) -> None:
    """RQ's listing of `worker` in its worker sets (what `register_birth` does besides its hash)."""
    rq.worker_registration.register(worker, pipeline)


def set_job_func_name(job: Job, value: str | None) -> None:
    """RQ's own `Job.func_name` setter (for a subclass that overrides the property)."""
    rq.job.Job.__dict__["func_name"].__set__(job, value)


# --- the queue ----------------------------------------------------------------------------------


def enqueue_in_transaction(queue: Queue, job: Job, pipeline: Pipeline, *, at_front: bool) -> None:
    """Put an existing `job` back on `queue` within `pipeline` (RQ's `Job.retry`, minus its
    `retries_left` bookkeeping)."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=at_front)


# --- replacing RQ's module globals ---------------------------------------------------------------


def install_date_helpers(str_to_date: Callable[[bytes | str], datetime], utcformat: Callable[[datetime], str]) -> None:
    """Make RQ's `Job` parse and format dates with these (the names `rq.job` imported from `rq.utils`)."""
    setattr(rq.job, "str_to_date", str_to_date)  # noqa: B010 - replacing a function of RQ's module
    setattr(rq.job, "utcformat", utcformat)  # noqa: B010


def install_serializer_resolver(resolve: Callable[..., Any]) -> None:
    """Make RQ's `Job`, `Result` and registries resolve their serializer through `resolve`."""
    for module in MODULES_THAT_RESOLVE:
        module.resolve_serializer = resolve  # type: ignore[attr-defined]


__all__ = [
    "MODULES_THAT_RESOLVE",
    "RQ_RESOLVE_SERIALIZER",
    "RQ_STR_TO_DATE",
    "RQ_UTCFORMAT",
    "WORKERS_SUSPENDED",
    "Execution",
    "IntermediateQueue",
    "enqueue_dependents",
    "enqueue_in_transaction",
    "get_version",
    "handle_failure",
    "handle_success",
    "install_date_helpers",
    "install_serializer_resolver",
    "now",
    "record_job_failure",
    "register_worker",
    "release_slot",
    "set_job_func_name",
    "set_state_in_memory",
    "stop_requested",
    "stopping_job",
]
