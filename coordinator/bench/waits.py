"""`scriptpool bench waits`: what a thousand waiting calls cost everybody else (docs/adr/0005).

One client's `GetJob` round trip, p50/p99, first with no call waiting, then while `WAITING`
`WaitJob` calls (from four principals, each under its per-principal budget) are held on jobs that
stay queued (no worker runs during the case). The ratio of the two medians is the cost; 1.0 means
none. The waits are then ended (their jobs cancelled) and each is checked to have answered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.bench.stats import ratio, summarize
from scriptpool.languages import Language
from scriptpool.v1 import jobs_pb2, jobs_pb2_grpc

if TYPE_CHECKING:
    from scriptpool.coordinator.bench.cases import Options
    from scriptpool.coordinator.bench.stack import BenchStack

WAITING = 1000
PRINCIPALS = 4


def _get_job_ms(client: ScriptpoolClient, job_id: str, count: int) -> list[float]:
    samples = []
    for index in range(count + 10):
        started = time.perf_counter()
        client.get_job(job_id)
        if index >= 10:  # (warm-up)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def waits(stack: BenchStack, options: Options) -> dict[str, Any]:
    stack.scale_workers(0)  # every job stays queued: the waits last as long as the case needs
    count = max(100, options.jobs)
    auth = Authenticator(stack.redis)
    out: dict[str, Any] = {"waiting_calls": WAITING}
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        probe = client.submit(Language.LUA, "return 1")
        alone = summarize(_get_job_ms(client, probe.id, count))
        channel = grpc.insecure_channel(stack.address)
        held: list[grpc.Future[jobs_pb2.WaitJobResponse]] = []
        cancels: list[tuple[str, str]] = []
        try:
            jobs = jobs_pb2_grpc.JobServiceStub(channel)
            for index in range(PRINCIPALS):
                key = auth.create_api_key(f"bench-waits-{index}")
                metadata = (("authorization", f"Bearer {key}"),)
                submit = jobs_pb2.SubmitJobRequest(language=jobs_pb2.LANGUAGE_LUA, source="return 1")
                job_id = jobs.SubmitJob(submit, metadata=metadata, timeout=30).job.id
                cancels.append((job_id, key))
                wait = jobs_pb2.WaitJobRequest(job_id=job_id, timeout_seconds=600)
                held += [jobs.WaitJob.future(wait, metadata=metadata) for _ in range(WAITING // PRINCIPALS)]
            time.sleep(1.0)  # let every wait reach the coordinator (a benchmark, not a test)
            busy = summarize(_get_job_ms(client, probe.id, count))
            for job_id, key in cancels:
                jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=(("authorization", f"Bearer {key}"),))
            answered = sum(1 for future in held if future.result(timeout=60).finished)
        finally:
            for future in held:
                future.cancel()
            channel.close()
        client.cancel(probe.id)
    out["get_job_ms_no_waits"] = alone.as_dict()
    out[f"get_job_ms_{WAITING}_waits"] = busy.as_dict()
    out["waits_answered"] = answered
    out["ratio_p50_with_waits_vs_without"] = ratio(busy.median, alone.median)
    out["ratio_p99_with_waits_vs_without"] = ratio(busy.p99, alone.p99)
    stack.scale_workers(options.workers)
    return out
