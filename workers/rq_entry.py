"""The function RQ runs for every scriptpool job: `scriptpool.workers.rq_entry.execute_job(job_id)`.

`scriptpool worker` installs its executor here at start-up. A plain `rq worker` pointed at the
queue also works: the executor is then built from the environment on first use. Jobs an older version
queued name `workers.rq_entry.execute_job`; a plain `rq worker` runs them when given
`--job-class scriptpool.workers.worker.ScriptpoolJob` (which reads the old name as this one).

A job whose outcome is not `ok` raises `JobNotOk` once its scriptpool record is final (or its finish
is left to the worker's finishing transaction), so RQ records it failed: FailedJobRegistry, `rq info`
and rq-dashboard show it, with the outcome and message as the exception text. scriptpool's record
and result are the same either way; RQ does not retry it (scriptpool's jobs carry no RQ `Retry`).
"""

from __future__ import annotations

from typing import Any

from scriptpool.outcomes import Outcome
from scriptpool.workers.execution import JobExecutor
from scriptpool.workers.settings import WorkerSettings

_executor: JobExecutor | None = None


class JobNotOk(Exception):
    """The job ran and ended with an outcome other than `ok` (the text: "outcome: message")."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(f"{outcome}: {message}" if message else outcome)
        self.outcome = outcome
        self.message = message


def install_executor(executor: JobExecutor | None) -> None:
    global _executor
    _executor = executor


def execute_job(job_id: str) -> dict[str, Any]:
    global _executor
    if _executor is None:
        _executor = JobExecutor(WorkerSettings.from_env())
    ended = _executor.execute(job_id)
    outcome = ended.get("outcome")
    if outcome is not None and outcome != Outcome.OK.value:
        raise JobNotOk(outcome, ended.get("message") or "")
    return ended
