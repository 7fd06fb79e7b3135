"""The benchmark cases. Each returns a JSON-able dict with our figures, the baseline measured in the
same run, and their ratio. No case weakens isolation: every job runs in a fresh engine instance in
a jailed child, with the worker's default settings (a child serves one principal's Lua/JS jobs:
docs/adr/0003-child-reuse-within-a-principal.md)."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rq import Queue

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.bench.cpu_split import cpu
from scriptpool.coordinator.bench.load import LOADS, TRIVIAL, batched, per_call
from scriptpool.coordinator.bench.process_cpu import system_busy_s
from scriptpool.coordinator.bench.stack import BASELINE_QUEUE, BenchStack, rss_bytes
from scriptpool.coordinator.bench.stats import Summary, ratio, summarize
from scriptpool.coordinator.bench.waits import waits
from scriptpool.coordinator.bench.worker_cpu import worker
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.sandbox.runner import ENGINES
from scriptpool.v1 import sessions_pb2

Case = Callable[[BenchStack, "Options"], dict[str, Any]]


class Options:
    def __init__(
        self, *, jobs: int = 200, repeat: int = 3, workers: int = 2, calls: int = 200, load: str = "batched"
    ) -> None:
        self.jobs = jobs
        self.repeat = repeat
        self.workers = workers
        self.calls = calls
        self.load = load
        """The load generator of `cpu`, `worker` and `scale` (`coordinator/bench/load.py`)."""

    def run(self, client: ScriptpoolClient, language: Language, count: int) -> float:
        return LOADS[self.load](client, language, count)


def _available(language: Language) -> bool:

    return importlib.util.find_spec(ENGINES[language][0]) is not None


def _rq_batch(stack: BenchStack, count: int) -> float:
    """Enqueue `count` no-op jobs to plain RQ workers already running; returns jobs per second."""
    queue = Queue(BASELINE_QUEUE, connection=stack.redis)
    registry = queue.finished_job_registry
    done_before = registry.count
    started = time.perf_counter()
    jobs = [queue.enqueue("scriptpool.coordinator.bench.noop.noop", result_ttl=600) for _ in range(count)]
    while registry.count < done_before + count:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    for job in jobs:
        job.delete()
    return count / elapsed


def _paired_with_rq(
    stack: BenchStack, options: Options, client: ScriptpoolClient, worker_class: str
) -> tuple[list[float], list[float]]:
    """Lua jobs per second (batched load) and RQ's no-op jobs per second with `worker_class`, as
    pairs of runs back to back: this machine's speed drifts by 20 % over a minute, so each of our
    runs is compared with the baseline run next to it. Both worker pools stay up (the idle one
    blocks on its queue)."""
    stack.start_baseline(options.workers, worker_class)
    warm_up = max(20, options.jobs // 5)
    batched(client, Language.LUA, warm_up)
    _rq_batch(stack, warm_up)
    ours, theirs = [], []
    for _ in range(options.repeat):
        ours.append(batched(client, Language.LUA, options.jobs))
        theirs.append(_rq_batch(stack, options.jobs))
    stack.stop_baseline()
    return ours, theirs


def _pair_ratios(ours: list[float], theirs: list[float]) -> Summary:
    return summarize([a / b for a, b in zip(ours, theirs, strict=True)])


def throughput(stack: BenchStack, options: Options) -> dict[str, Any]:
    """Trivial Lua jobs under the batched load (`coordinator/bench/load.py`), each run paired with a
    run of RQ's forking `Worker`, then of RQ's `SimpleWorker`, on no-op jobs with the same number of
    workers; the ratios are the medians of the pairs' ratios. Then every language under the batched
    load and Lua under the per-call load (ratios against the baselines' medians)."""
    stack.scale_workers(options.workers)
    out: dict[str, Any] = {"workers": options.workers, "jobs_per_run": options.jobs}
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        ours_f, fork = _paired_with_rq(stack, options, client, "rq.Worker")
        ours_s, simple = _paired_with_rq(stack, options, client, "rq.SimpleWorker")
        for language in Language:
            if language is Language.LUA or not _available(language):
                continue
            batched(client, language, max(20, options.jobs // 5))
            runs = [batched(client, language, options.jobs) for _ in range(options.repeat)]
            out[f"{language.value}_jobs_per_s"] = summarize(runs).as_dict(1)
        per_call(client, Language.LUA, max(20, options.jobs // 5))
        one_by_one = summarize([per_call(client, Language.LUA, options.jobs) for _ in range(options.repeat)])
    lua = summarize(ours_f + ours_s)
    fork_s, simple_s = summarize(fork), summarize(simple)
    out.update(
        lua_jobs_per_s=lua.as_dict(1),
        lua_per_call_jobs_per_s=one_by_one.as_dict(1),
        jobs_per_s=round(lua.median, 1),
        rq_fork_jobs_per_s=round(fork_s.median, 1),
        rq_simple_jobs_per_s=round(simple_s.median, 1),
        ratio_vs_rq_fork=round(_pair_ratios(ours_f, fork).median, 3),
        ratio_vs_rq_simple=round(_pair_ratios(ours_s, simple).median, 3),
        ratio_vs_rq_simple_per_pair=_pair_ratios(ours_s, simple).as_dict(3),
        per_call_ratio_vs_rq_fork=ratio(one_by_one.median, fork_s.median),
        per_call_ratio_vs_rq_simple=ratio(one_by_one.median, simple_s.median),
    )
    return out


def latency(stack: BenchStack, options: Options) -> dict[str, Any]:
    stack.scale_workers(1)
    out: dict[str, Any] = {}
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        for language in Language:
            if not _available(language):
                continue
            samples = []
            for index in range(options.jobs // 2 + 10):
                started = time.perf_counter()
                client.run(language, TRIVIAL[language], timeout=60)
                if index >= 10:
                    samples.append((time.perf_counter() - started) * 1000)
            out[f"{language.value}_submit_to_result_ms"] = summarize(samples).as_dict()
    stack.start_baseline(1, "rq.Worker")
    queue = Queue(BASELINE_QUEUE, connection=stack.redis)
    samples = []
    for index in range(options.jobs // 2 + 10):
        started = time.perf_counter()
        job = queue.enqueue("scriptpool.coordinator.bench.noop.noop", result_ttl=60)
        while job.get_status(refresh=True) != "finished":
            time.sleep(0.0005)
        if index >= 10:
            samples.append((time.perf_counter() - started) * 1000)
    stack.stop_baseline()
    baseline = summarize(samples)
    out["rq_fork_enqueue_to_result_ms"] = baseline.as_dict()
    out["ratio_p50_vs_rq_fork"] = ratio(out["lua_submit_to_result_ms"]["median"], baseline.median)
    return out


# The global call `callbacks` times: `State.get` of one key of the job's session scope.
CALLBACK_OP = "State.get"
CALLBACK_LOOP = "State.set('k', 1) for i = 1, {n} do State.get('session:current', 'k') end return 1"


def _call_gaps_us(client: ScriptpoolClient, session_id: str, job_id: str) -> list[float]:
    """Time between consecutive recorded calls of one job: each is one whole round trip script ->
    worker -> coordinator -> worker -> script (plus one loop iteration), stamped by the coordinator."""
    stamps: list[float] = []
    after = ""
    while True:
        page = client.sessions.get_timeline(
            sessions_pb2.GetTimelineRequest(session_id=session_id, types=["global_call"], after=after, limit=1000),
        )
        stamps += [e.timestamp for e in page.entries if e.job_id == job_id and e.description.startswith(CALLBACK_OP)]
        if len(page.entries) < 1000:
            break
        after = page.entries[-1].id
    return [(later - earlier) * 1_000_000 for earlier, later in zip(stamps, stamps[1:], strict=False)]


def callbacks(stack: BenchStack, options: Options) -> dict[str, Any]:
    """One global call from inside a script, p50/p99 over every call of the measured jobs (from the
    coordinator's timeline stamps), vs a raw grpcio unary call (health check) to the same server."""
    stack.scale_workers(1)
    n = options.calls
    gaps: list[float] = []
    per_job_mean: list[float] = []
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        for index in range(options.repeat + 1):
            session_id = client.create_session("bench-callbacks").id
            loop = CALLBACK_LOOP.format(session_id=session_id, n=n)
            empty = f"for i = 1, {n} do end return 1"
            job = client.run(Language.LUA, loop, session_id=session_id)
            without = client.run(Language.LUA, empty, session_id=session_id)
            if index == 0:
                continue  # warm-up
            gaps += _call_gaps_us(client, session_id, job.id)
            wall = job.result.usage.wall_time_ms - without.result.usage.wall_time_ms
            per_job_mean.append(wall / n * 1000)
    ours = summarize(gaps)
    baseline = _raw_unary_us(stack.address, n)
    figures: dict[str, Any] = {
        "op": CALLBACK_OP,
        "worker_to_coordinator": "unix socket" if stack.local_address else "tcp",
        "global_call_us": ours.as_dict(1),
        "global_call_mean_from_wall_time_us": summarize(per_job_mean).as_dict(1),
        "raw_grpc_unary_us": baseline.as_dict(1),
        "ratio_vs_raw_grpc": ratio(ours.median, baseline.median),
        "ratio_p99_vs_raw_grpc": ratio(ours.p99, baseline.p99),
    }
    if stack.local_address:  # the same raw call over the socket the workers use
        over_socket = _raw_unary_us(stack.local_address, n)
        figures["raw_grpc_unary_unix_us"] = over_socket.as_dict(1)
        figures["ratio_vs_raw_grpc_unix"] = ratio(ours.median, over_socket.median)
    return figures


def _raw_unary_us(address: str, n: int) -> Summary:
    """A raw grpcio unary round trip (the coordinator's health check: no auth, no Redis)."""
    raw = []
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        for index in range(n * 2):
            started = time.perf_counter()
            stub.Check(request)
            if index >= n // 2:
                raw.append((time.perf_counter() - started) * 1_000_000)
    return summarize(raw)


def sessions(stack: BenchStack, options: Options) -> dict[str, Any]:
    """create + get + updateMetadata per second, from the gRPC client and from inside a Lua job."""
    from scriptpool.v1 import sessions_pb2
    from scriptpool.values import to_value_map

    stack.scale_workers(1)
    n = max(20, options.jobs // 2)
    client_rates, script_rates = [], []
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        for run in range(options.repeat + 1):
            started = time.perf_counter()
            for i in range(n):
                sid = client.create_session(f"bench-{i}").id
                client.get_session(sid)
                client.sessions.update_metadata(
                    sessions_pb2.UpdateMetadataRequest(session_id=sid, updates=to_value_map({"i": i}))
                )
            if run:
                client_rates.append(n / (time.perf_counter() - started))
            source = (f"for i = 1, {n} do local id = Session.create{{name = 'b' .. i}} Session.get(id) "
                      "Session.updateMetadata(id, {i = i}) end return 1")  # fmt: skip
            job = client.run(Language.LUA, source, limits={"max_global_calls": 3 * n + 10})
            if run:
                script_rates.append(n / max(job.result.usage.wall_time_ms, 1) * 1000)
    ours, baseline = summarize(script_rates), summarize(client_rates)
    return {
        "iterations_per_run": n,
        "lua_job_create_get_update_per_s": ours.as_dict(1),
        "grpc_client_create_get_update_per_s": baseline.as_dict(1),
        "ratio_lua_vs_client": ratio(ours.median, baseline.median),
    }


def sandbox(stack: BenchStack, options: Options) -> dict[str, Any]:
    """Per language: a trivial script end to end inside a worker's sandbox (a spare child from a
    zygote handed the job, jail, engine, result), vs the bare engine measured in this process."""
    from scriptpool.sandbox.host import OutputSink
    from scriptpool.sandbox.limits import DEFAULT_LIMITS, LIMIT_FIELDS
    from scriptpool.sandbox.runner import ScriptJob, prewarm, runner_for
    from scriptpool.v1 import sandbox_pb2
    from scriptpool.workers.supervision.supervisor import Reaper, SparePool, supervise
    from scriptpool.workers.supervision.zygote import ZygoteSource

    class NoHost:
        def call(self, op: str, args: list[Any]) -> Any:
            return None

    prewarm()
    out: dict[str, Any] = {}
    pool = SparePool(ZygoteSource())
    reaper = Reaper()
    try:
        for language in Language:
            if not _available(language):
                continue
            spec = sandbox_pb2.ChildJob(language=language.to_proto(), source=TRIVIAL[language])
            for name in LIMIT_FIELDS:
                setattr(spec.limits, name, getattr(DEFAULT_LIMITS, name))
            handed = []
            for _ in range(options.jobs // 4 + 5 + 16):  # the first 16 let the spares follow the language
                pool.expect(language)
                pool.refill()
                # A worker's spare is forked and prepared while the previous job runs: not part of a
                # job's cost. 50 ms is ample for that preparation (network namespace, scratch, warm-up).
                time.sleep(0.05)
                started = time.perf_counter()
                run = supervise(pool.take(), spec, NoHost(), reaper=reaper)
                reaper.collect()
                handed.append((time.perf_counter() - started) * 1000)
                if run.outcome is not Outcome.OK:
                    raise RuntimeError(f"{language.value} benchmark job failed: {run.message}")
            bare = []
            job = ScriptJob(language=language, source=TRIVIAL[language])
            for _ in range(options.jobs // 4 + 5):
                started = time.perf_counter()
                runner_for(language).run(job, NoHost(), OutputSink(1024))
                bare.append((time.perf_counter() - started) * 1000)
            ours, baseline = summarize(handed[5 + 16 :]), summarize(bare[5:])
            out[language.value] = {
                "in_child_ms": ours.as_dict(),
                "bare_engine_ms": baseline.as_dict(),
                "ratio_vs_bare": ratio(ours.median, baseline.median),
            }
    finally:
        reaper.close()
        pool.close()
    return out


SCALE_COUNTS = (1, 2, 4)
"""Worker counts `scale` measures on this host (and RQ's SimpleWorker beside them)."""


def scale(stack: BenchStack, options: Options) -> dict[str, Any]:
    """Trivial Lua jobs per second with 1, 2 and 4 scriptpool workers on this host, then with one
    worker on each of two network-namespace hosts (their own addresses, reaching Redis and the
    coordinator over TCP on veth links); and, measured in the same run: RQ's own `SimpleWorker` on
    no-op jobs with 1, 2 and 4 workers (its scaling on this machine), and the machine's busy cores
    while one scriptpool worker runs. Everything shares this machine's cores, so a second worker can
    add at most what the first left idle: `ceiling_1_to_2_on_this_machine` = cores / busy cores with
    one worker."""
    figures: dict[int, Summary] = {}
    busy_cores: list[float] = []
    with ScriptpoolClient(stack.address, stack.api_key) as client:

        def measure() -> Summary:
            options.run(client, Language.LUA, max(20, options.jobs // 5))  # warm-up
            return summarize([options.run(client, Language.LUA, options.jobs) for _ in range(options.repeat)])

        for count in SCALE_COUNTS:
            stack.scale_workers(count)
            if count == 1:
                options.run(client, Language.LUA, max(20, options.jobs // 5))
                runs = []
                for _ in range(options.repeat):
                    busy_before, started = system_busy_s(), time.perf_counter()
                    runs.append(options.run(client, Language.LUA, options.jobs))
                    busy_cores.append((system_busy_s() - busy_before) / (time.perf_counter() - started))
                figures[count] = summarize(runs)
            else:
                figures[count] = measure()
        two_hosts: dict[str, Any] = {"two_hosts_unavailable": stack.hosts_unavailable}
        if stack.hosts:
            stack.start_host_workers()
            on_hosts = measure()
            stack.stop_host_workers()
            two_hosts = {
                "lua_jobs_per_s_2_hosts": on_hosts.as_dict(1),
                "two_hosts_vs_one_host_2_workers": ratio(on_hosts.median, figures[2].median),
            }
    rq_simple: dict[int, Summary] = {}
    for count in SCALE_COUNTS:
        stack.start_baseline(count, "rq.SimpleWorker")
        _rq_batch(stack, max(20, options.jobs // 5))
        rq_simple[count] = summarize([_rq_batch(stack, options.jobs) for _ in range(options.repeat)])
    stack.stop_baseline()
    cores = len(os.sched_getaffinity(0))
    busy = summarize(busy_cores)
    scaling = ratio(figures[2].median, figures[1].median)
    rq_scaling = ratio(rq_simple[2].median, rq_simple[1].median)
    return {
        "load": options.load,
        **{f"lua_jobs_per_s_{n}_worker{'s' if n > 1 else ''}": figures[n].as_dict(1) for n in SCALE_COUNTS},
        "scaling_1_to_2": scaling,
        "scaling_1_to_4": ratio(figures[4].median, figures[1].median),
        **two_hosts,
        "cores": cores,
        "busy_cores_1_worker": busy.as_dict(2),
        "ceiling_1_to_2_on_this_machine": ratio(cores, busy.median),
        **{f"rq_simple_jobs_per_s_{n}_worker{'s' if n > 1 else ''}": rq_simple[n].as_dict(1) for n in SCALE_COUNTS},
        "rq_simple_scaling_1_to_2": rq_scaling,
        "rq_simple_scaling_1_to_4": ratio(rq_simple[4].median, rq_simple[1].median),
        "scaling_ratio_vs_rq_simple": ratio(scaling, rq_scaling),
    }


def memory(stack: BenchStack, options: Options) -> dict[str, Any]:
    """RSS of an idle worker, of its zygote and waiting spare child (children of the worker and of
    the zygote), and of the coordinator."""
    stack.scale_workers(1)
    time.sleep(0.5)
    worker = stack.workers[0].pid
    coordinator = stack.coordinator.pid if stack.coordinator is not None else os.getpid()
    helpers = _descendants(worker)
    return {
        "idle_worker_rss_mb": round(rss_bytes(worker) / 2**20, 1),
        "worker_zygote_and_spare_rss_mb": round(sum(rss_bytes(pid) for pid in helpers) / 2**20, 1),
        "coordinator_rss_mb": round(rss_bytes(coordinator) / 2**20, 1),
    }


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _store_get(client: ScriptpoolClient, session_id: str, payload: bytes, index: int) -> None:
    from scriptpool.v1 import artifacts_pb2

    header = artifacts_pb2.StoreArtifactChunk(
        session_id=session_id, type="binary", metadata=artifacts_pb2.ArtifactMetadata(name=f"bench-{index}")
    )
    ref = client.store_artifact(header, [payload])
    _, chunks = client.read_artifact(session_id, ref.id)
    if sum(len(c) for c in chunks) != len(payload):
        raise RuntimeError("artifact read back with the wrong size")


def _raw_set_get(stack: BenchStack, payload: bytes, index: int) -> None:
    key = f"bench:raw:{index}"
    stack.redis.set(key, payload)
    if len(stack.redis.get(key) or b"") != len(payload):
        raise RuntimeError("raw GET returned the wrong size")
    stack.redis.delete(key)


def artifacts(stack: BenchStack, options: Options) -> dict[str, Any]:
    """Store + get round trips from the gRPC client, vs raw Redis SET + GET of the same bytes."""
    out: dict[str, Any] = {}
    with ScriptpoolClient(stack.address, stack.api_key) as client:
        session_id = client.create_session("bench-artifacts").id
        for label, size, count in (("1KB", 1024, max(20, options.jobs)), ("10MB", 10 * 2**20, 5)):
            ours, raw = [], []
            for run in range(options.repeat + 1):
                payloads = [os.urandom(size) for _ in range(count)]  # distinct content: no dedup shortcut
                started = time.perf_counter()
                for index, payload in enumerate(payloads):
                    _store_get(client, session_id, payload, run * count + index)
                ours_s = time.perf_counter() - started
                started = time.perf_counter()
                for index, payload in enumerate(payloads):
                    _raw_set_get(stack, payload, index)
                raw_s = time.perf_counter() - started
                if run:  # the first run is the warm-up
                    ours.append(count / ours_s if size < 2**20 else count * size / 2**20 / ours_s)
                    raw.append(count / raw_s if size < 2**20 else count * size / 2**20 / raw_s)
            unit = "round_trips_per_s" if size < 2**20 else "mb_per_s"
            ours_s_summary, raw_summary = summarize(ours), summarize(raw)
            out[f"{label}_{unit}"] = ours_s_summary.as_dict(1)
            out[f"{label}_raw_redis_{unit}"] = raw_summary.as_dict(1)
            out[f"{label}_ratio_vs_raw_redis"] = ratio(ours_s_summary.median, raw_summary.median)
    return out


CASES: dict[str, Case] = {
    "throughput": throughput,
    "latency": latency,
    "callbacks": callbacks,
    "sessions": sessions,
    "sandbox": sandbox,
    "scale": scale,
    "memory": memory,
    "artifacts": artifacts,
    "worker": worker,
    "waits": waits,
    "cpu": cpu,
}
