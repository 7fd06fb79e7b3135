"""Finish jobs whose worker vanished: a running job whose lease expired ends as `worker_lost`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scriptpool.v1 import jobs_pb2

from sandbox.outcomes import Outcome
from workers.job_records import LEASES_KEY, JobRecords, JobState

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0


class LeaseSweeper:
    def __init__(self, records: JobRecords, result_ttl_seconds: int) -> None:
        self.records = records
        self.result_ttl_seconds = result_ttl_seconds
        self.also: list[Callable[[], object]] = []
        """Other sweeps run after each lease sweep (each catches its own errors)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def sweep_once(self) -> int:
        swept = 0
        now = time.time()
        for job_id in self.records.expired_leases(now):
            result = jobs_pb2.JobResult(
                outcome=Outcome.WORKER_LOST.to_proto(),
                message="the worker running this job stopped responding; the job did not finish",
            )
            if self.records.finish(
                job_id,
                result.SerializeToString(),
                now,
                self.result_ttl_seconds,
                only_if=JobState.RUNNING,
                outcome=Outcome.WORKER_LOST.value,
            ):
                log.warning("job %s: worker lost", job_id)
                swept += 1
            else:
                self.records.redis.zrem(LEASES_KEY, job_id)
        return swept

    def _run(self) -> None:
        while not self._stopping.wait(SWEEP_SECONDS):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("lease sweep failed: %s", exc)
            for sweep in self.also:
                sweep()
