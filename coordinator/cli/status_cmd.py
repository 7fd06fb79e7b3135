"""`scriptpool status [--watch] [--json] [--redis-url URL]`: what the pool is doing, read from Redis.

It reads RQ's own keys through RQ's API and writes nothing (registries are read with
`cleanup=False`; only RQ's worker listing drops a worker key that has expired from its set, as `rq
info` does), so it needs no coordinator and no API key (the Redis is --redis-url, else $REDIS_URL,
else the private Redis of a `scriptpool up` on this host's state directory): the queues and their
depth, the workers (busy or idle and on which job), the running jobs, and the most recent failures
counted by outcome (a scriptpool job that did not end `ok` is failed in RQ as "JobNotOk: <outcome>:
<message>"; any other failure counts under its exception's name). Every read is bounded:
`MAX_LISTED` workers and running jobs, `RECENT_FAILURES` failed jobs per queue. `--watch` renders
the same view live with `rich` until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry

from scriptpool.coordinator.cli.parsing import positive_float
from scriptpool.core.redis_connect import connect
from scriptpool.errors import InvalidArgument

MAX_LISTED = 100
"""Most workers, and most running jobs, one status lists (the counts are always whole)."""
RECENT_FAILURES = 100
"""Failed jobs per queue whose outcome is read (the newest ones)."""
MAX_WATCH_INTERVAL = 3600.0


@dataclass
class QueueStatus:
    name: str
    queued: int
    running: int
    failed: int


@dataclass
class WorkerStatus:
    name: str
    state: str
    """busy, idle, suspended, ... (RQ's word)."""
    queues: list[str]
    job: str | None
    """The RQ job it is running (a scriptpool job's RQ id is the scriptpool job id)."""


@dataclass
class PoolStatus:
    queues: list[QueueStatus] = field(default_factory=list)
    workers: list[WorkerStatus] = field(default_factory=list)
    workers_total: int = 0
    running: list[str] = field(default_factory=list)
    """Ids of running jobs (at most MAX_LISTED)."""
    failures_by_outcome: dict[str, int] = field(default_factory=dict)
    """Outcome (or exception name) -> count among each queue's RECENT_FAILURES newest failed jobs."""

    def busy(self) -> int:
        return sum(1 for worker in self.workers if worker.state == "busy")

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "busy": self.busy(), "idle": len(self.workers) - self.busy()}, indent=2)


def failure_kind(exc_string: str) -> str:
    """`JobNotOk: cpu_time_exceeded: ...` -> `cpu_time_exceeded`; `ValueError: x` -> `ValueError`."""
    head, _, rest = exc_string.strip().partition(": ")
    if head == "JobNotOk" and rest:
        return rest.partition(":")[0].strip() or head
    last_line = exc_string.strip().splitlines()[-1] if exc_string.strip() else ""
    return last_line.partition(":")[0].strip() or "unknown"


def read_status(redis: Redis) -> PoolStatus:
    status = PoolStatus()
    failures: Counter[str] = Counter()
    for queue in sorted(Queue.all(connection=redis), key=lambda q: q.name):
        started = StartedJobRegistry(queue=queue)
        failed = FailedJobRegistry(queue=queue)
        running, failing = started.get_job_count(cleanup=False), failed.get_job_count(cleanup=False)
        status.queues.append(QueueStatus(queue.name, queue.count, running, failing))
        if len(status.running) < MAX_LISTED:
            status.running += started.get_job_ids(0, MAX_LISTED - len(status.running) - 1, cleanup=False)
        recent = failed.get_job_ids(0, RECENT_FAILURES - 1, desc=True, cleanup=False)
        for job in Job.fetch_many(recent, connection=redis):
            if job is not None:
                result = job.latest_result()
                failures[failure_kind(result.exc_string or "") if result is not None else "unknown"] += 1
    status.failures_by_outcome = dict(failures.most_common())
    workers = Worker.all(connection=redis)
    status.workers_total = len(workers)
    for worker in sorted(workers, key=lambda w: w.name)[:MAX_LISTED]:
        state = worker.get_state()
        status.workers.append(
            WorkerStatus(
                worker.name, str(getattr(state, "value", state)), worker.queue_names(), worker.get_current_job_id()
            )
        )
    return status


def render_text(status: PoolStatus) -> str:
    lines = [f"{'QUEUE':24} {'QUEUED':>8} {'RUNNING':>8} {'FAILED':>8}"]
    lines += [f"{q.name:24} {q.queued:>8} {q.running:>8} {q.failed:>8}" for q in status.queues]
    lines.append("")
    lines.append(f"workers: {status.workers_total} ({status.busy()} busy, {len(status.workers) - status.busy()} idle)")
    lines += [f"  {w.name:40} {w.state:10} {','.join(w.queues):16} {w.job or ''}" for w in status.workers]
    lines.append(f"running jobs: {len(status.running)}")
    lines += [f"  {job_id}" for job_id in status.running]
    failures = ", ".join(f"{kind} {count}" for kind, count in status.failures_by_outcome.items()) or "none"
    lines.append(f"recent failures by outcome: {failures}")
    return "\n".join(lines)


def summary_line(status: PoolStatus) -> str:
    """One line that fits any terminal: the live view's first line, so a short terminal still shows it."""
    failures = ", ".join(f"{kind} {count}" for kind, count in status.failures_by_outcome.items()) or "none"
    queued = sum(q.queued for q in status.queues)
    return (
        f"scriptpool status: {queued} queued, {len(status.running)} running; workers {status.busy()} busy, "
        f"{len(status.workers) - status.busy()} idle; recent failures: {failures}"
    )


def _rich_view(status: PoolStatus) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    queues = Table(title="queues")
    for column in ("queue", "queued", "running", "failed"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for q in status.queues:
        queues.add_row(q.name, str(q.queued), str(q.running), str(q.failed))
    workers = Table(title=f"workers: {status.busy()} busy, {len(status.workers) - status.busy()} idle")
    for column in ("worker", "state", "queues", "job"):
        workers.add_column(column)
    for w in status.workers:
        workers.add_row(w.name, w.state, ",".join(w.queues), w.job or "")
    failures = Table(title="recent failures by outcome")
    failures.add_column("outcome")
    failures.add_column("jobs", justify="right")
    for kind, count in status.failures_by_outcome.items():
        failures.add_row(kind, str(count))
    return Group(Text(summary_line(status)), queues, workers, failures)


def watch(read: Callable[[], PoolStatus], interval: float) -> int:
    """Render `read()` live every `interval` seconds until Ctrl-C (then exit 0)."""
    from rich.live import Live

    try:
        with Live(_rich_view(read()), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(_rich_view(read()), refresh=True)
    except KeyboardInterrupt:
        return 0


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_redis: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    p = sub.add_parser("status", help="queues, workers, running jobs and recent failures, read from Redis")
    with_redis(p)
    p.add_argument("--watch", action="store_true", help="render live (rich) until Ctrl-C")
    p.add_argument("--interval", type=positive_float, default=2.0, help="with --watch: seconds between renders")
    p.add_argument("--json", action="store_true", help="one JSON object")
    return p


def up_redis_url(state_dir: Path) -> str:
    """The private Redis of a `scriptpool up` using `state_dir`, if one is running ("" otherwise)."""
    socket = state_dir / "redis" / "redis.sock"
    return f"unix://{socket}" if socket.is_socket() else ""


def run(args: argparse.Namespace) -> int:
    from scriptpool.coordinator.settings import Settings

    if args.interval > MAX_WATCH_INTERVAL:
        raise InvalidArgument(f"--interval must be at most {MAX_WATCH_INTERVAL:g} seconds (got {args.interval:g})")
    if args.watch and args.json:
        raise InvalidArgument("--watch renders for a person; --json is for a program: pick one")
    settings = Settings.from_env()
    url = args.redis_url or settings.redis_url or up_redis_url(settings.state_dir)
    redis = connect(url)
    try:
        if args.watch:
            return watch(lambda: read_status(redis), args.interval)
        status = read_status(redis)
        print(status.to_json() if args.json else render_text(status))
        return 0
    finally:
        redis.close()
