"""The function RQ runs for every scriptpool job: `scriptpool.workers.rq_entry.execute_job(job_id)`.

`scriptpool worker` installs its executor here at start-up. A plain `rq worker` pointed at the
queue also works: the executor is then built from the environment on first use. Jobs an older version
queued name `workers.rq_entry.execute_job`; a plain `rq worker` runs them when given
`--job-class scriptpool.workers.worker.ScriptpoolJob` (which reads the old name as this one).
"""

from __future__ import annotations

from typing import Any

from scriptpool.workers.execution import JobExecutor
from scriptpool.workers.settings import WorkerSettings

_executor: JobExecutor | None = None


def install_executor(executor: JobExecutor | None) -> None:
    global _executor
    _executor = executor


def execute_job(job_id: str) -> dict[str, Any]:
    global _executor
    if _executor is None:
        _executor = JobExecutor(WorkerSettings.from_env())
    return _executor.execute(job_id)
