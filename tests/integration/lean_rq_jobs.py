"""Job functions for `test_lean_rq.py`: each runs inside an RQ worker and reports what RQ's own API
shows while it runs."""

from __future__ import annotations

from typing import Any

from rq import get_current_job
from rq.registry import StartedJobRegistry
from rq.suspension import suspend
from rq.worker import Worker


def value(x: Any) -> Any:
    return x


def fail(message: str) -> None:
    raise ValueError(message)


def observe() -> dict[str, Any]:
    """What `rq info`, rq-dashboard and RQ's API see of this job and its worker while it runs."""
    job = get_current_job()
    assert job is not None
    stored = type(job).fetch(job.id, connection=job.connection)
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + str(stored.worker_name), job.connection)
    assert worker is not None
    return {
        "status": stored.get_status(),
        "started_registry": StartedJobRegistry(job.origin, connection=job.connection).get_job_ids(),
        "worker_state": worker.get_state(),
        "worker_current_job": worker.get_current_job_id(),
        "job_ttl": job.connection.ttl(job.key),
        "listed": worker.name in {w.name for w in Worker.all(connection=job.connection)},
    }


def suspend_workers() -> str:
    """`rq suspend`, from inside a job: the worker must not take another job after this one."""
    job = get_current_job()
    assert job is not None
    suspend(job.connection)
    return "suspended"


def taken_for_dead() -> bool:
    """What the coordinator's sweeper does to a worker whose lease lapsed (it was only paused): RQ's
    `register_death` on it, while this job runs."""
    job = get_current_job()
    assert job is not None
    stored = type(job).fetch(job.id, connection=job.connection)
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + str(stored.worker_name), job.connection)
    assert worker is not None
    worker.register_death()  # type: ignore[no-untyped-call]
    return worker.name in {w.name for w in Worker.all(connection=job.connection)}


def refuse_success(job: Any, connection: Any, result: Any) -> None:
    """An `on_success` callback that fails: RQ then takes its failure path for a job that returned."""
    raise RuntimeError("the success callback refused")
