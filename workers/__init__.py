"""RQ worker processes: claim jobs, run each in a jailed sandbox child, bridge its global calls to
the coordinator over gRPC with the job's credential, record the result."""

import os

# A worker forks sandbox children that never use gRPC. gRPC's own fork handlers (pthread_atfork)
# lose a race when another thread is inside gRPC at fork time and the child then aborts (SIGABRT,
# "Check failed: next_worker->state == KICKED"). They must be off before gRPC initialises.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from scriptpool.workers.execution import JobExecutor
from scriptpool.workers.settings import WorkerSettings
from scriptpool.workers.worker import ScriptpoolWorker, run_worker

__all__ = ["JobExecutor", "ScriptpoolWorker", "WorkerSettings", "run_worker"]
