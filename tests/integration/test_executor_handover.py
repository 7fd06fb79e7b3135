"""A job handed to a sandbox child that died while it waited is not lost: it runs in a fresh one."""

from __future__ import annotations

import time

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
from scriptpool.v1 import sandbox_pb2
from scriptpool.workers.execution import JobExecutor
from scriptpool.workers.settings import WorkerSettings
from scriptpool.workers.supervision.supervisor import SandboxChild


def _spec(source: str) -> sandbox_pb2.ChildJob:
    spec = sandbox_pb2.ChildJob(language=Language.LUA.to_proto(), source=source, job_id="handover-test")
    for name in LIMIT_FIELDS:
        setattr(spec.limits, name, getattr(DEFAULT_LIMITS, name))
    return spec


def test_a_child_that_died_before_the_handover_is_replaced_and_the_job_runs(redis_server: PrivateRedis) -> None:
    executor = JobExecutor(WorkerSettings(redis_url=redis_server.url, zygote=False, coordinator="127.0.0.1:9"))
    try:
        dead = executor.pool.take()
        dead.handle.kill()
        give_up = time.monotonic() + 5
        while not dead.handle.has_exited() and time.monotonic() < give_up:
            time.sleep(0.01)
        handed: list[SandboxChild] = []

        def racing_take_for(key: object, limits: object) -> tuple[SandboxChild, int]:
            handed.append(dead)  # as if it died right after the pool checked it was alive
            return dead, 0

        executor.pool.take_for = racing_take_for  # type: ignore[method-assign]
        run = executor._run("handover-test", _spec("return 40 + 2"), "spj_unused", None)
    finally:
        executor.close()
    assert handed == [dead]
    assert run.outcome is Outcome.OK and run.result == 42 and run.handed_over
