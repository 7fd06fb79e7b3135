"""One INFO line per finished job, on the `scriptpool.jobs` logger (docs/adr/0014-logs-and-tracing.md).

In text format the fields are in the message; in JSON format (`--log-format json`) they are also
keys of the line: job_id, principal, language, outcome, attempt, queue_wait_seconds (from the
submit to this attempt's start, so a retried job's includes its earlier attempts) and run_seconds
(this attempt, from its claim to its result).
"""

from __future__ import annotations

import logging

JOBS_LOG = logging.getLogger("scriptpool.jobs")


def log_finished(
    *,
    job_id: str,
    principal: str,
    language: str,
    outcome: str,
    attempt: int,
    queue_wait_seconds: float,
    run_seconds: float,
) -> None:
    JOBS_LOG.info(
        "job %s finished %s: principal=%r language=%s attempt=%d queue_wait=%.3fs run=%.3fs",
        job_id, outcome, principal, language, attempt, queue_wait_seconds, run_seconds,
        extra={
            "job_id": job_id, "principal": principal, "language": language, "outcome": outcome, "attempt": attempt,
            "queue_wait_seconds": round(queue_wait_seconds, 6), "run_seconds": round(run_seconds, 6),
        },
    )  # fmt: skip


__all__ = ["JOBS_LOG", "log_finished"]
