"""Keep a running job's lease alive from a thread of its own.

The supervisor's loop is single-threaded: while it waits on a slow global call it cannot renew the
lease, and a call slower than the lease would get a healthy job finished as `worker_lost`. The
keeper renews the lease every third of its length whatever the supervisor is doing, and remembers
what the last renewal said (cancel requested, or the job no longer running) for the supervisor's
next tick.
"""

from __future__ import annotations

import logging
import threading
import time

from workers.job_records import JobRecords

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, records: JobRecords, job_id: str) -> None:
        self.records = records
        self.job_id = job_id
        self.interval = min(0.25, records.lease_seconds / 3)  # also how soon a cancel is seen
        self.cancel_requested = False
        self.not_running = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def should_stop(self) -> bool:
        """True once the job was cancelled or is no longer running (e.g. finished elsewhere)."""
        return self.cancel_requested or self.not_running

    def renew(self) -> None:
        answer = self.records.heartbeat(self.job_id, time.time())
        if answer is None:
            self.not_running = True
        elif answer:
            self.cancel_requested = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception as exc:
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, exc)
