"""The function RQ runs for every scriptpool job: `workers.rq_entry.execute_job(job_id)`.

`scriptpool worker` installs its executor here at start-up. A plain `rq worker` pointed at the
queue also works: the executor is then built from the environment on first use.
"""

from __future__ import annotations

from typing import Any

from workers.execution import JobExecutor
from workers.settings import WorkerSettings

_executor: JobExecutor | None = None


def install_executor(executor: JobExecutor | None) -> None:
    global _executor
    _executor = executor


def execute_job(job_id: str) -> dict[str, Any]:
    global _executor
    if _executor is None:
        _executor = JobExecutor(WorkerSettings.from_env())
    return _executor.execute(job_id)
