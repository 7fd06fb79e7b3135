"""The load generators: trivial jobs submitted over gRPC, each waited for until its result.

- `batched` (the default, what the throughput targets are measured with): a few client threads
  each send `SubmitJobs` calls of `BATCH_SIZE` jobs and read the jobs back as they finish on the
  same call. Like the RQ baseline, which enqueues in a loop and counts finished jobs, nothing waits
  per job; unlike it, every result comes back to the client.
- `per-call`: `PER_CALL_THREADS` client threads, one `SubmitJob` with `wait_seconds` per job (what
  a client that runs one script at a time does; the per-RPC cost of gRPC is paid per job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome

TRIVIAL = {Language.LUA: "return 1", Language.JAVASCRIPT: "1", Language.PYTHON: "1"}
PER_CALL_THREADS = 16
BATCH_SIZE = 25
BATCH_THREADS = 4

Load = Callable[[ScriptpoolClient, Language, int], float]


def _check(outcome: int, message: str) -> None:
    if Outcome.from_proto(outcome) is not Outcome.OK:
        raise RuntimeError(f"benchmark job failed: {message}")


def per_call(client: ScriptpoolClient, language: Language, count: int) -> float:
    """Submit `count` trivial jobs, one waiting `SubmitJob` each from 16 threads; jobs per second."""
    source = TRIVIAL[language]

    def one(_: int) -> None:
        job = client.run(language, source, timeout=120)
        _check(job.result.outcome, job.result.message)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=PER_CALL_THREADS) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started)


def batched(client: ScriptpoolClient, language: Language, count: int) -> float:
    """Submit `count` trivial jobs as `SubmitJobs` calls of up to 25, from 4 threads, each call
    streaming its jobs back finished; jobs per second."""
    source = TRIVIAL[language]
    sizes = [min(BATCH_SIZE, count - start) for start in range(0, count, BATCH_SIZE)]

    def one(size: int) -> None:
        for job in client.run_many(language, [source] * size, timeout=120):
            _check(job.result.outcome, job.result.message)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=BATCH_THREADS) as pool:
        list(pool.map(one, sizes))
    return count / (time.perf_counter() - started)


LOADS: dict[str, Load] = {"batched": batched, "per-call": per_call}
