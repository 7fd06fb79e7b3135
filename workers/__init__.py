"""RQ worker processes: claim jobs, run each in a jailed sandbox child, bridge its global calls to
the coordinator over gRPC with the job's credential, record the result."""

from workers.execution import JobExecutor
from workers.settings import WorkerSettings
from workers.worker import ScriptpoolWorker, run_worker

__all__ = ["JobExecutor", "ScriptpoolWorker", "WorkerSettings", "run_worker"]
