"""Keep a running job's lease alive from a thread of its own.

The supervisor's loop is single-threaded: while it waits on a slow global call it cannot renew the
lease, and a call slower than the lease would get a healthy job finished as `worker_lost`. The
keeper renews the lease of the job it holds every third of the lease's length whatever the
supervisor is doing, and remembers what the last renewal said (cancel requested, or the job no
longer running) for the supervisor's next tick. One keeper thread serves a worker's jobs one after
another (`hold(job_id)`), so no thread is started per job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from scriptpool.core.job_records import JobRecords
from scriptpool.core.repeated_log import RepeatedProblem

log = logging.getLogger(__name__)


class Lease:
    """What the keeper learned about one job's lease."""

    def __init__(self, job_id: str, attempt: int = 1) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.cancel_requested = False
        self.not_running = False

    @property
    def should_stop(self) -> bool:
        """True once the job was cancelled or this attempt of it is no longer running (finished
        elsewhere, or queued again after this lease expired)."""
        return self.cancel_requested or self.not_running


class LeaseKeeper:
    def __init__(self, records: JobRecords) -> None:
        self.records = records
        self.interval = min(0.25, records.lease_seconds / 3)  # also how soon a cancel is seen
        self._lock = threading.Lock()
        self._current: Lease | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._failing = RepeatedProblem(log, "lease renewal failed; retrying")
        """Renewals fail every interval while Redis is down: logged once, then counted."""

    @contextmanager
    def hold(self, job_id: str, attempt: int = 1) -> Iterator[Lease]:
        """Renew the lease of `job_id`'s `attempt` until the block ends."""
        lease = Lease(job_id, attempt)
        with self._lock:
            if self._closed:
                raise RuntimeError("the lease keeper is closed")
            self._current = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield lease
        finally:
            with self._lock:
                self._current = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._wake.wait(self.interval):
            with self._lock:
                lease = self._current
            if lease is None:
                continue
            try:
                answer = self.records.heartbeat(lease.job_id, time.time(), lease.attempt)
            except Exception as exc:
                self._failing.happened(f"job {lease.job_id}: {exc}")
                continue
            self._failing.over()
            if answer is None:
                lease.not_running = True
            elif answer:
                lease.cancel_requested = True
